"""Fixtures of the end-to-end tier: the rig's kubectl, rendered overlays, the real operator.

Why: several e2e modules need `kubectl kustomize` output; rendering once per session keeps
the tier fast. The real-pod modules (test_operator_real, test_tuning_real) share one way to
install the operator from manifests/ on their OWN control plane with real nodes
(`installed`, module scope): a module says what it needs beyond the default through a
module-level `INSTALL = InstallSpec(...)` (more images, reconciler flags, the registry's
pod side). It must not skip: when the rig cannot build kubectl or a real part cannot
start, the tests fail with the build's or the part's own message.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.e2e.kustomize import legacy_tree, render

OVERLAYS = ("karpenter", "aks", "byo")
REPO = Path(__file__).resolve().parents[2]
NODECLAIM_CRD = REPO / "hack" / "rig" / "nodeclaims.karpenter.sh.yaml"
# The model pods' weights cache: a hostPath (reconciler.weights.DEFAULT_CACHE) the real
# kubelet creates on this machine; removed after the module when it was absent before.
WEIGHTS_HOST_DIR = Path("/var/lib/kaito/weights")


@pytest.fixture(scope="session")
def rig_kubectl() -> Path:
    from rig import k8sbuild

    kubectl = k8sbuild.ensure_binaries() / "kubectl"
    assert kubectl.is_file(), f"the rig's build finished but {kubectl} is missing"
    return kubectl


@pytest.fixture(scope="session")
def legacy_manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return legacy_tree(tmp_path_factory.mktemp("kustomize"))


@pytest.fixture(scope="session")
def rendered(rig_kubectl: Path, legacy_manifests: Path) -> dict[str, list[dict[str, Any]]]:
    """overlay name -> its rendered documents; key "manifests" is `kubectl apply -k manifests/`."""
    out = {
        name: render(rig_kubectl, legacy_manifests / "manifests" / "overlays" / name)
        for name in OVERLAYS
    }
    out["manifests"] = render(rig_kubectl, legacy_manifests / "manifests")
    return out


# -- the operator installed from manifests/ on real nodes ----------------------------------

@dataclass(frozen=True)
class InstallSpec:
    """What a real-pod module needs installed (module attribute INSTALL)."""

    images: tuple[str, ...] = ("operator", "cpu-runtime")  # rig.images folders
    reconciler_args: tuple[str, ...] = ()  # appended to the reconciler CronJob's command
    pod_registry: bool = False  # also serve the registry on the control plane's address
    hub: bool = False  # a Hub stand-in on that address, the reconciler's --hf-endpoint


@dataclass
class Installed:
    cp: Any  # rig.cluster.ControlPlane
    registry_host: str
    docs: list[dict[str, Any]]
    registry: Any = None  # rig.imageregistry.ImageRegistry
    hub: Any = None  # rig.hubstub.HubStub (InstallSpec.hub)
    nodes: Any = None  # rig.realnode.RealNodes of this control plane
    passes: int = 0

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60.0,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.cp.kubectl), "--kubeconfig", str(self.cp.kubeconfig),
                               *args], capture_output=True, text=True, timeout=timeout,
                              input=input, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
        return done

    def get(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", "-o", "json", *args).stdout))

    def reconcile(self) -> str:
        from rig import operator

        self.passes += 1
        return operator.reconcile_pass(self.kubectl, f"test-pass-{self.passes}")

    def container_log(self, pod: dict[str, Any], container: str) -> str:
        """What `container` of `pod` wrote (every run of it), read from its node's dockerd.

        From the node's dockerd rather than `kubectl logs`, which gives only the current
        or the previous run (tests/rig/test_real_nodes reads logs through the kubelet)."""
        node, name = pod["spec"]["nodeName"], pod["metadata"]["name"]
        ids = self.nodes.docker(
            node, "ps", "-aq", "--filter", f"label=io.kubernetes.pod.name={name}",
            "--filter", f"label=io.kubernetes.container.name={container}").stdout.split()
        assert ids, f"no container {container} of pod {name} on node {node}"
        runs = [self.nodes.docker(node, "logs", i) for i in reversed(ids)]  # oldest first
        return "".join(run.stdout + run.stderr for run in runs)

    def conditions(self, name: str, namespace: str = "default") -> dict[str, dict[str, Any]]:
        ws = self.get("workspace", "-n", namespace, name)
        return {c["type"]: c for c in (ws.get("status") or {}).get("conditions") or []}

    def reconcile_until(self, name: str, condition: str, timeout: float,
                        namespace: str = "default",
                        pending: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
        """Run reconciler passes until the Workspace's `condition` is True; fail with the
        conditions and the pods' state when it is not within `timeout` seconds, or (given
        `pending`) at once when it is False for a reason not among those."""
        from rig import operator

        deadline = time.monotonic() + timeout
        conds: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            self.reconcile()
            conds = self.conditions(name, namespace)
            verdict = conds.get(condition, {})
            if verdict.get("status") == "True":
                return conds
            if pending is not None and verdict.get("status") == "False" \
                    and verdict.get("reason") not in pending:
                pytest.fail(f"{name}: {condition} False: {verdict}\n"
                            f"{operator.pods_state(self.kubectl, namespace)}", pytrace=False)
            time.sleep(2)
        pytest.fail(f"{name}: {condition} not True after {timeout:.0f} s: {conds}\n"
                    f"{operator.pods_state(self.kubectl, namespace)}", pytrace=False)

    def apply_registry_secret(self, name: str, namespace: str = "default") -> dict[str, Any]:
        """The pod-side registry's credentials as a dockerconfigjson Secret; returns them."""
        config = dict(self.registry.docker_config())
        secret = {"apiVersion": "v1", "kind": "Secret",
                  "type": "kubernetes.io/dockerconfigjson",
                  "metadata": {"name": name, "namespace": namespace},
                  "data": {".dockerconfigjson": base64.b64encode(
                      json.dumps(config).encode()).decode()}}
        self.kubectl("apply", "-f", "-", input=json.dumps(secret))
        return config

    def push_model(self, preset: str, reference: str, config: dict[str, Any],
                   work: Path) -> str:
        """`kaito model push PRESET REFERENCE` to the pod side, as a user would; the digest."""
        secret_file = work / "push-secret.json"
        secret_file.write_text(json.dumps(config))
        env = {**os.environ, "KAITO_OCI_ALLOW_PRIVATE": "1"}  # the rig's bridge address
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "kaito", "model", "push", preset, reference,
             "--push-secret", str(secret_file), "--plain-http"],
            capture_output=True, text=True, timeout=900, env=env, check=False)
        assert done.returncode == 0, f"kaito model push failed:\n{done.stdout}\n{done.stderr}"
        print(f"kaito model push {preset} -> {reference}: {time.monotonic() - started:.1f} s")
        return str(json.loads(done.stdout.splitlines()[-1])["digest"])


def _fail(what: str, exc: BaseException) -> NoReturn:
    pytest.fail(f"{what}:\n{exc}", pytrace=False)


@pytest.fixture(scope="module")
def installed(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """The operator from manifests/ on this module's own control plane and real nodes.

    Builds (or reuses) the images with rig.images, pushes them to the rig's registry,
    starts one real system node, applies the karpenter overlay (image name pointing at the
    registry, plus INSTALL.reconciler_args; rig.operator), and lets the rig's Karpenter
    answer the reconciler's NodeClaims with real nodes that preload the runtime images.
    """
    from kubernetes import config

    from rig import operator
    from rig.cluster import ControlPlane, ControlPlaneError
    from rig.hubstub import HubStub
    from rig.imageregistry import ImageRegistry, RegistryError, publish
    from rig.images import build, dockerd
    from rig.karpenter import SimKarpenter
    from rig.realnode import RealNodeError, RealNodes

    spec: InstallSpec = getattr(request.module, "INSTALL", InstallSpec())
    state = tmp_path_factory.mktemp("operator-real")
    cp = ControlPlane(state)
    registry = ImageRegistry(state)
    karpenter: SimKarpenter | None = None
    hub: HubStub | None = None
    api: Any = None
    made_weights_dir = not WEIGHTS_HOST_DIR.parent.exists()
    try:
        try:
            cp.up()
        except (ControlPlaneError, OSError) as exc:
            _fail("the control plane did not start", exc)
        try:
            engine = dockerd.ensure()
            known = {i.folder: i for i in build.IMAGES}
            names = [build.build(engine, known[f], print).tag for f in spec.images]
            host = registry.start()
            published = publish(engine, registry, names)
            if spec.pod_registry:
                registry.start_pod_side(cp.address)
        except (RuntimeError, OSError, RegistryError) as exc:
            _fail("the images could not be built or pushed", exc)
        try:
            RealNodes(state).start("system-1")
        except RealNodeError as exc:
            _fail("the system node did not start", exc)
        args = spec.reconciler_args
        if spec.hub:  # pods reach it on the control plane's bridge address
            hub = HubStub(host=cp.address)
            hub.start()
            args = (*args, f"--hf-endpoint={hub.endpoint}")
        preload = tuple((p.local, p.name) for p in published if "runtime" in p.name)
        done = Installed(cp, host, [], registry, hub, RealNodes(state, preload=preload))
        done.kubectl("apply", "--validate=false", "-f", str(NODECLAIM_CRD))
        overlay = operator.write_overlay(state / "overlay", host, build.version(), args)
        done.docs = operator.render(done.kubectl, overlay)
        operator.apply(done.kubectl, done.docs, state / "overlay")
        operator.wait_installed(done.kubectl, timeout=300)
        api = config.new_client_from_config(config_file=str(cp.kubeconfig))  # type: ignore[no-untyped-call]
        karpenter = SimKarpenter(api, real_nodes=done.nodes)
        karpenter.fail("Standard_NC6s_v3")
        karpenter.start()
        yield done
    finally:
        if karpenter is not None:
            karpenter.stop()
        if api is not None:
            api.close()
        if hub is not None:
            hub.stop()
        registry.stop(remove=True)
        cp.down()
        if made_weights_dir:
            shutil.rmtree(WEIGHTS_HOST_DIR.parent, ignore_errors=True)
