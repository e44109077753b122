"""pytest fixtures over the rig's real control plane (plugin named in tests/conftest.py).

Why: every tier that talks to Kubernetes (webhook, reconciler, provisioners, demo flow)
needs a real API server with our CRDs installed and an isolated namespace per test.
The tests' control plane lives in `.local/test/`, apart from the demo's `.local/`, and is
reused when already running (a start from the binary cache takes seconds). Each pytest
session registers itself in `.local/test/sessions/PID`; the last session to end stops the
control plane (and any real nodes of that state dir), unless KAITO_KEEP_CLUSTER=1 asks to
keep it. Either way the last lines of pytest's output say what happened and, when it
runs on, how to stop it.

It must not: skip (a control plane that cannot start FAILS the test with the
component's log tail), share namespaces between tests, stop a control plane that
another live pytest session is using, or leave one running without saying so.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml
from kubernetes.client import ApiClient

from rig.cluster import ControlPlane, ControlPlaneError
from rig.k8sbuild import BuildError
from rig.kapi import Kube, KubeApiError

REPO = Path(__file__).resolve().parents[2]
TEST_STATE = REPO / ".local" / "test"
WORKSPACE_CRD = REPO / "crds" / "kaito.sh_workspaces.yaml"
NODECLAIM_CRD = REPO / "hack" / "rig" / "nodeclaims.karpenter.sh.yaml"
KEEP_VAR = "KAITO_KEEP_CLUSTER"
SESSIONS = TEST_STATE / "sessions"
_SUMMARY: list[str] = []  # what happened to the control plane, for the last lines


class Kubectl(Protocol):
    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 timeout: float = 60.0) -> subprocess.CompletedProcess[str]: ...


def install_crd(kube: Kube, path: Path, *, timeout: float = 30.0) -> str:
    """Create or replace the CRD in path and wait until it is Established; return its name."""
    if not path.is_file():
        raise FileNotFoundError(f"CRD file {path} does not exist")
    body: dict[str, Any] = yaml.safe_load(path.read_text())
    name = str(body["metadata"]["name"])
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    try:
        kube.create(crds, body)
    except KubeApiError as exc:
        if exc.status != 409:
            raise
        body["metadata"]["resourceVersion"] = kube.get(f"{crds}/{name}")["metadata"][
            "resourceVersion"]
        kube.replace(f"{crds}/{name}", body)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conds = kube.get(f"{crds}/{name}").get("status", {}).get("conditions") or []
        state = {c["type"]: c["status"] for c in conds}
        if state.get("Established") == "True" and state.get("NamesAccepted") == "True":
            return name
        time.sleep(0.1)
    raise TimeoutError(f"CRD {name} not Established after {timeout}s")


def _other_sessions() -> list[int]:
    """PIDs of other live pytest sessions registered as users of the tests' control plane."""
    live = []
    for entry in SESSIONS.glob("*") if SESSIONS.is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            state = "gone"
        if state in ("gone", "Z"):
            entry.unlink(missing_ok=True)  # a session that died without its teardown
        else:
            live.append(pid)
    return live


def _finish(cp: ControlPlane) -> None:
    """Session end: stop the control plane unless kept or still used; say which."""
    (SESSIONS / str(os.getpid())).unlink(missing_ok=True)
    how_to_stop = f"hack/local-cluster.sh down --state-dir {TEST_STATE.relative_to(REPO)}"
    if os.environ.get(KEEP_VAR) == "1":
        _SUMMARY.append(f"the tests' control plane is still running ({KEEP_VAR}=1): "
                        f"{cp.server}, kubeconfig {cp.kubeconfig}; stop it with `{how_to_stop}`")
        return
    TEST_STATE.mkdir(parents=True, exist_ok=True)
    with open(TEST_STATE / ".up.lock", "w") as lock:  # the lock ControlPlane.up takes
        fcntl.flock(lock, fcntl.LOCK_EX)
        others = _other_sessions()
        if others:
            _SUMMARY.append(f"the tests' control plane is still running: pytest session(s) "
                            f"{', '.join(map(str, others))} use it and the last one stops it "
                            f"(or `{how_to_stop}`)")
            return
        stopped = cp.down()
    _SUMMARY.append(f"stopped the tests' control plane ({len(stopped)} processes and links); "
                    f"set {KEEP_VAR}=1 to keep it running between sessions")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _SUMMARY:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> ControlPlane:
    """The tests' control plane, started (or reused) once per session, CRDs installed."""
    cp = ControlPlane(TEST_STATE)
    # Registered before `up`: a session ending meanwhile sees us and keeps it running.
    SESSIONS.mkdir(parents=True, exist_ok=True)
    (SESSIONS / str(os.getpid())).touch()
    # A finalizer, not a yield: it must also run when the start below fails.
    request.addfinalizer(lambda: _finish(cp))  # noqa: PT021
    capture = request.config.pluginmanager.getplugin("capturemanager")
    try:
        # The first run builds for minutes: let its progress lines reach the terminal.
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            cp.up()
    except (ControlPlaneError, BuildError, OSError) as exc:
        pytest.fail(f"the local control plane did not start:\n{exc}", pytrace=False)
    api = cp.api_client()
    try:
        install_crd(Kube(api), NODECLAIM_CRD)
        if WORKSPACE_CRD.is_file():
            install_crd(Kube(api), WORKSPACE_CRD)
    except (KubeApiError, TimeoutError, yaml.YAMLError) as exc:
        pytest.fail(f"installing the CRDs failed: {exc}\n{cp.log_tails()}", pytrace=False)
    finally:
        api.close()  # type: ignore[no-untyped-call]
    return cp


@pytest.fixture(scope="session")
def api_client(control_plane: ControlPlane) -> Iterator[ApiClient]:
    """A kubernetes ApiClient for the tests' control plane (admin user)."""
    api = control_plane.api_client()
    yield api
    api.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def kube(api_client: ApiClient) -> Kube:
    """The rig's raw-JSON client over api_client: paths in, dicts out."""
    return Kube(api_client)


@pytest.fixture
def workspace_crd(control_plane: ControlPlane) -> Path:
    """Fails (never skips) with a clear message when the Workspace CRD is not there yet."""
    if not WORKSPACE_CRD.is_file():
        pytest.fail(f"{WORKSPACE_CRD.relative_to(REPO)} is missing (issue A writes it)",
                    pytrace=False)
    return WORKSPACE_CRD


def _wait_default_sa(kube: Kube, ns: str, timeout: float = 20.0) -> None:
    """Pods are refused until the namespace's default SA exists AND the token controller gave
    it a token Secret (1.20's ServiceAccount admission: "No API token found ... retry")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            sa = kube.get(f"/api/v1/namespaces/{ns}/serviceaccounts/default")
            if sa.get("secrets"):
                return
        except KubeApiError as exc:
            if exc.status != 404:
                raise
        time.sleep(0.1)
    raise TimeoutError(f"no default ServiceAccount with a token in namespace {ns} after "
                       f"{timeout}s")


@pytest.fixture
def namespace(api_client: ApiClient, request: pytest.FixtureRequest,
              control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace for this test, deleted afterwards."""
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"t-{stem}-{uuid.uuid4().hex[:6]}"
    kube = Kube(api_client)
    kube.create("/api/v1/namespaces",
                {"metadata": {"name": name, "labels": {"kaito-py/test": "true"}}})
    try:
        _wait_default_sa(kube, name)
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{control_plane.log_tail('kube-controller-manager')}", pytrace=False)
    yield name
    kube.delete(f"/api/v1/namespaces/{name}", missing_ok=True)


@pytest.fixture
def kubectl(control_plane: ControlPlane) -> Kubectl:
    """A runner for the rig's own kubectl (v1.20, matching the server) with the test kubeconfig."""
    binary, kubeconfig = str(control_plane.kubectl), str(control_plane.kubeconfig)

    def run(*args: str, input: str | None = None, check: bool = True,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([binary, f"--kubeconfig={kubeconfig}", *args], input=input,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed (exit {proc.returncode}):\n"
                        f"{proc.stdout}{proc.stderr}", pytrace=False)
        return proc

    return run
