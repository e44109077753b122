"""pytest fixtures over the rig's real control plane (plugin named in tests/conftest.py).

Why: every tier that talks to Kubernetes (webhook, reconciler, provisioners, demo flow)
needs a real API server with our CRDs installed and an isolated namespace per test.
The tests' control plane lives in `.local/test/`, apart from the demo's `.local/`, and is
reused when already running (a warm start costs nothing; a start from the binary cache
takes seconds). It is left running for the next session: stop it with
`hack/local-cluster.sh down --state-dir .local/test`.

It must not: skip (a control plane that cannot start FAILS the test with the
component's log tail), share namespaces between tests, or stop a control plane that
another pytest session may be using.
"""

from __future__ import annotations

import contextlib
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


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> ControlPlane:
    """The tests' control plane, started (or reused) once per session, CRDs installed."""
    cp = ControlPlane(TEST_STATE)
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
    """Pods are refused until the token controller made the namespace's default SA."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kube.get(f"/api/v1/namespaces/{ns}/serviceaccounts/default")
            return
        except KubeApiError as exc:
            if exc.status != 404:
                raise
        time.sleep(0.1)
    raise TimeoutError(f"no default ServiceAccount in namespace {ns} after {timeout}s")


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
