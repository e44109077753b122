"""The operator installed from manifests/ runs as real pods and serves SmolLM2 from its image.

Why: every claim about what the operator's pods do (the bootstrap Job writes the TLS
Secret and caBundles, the webhook's gunicorn serves TLS behind its Service and the
apiserver calls it there, the reconciler CronJob's pod reaches the apiserver through the
`kubernetes` Service, the model pod runs the cpu-runtime image's command on a real node)
needs a real kubelet running the real images. This module builds (or reuses) the images
with rig.images, pushes them to a loopback registry, starts its OWN control plane (the
operator judges and reconciles every Workspace of a cluster, so it must not be installed
in the shared test cluster) with one real system node, applies the karpenter overlay
(image name pointing at the registry; rig.operator), and lets the rig's Karpenter answer
the reconciler's NodeClaims with real nodes. When a part cannot start, the test FAILS with
the reason; it never skips. Only one state dir on a machine may run real nodes at a time.

Weights reach the model pods here through the weights layer (runtime.weights) as users'
clusters would feed them: `smollm2-360m-instruct` (no PyPI package ships it) from a tiny
checkpoint of its architecture on a Hub stand-in, and `smollm2-135m-instruct` from an OCI
artifact pushed with `kaito model push`, both through a real hostPath node cache that the
kubelet creates as root's (the `weights-cache-owner` init container hands it to the images'
user, uid 65532); a replacement pod on the same node downloads nothing. The registry's pod
side and the Hub stand-in listen on the control plane's bridge address (rig-made); the
node cache is a folder of this module's own on this machine (every real node here shares
the host's filesystem, as the pods of one node share that node's). What a container wrote
is read from its node's dockerd (Installed.container_log).

The serving shapes a platform team brings its own nodes for run here too, on real nodes the
test starts itself (as a cluster's own node pools would be): a labelSelector-only Workspace
on a node advertising 4 GPUs (the pod asks for the node's GPUs), a MIG Workspace on a node
advertising `nvidia.com/mig-1g.10gb` slices (the pod asks for one slice), and a Workspace
with its own pod template, each reaching a Ready pod, the Service, and a Ready status.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from presets.catalog import load_catalog
from reconciler import weights
from rig import operator
from rig.images import build
from rig.tinymodel import build_tiny_model
from tests.e2e.conftest import Installed, InstallSpec
from tests.support.tinyarch import build_tiny_like

# A cold first run builds the images (minutes) inside the first test's setup.
pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(2400)]
REPO = Path(__file__).resolve().parents[2]
SMOLLM = REPO / "examples" / "smollm2-135m-instruct.yaml"
TOO_SMALL = REPO / "examples" / "llama-3.3-70b-too-small.yaml"
NS = "default"
SECRET = "registry-secret"
# This module's node cache: its own folder, so that nothing a demo or another run left in
# the default one can make a first pod look as if it had nothing to download.
NODE_CACHE = Path("/var/lib/kaito-e2e/weights")
# The `installed` fixture (tests/e2e/conftest.py): the operator and the cpu-runtime image,
# the registry's pod side (model artifacts over plain HTTP on a rig-made private address),
# a Hub stand-in (--hf-endpoint) and the node cache above.
INSTALL = InstallSpec(
    images=("operator", "cpu-runtime"),
    reconciler_args=("--weights-plain-http", "--allow-private-registries",
                     f"--weights-cache=hostPath:{NODE_CACHE}"),
    pod_registry=True,
    hub=True,
)
QUESTION = json.dumps({"prompt": "What is the capital of France?",
                       "generate_kwargs": {"max_new_tokens": 24}})


@pytest.fixture(scope="module", autouse=True)
def node_cache() -> Iterator[Path]:
    shutil.rmtree(NODE_CACHE.parent, ignore_errors=True)
    yield NODE_CACHE
    shutil.rmtree(NODE_CACHE.parent, ignore_errors=True)


def test_the_operator_runs_as_pods_from_the_local_registry(installed: Installed) -> None:
    images = operator.images_of(installed.docs)
    assert images == {f"{installed.registry_host}/kaito-py/kaito:{build.version()}"}
    job = installed.get("job", "-n", operator.NAMESPACE, "kaito-webhook-bootstrap")
    assert job["status"]["succeeded"] >= 1
    pods = installed.get("pods", "-n", operator.NAMESPACE,
                         "-l", "app.kubernetes.io/name=kaito-webhook")["items"]
    assert len(pods) == 2
    for pod in pods:
        status = pod["status"]["containerStatuses"][0]
        assert status["ready"] is True
        assert status["imageID"].startswith(
            f"docker-pullable://{installed.registry_host}/kaito-py/kaito@sha256:")
        assert pod["spec"]["nodeName"] == "system-1"
    # the reconciler CronJob's pod reaches the apiserver through the `kubernetes` Service
    log = installed.reconcile()
    assert "pass: workspaces=" in log, log


def test_the_webhook_pods_mutate_and_validate_workspaces(installed: Installed) -> None:
    applied = installed.kubectl("apply", "-n", NS, "-f", str(SMOLLM))
    assert "created" in applied.stdout or "unchanged" in applied.stdout
    ws = installed.get("workspace", "-n", NS, "workspace-smollm2")
    original = next(d for d in yaml.safe_load_all(SMOLLM.read_text()) if d)
    assert "count" not in original["resource"]
    assert ws["resource"]["count"] == 1, ws["resource"]  # filled in by /mutate
    refused = installed.kubectl("apply", "-n", NS, "-f", str(TOO_SMALL), check=False)
    assert refused.returncode != 0
    # the GPU-fit verdict: only /validate computes it (the CRD schema cannot)
    assert 'Workspace "workspace-llama-3-3-70b-too-small" is invalid' in refused.stderr
    assert "does not fit" in refused.stderr, refused.stderr


def _chat(url: str, body: bytes) -> str:
    req = urllib.request.Request(  # noqa: S310 (a ClusterIP the rig routes)
        url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310 (a ClusterIP the rig routes)
        return str(resp.read().decode())


def test_smollm2_is_served_by_the_cpu_runtime_image_in_a_real_pod(
        installed: Installed) -> None:
    installed.kubectl("apply", "-n", NS, "-f", str(SMOLLM))
    installed.reconcile_until("workspace-smollm2", "WorkspaceReady", 900)
    pod = installed.get("pods", "-n", NS, "-l", "kaito.sh/workspace=workspace-smollm2")["items"][0]
    container = pod["spec"]["containers"][0]
    assert container["image"] == f"ghcr.io/kaito-py/cpu-runtime:{build.version()}"
    assert container["command"][:3] == ["python", "-m", "runtime.serving.server"]
    assert pod["spec"]["nodeName"].startswith("aks-")  # a node the Karpenter started for it
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    node = installed.get("node", pod["spec"]["nodeName"])
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("docker://")
    via_proxy = _proxy(installed, "workspace-smollm2", 80, "/chat", QUESTION)
    assert "paris" in via_proxy.lower(), via_proxy
    svc = installed.get("service", "-n", NS, "workspace-smollm2")
    via_cluster_ip = _chat(f"http://{svc['spec']['clusterIP']}:80/chat", QUESTION.encode())
    assert "paris" in via_cluster_ip.lower(), via_cluster_ip


# -- weights from the Hub stand-in and from an OCI artifact (issue K) ---------------------

def _workspace(name: str, preset: str, annotations: dict[str, str] | None = None,
               **options: Any) -> str:
    return json.dumps({
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations or {}},
        "resource": {"instanceType": "Standard_D4s_v3",
                     "labelSelector": {"matchLabels": {"apps": name}}},
        "inference": {"preset": {"name": preset, **({"presetOptions": options} if options
                                                    else {})}}})


def _pods(inst: Installed, name: str) -> list[dict[str, Any]]:
    return list(inst.get("pods", "-n", NS, "-l", f"kaito.sh/workspace={name}")["items"])


def _ready(pod: dict[str, Any]) -> bool:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return bool(statuses) and all(s.get("ready") for s in statuses)


def _replace_pod(inst: Installed, name: str, timeout: float = 600) -> tuple[dict[str, Any],
                                                                           dict[str, Any]]:
    """Delete the Workspace's pod; the Deployment's replacement, once Ready (old, new)."""
    (old,) = _pods(inst, name)
    inst.kubectl("delete", "pod", "-n", NS, old["metadata"]["name"], "--wait=false")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [p for p in _pods(inst, name)
               if p["metadata"]["name"] != old["metadata"]["name"] and _ready(p)]
        if new:
            return old, new[0]
        time.sleep(2)
    pytest.fail(f"no Ready replacement pod of {name} after {timeout:.0f} s:\n"
                f"{operator.pods_state(inst.kubectl, NS)}", pytrace=False)


def _proxy(installed: Installed, name: str, port: int, path: str, body: str | None = None) -> str:
    url = f"/api/v1/namespaces/{NS}/services/{name}:{port}/proxy{path}"
    if body is None:
        return str(installed.kubectl("get", "--raw", url, timeout=120).stdout)
    return str(installed.kubectl("create", "--raw", url, "-f", "-", input=body,
                                 timeout=300).stdout)


def _last_json(log: str) -> dict[str, Any]:
    lines = [ln for ln in log.splitlines() if ln.startswith("{")]
    assert lines, f"no JSON line in:\n{log[-3000:]}"
    return dict(json.loads(lines[-1]))


def _cache_is_the_images_users(cache: Path) -> None:
    info = cache.stat()
    assert (info.st_uid, info.st_gid) == (65532, 65532), (
        f"{cache} is {info.st_uid}:{info.st_gid}; weights-cache-owner should have handed it "
        "to 65532")


def test_a_preset_from_the_hub_stand_in_is_served_and_its_second_pod_downloads_nothing(
        installed: Installed, node_cache: Path, tmp_path: Path) -> None:
    spec = load_catalog().model("smollm2-360m-instruct")
    assert spec is not None
    tokenizer = build_tiny_model(tmp_path / "tokenizer")
    repo = build_tiny_like(spec.family, tmp_path / "repo", tokenizer_dir=tokenizer,
                           tie_word_embeddings=True, context_length=spec.context_length)
    hub = installed.hub
    hub.add_repo(spec.hf_id, repo, commit=spec.revision)
    name = "workspace-smollm2-360m"
    installed.kubectl("apply", "-f", "-", input=_workspace(name, spec.name))
    started = time.monotonic()
    installed.reconcile_until(name, "WorkspaceReady", 900)
    print(f"{name}: Ready {time.monotonic() - started:.0f} s after apply")

    (pod,) = _pods(installed, name)
    init = [c["name"] for c in pod["spec"].get("initContainers", [])]
    assert init == [weights.OWNER_CONTAINER], init  # no artifact: the server fetches
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["HF_ENDPOINT"] == hub.endpoint
    downloads = hub.downloads()
    assert any(r.path.startswith("/_cdn/") for r in downloads), hub.requests
    clients = {r.client for r in downloads}
    print(f"hub downloads: {len(downloads)} from {sorted(clients)}; pod IP "
          f"{pod['status']['podIP']}")
    assert clients == {pod["status"]["podIP"]}  # the pod fetched them, nothing else
    log = installed.container_log(pod, "model")
    assert f"downloading from {hub.endpoint}" in log, log[-3000:]
    _cache_is_the_images_users(node_cache)
    records = list((node_cache / "complete").glob("*.json"))
    assert records, f"no completion record under {node_cache}"
    answer = _proxy(installed, name, 80, "/chat", QUESTION)
    assert "Result" in answer, answer

    hub.clear_log()
    old, new = _replace_pod(installed, name)
    assert new["spec"]["nodeName"] == old["spec"]["nodeName"]
    assert hub.requests == []  # the second pod on this node: not one request
    assert "no download" in installed.container_log(new, "model")
    assert "Result" in _proxy(installed, name, 80, "/chat", QUESTION)


def test_smollm2_from_an_oci_artifact_is_pulled_once_per_node_and_answers_paris(
        installed: Installed, node_cache: Path, tmp_path: Path) -> None:
    preset = "smollm2-135m-instruct"
    config = installed.apply_registry_secret(SECRET)
    ref = f"{installed.registry.pod_host}/models/{preset}:v1"
    digest = installed.push_model(preset, ref, config, tmp_path)
    name = "workspace-smollm2-oci"
    installed.kubectl("apply", "-f", "-", input=_workspace(
        name, preset, {"kaito.sh/model-artifact": ref}, imagePullSecrets=[SECRET]))
    started = time.monotonic()
    installed.reconcile_until(name, "WorkspaceReady", 900)
    print(f"{name}: Ready {time.monotonic() - started:.0f} s after apply")

    (pod,) = _pods(installed, name)
    init = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
    assert list(init) == [weights.OWNER_CONTAINER, weights.CONTAINER], list(init)
    assert all(s["state"]["terminated"]["exitCode"] == 0 for s in init.values()), init
    pulled = _last_json(installed.container_log(pod, weights.CONTAINER))
    assert pulled["fetched"] is True, pulled
    folder = Path(pulled["path"])
    assert folder.name == digest.replace(":", "-"), (folder, digest)
    on_node = node_cache / folder.relative_to(weights.CACHE_DIR)
    assert (on_node / "config.json").is_file(), f"{on_node} holds no model"
    _cache_is_the_images_users(node_cache)
    files = {p.name: p.stat().st_mtime_ns for p in on_node.iterdir()}
    assert "paris" in _proxy(installed, name, 80, "/chat", QUESTION).lower()

    old, new = _replace_pod(installed, name)
    assert new["spec"]["nodeName"] == old["spec"]["nodeName"]
    again = _last_json(installed.container_log(new, weights.CONTAINER))
    assert again["fetched"] is False, again
    assert again["path"] == pulled["path"], again
    assert {p.name: p.stat().st_mtime_ns for p in on_node.iterdir()} == files  # untouched
    assert "no download" in installed.container_log(new, "model")
    assert "paris" in _proxy(installed, name, 80, "/chat", QUESTION).lower()


# -- serving shapes on the platform's own real nodes (issue S) --------------------------

BYO_NODE, MIG_NODE = "byo-gpu-1", "mig-1"
MIG_SLICE = "nvidia.com/mig-1g.10gb"
A100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.memory": "81920",
        "nvidia.com/gpu.count": "4"}  # the labels NVIDIA's GPU feature discovery sets


@pytest.fixture(scope="module")
def own_nodes(installed: Installed) -> dict[str, str]:
    """Two real nodes of the platform's own pools: node name -> its pool label."""
    installed.nodes.start(BYO_NODE, labels={"pool": "byo-a100", **A100}, gpus=4)
    installed.nodes.start(MIG_NODE, labels={"pool": "byo-mig"}, extended={MIG_SLICE: 7})
    return {BYO_NODE: "byo-a100", MIG_NODE: "byo-mig"}


def _apply(installed: Installed, name: str, resource: dict[str, Any],
           inference: dict[str, Any]) -> dict[str, Any]:
    # This install's provisioner is Karpenter: a Workspace on the platform's own nodes says
    # so (docs/install.md; an install of the byo overlay needs no annotation).
    installed.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
        "metadata": {"name": name, "namespace": NS,
                     "annotations": {"kaito.sh/provisioner": "byo"}},
        "resource": resource, "inference": inference}))
    installed.reconcile_until(name, "WorkspaceReady", 900)
    (pod,) = installed.get("pods", "-n", NS, "-l", f"kaito.sh/workspace={name}")["items"]
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    return dict(pod)


def _accelerators(pod: dict[str, Any]) -> dict[str, str]:
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    return {k: v for k, v in limits.items() if k.startswith("nvidia.com/")}


def test_a_label_selector_alone_serves_on_the_gpus_a_real_node_has(
        installed: Installed, own_nodes: dict[str, str]) -> None:
    selector = {"matchExpressions": [
        {"key": "pool", "operator": "In", "values": [own_nodes[BYO_NODE]]},
        {"key": "spot", "operator": "DoesNotExist"}]}
    pod = _apply(installed, "byo-smollm2", {"labelSelector": selector},
                 {"preset": {"name": "smollm2-135m-instruct"}})
    assert pod["spec"]["nodeName"] == BYO_NODE
    assert _accelerators(pod) == {"nvidia.com/gpu": "4"}  # what the node has, none assumed
    claims = installed.get("nodeclaims")["items"]  # nothing provisioned for it
    assert not [c for c in claims
                if c["metadata"].get("labels", {}).get("kaito.sh/workspace") == "byo-smollm2"]
    assert "paris" in _proxy(installed, "byo-smollm2", 80, "/chat", QUESTION).lower()
    header, row = installed.kubectl("get", "workspace", "byo-smollm2", "-n", NS,
                                    "-o", "wide").stdout.splitlines()[:2]
    assert "CONTEXT" in header.split(), header
    print(f"kubectl get workspace -o wide:\n{header}\n{row}")


def test_a_mig_workspace_takes_one_slice_of_a_real_node(
        installed: Installed, own_nodes: dict[str, str]) -> None:
    resource = {"labelSelector": {"matchLabels": {"pool": own_nodes[MIG_NODE]}},
                "partition": {"mode": "mig", "profile": "1g.10gb"}}
    pod = _apply(installed, "mig-smollm2", resource,
                 {"preset": {"name": "smollm2-135m-instruct"}})
    assert pod["spec"]["nodeName"] == MIG_NODE
    assert _accelerators(pod) == {MIG_SLICE: "1"}
    node = installed.get("node", MIG_NODE)
    assert node["status"]["allocatable"][MIG_SLICE] == "7"
    ws = installed.get("workspace", "-n", NS, "mig-smollm2")
    assert ws["status"]["parallelism"] == "1 GPU", ws["status"]


def test_a_template_workspace_runs_its_own_pod_on_a_real_node(
        installed: Installed, own_nodes: dict[str, str]) -> None:
    image = f"ghcr.io/kaito-py/cpu-runtime:{build.version()}"  # any image the node has
    template = {"spec": {"containers": [{
        "name": "server", "image": image, "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "http.server", "8080", "--directory", "/etc"],
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/hostname", "port": 8080}}}]}}
    resource = {"labelSelector": {"matchLabels": {"pool": own_nodes[BYO_NODE]}}}
    pod = _apply(installed, "custom-server", resource, {"template": template})
    assert pod["spec"]["nodeName"] == BYO_NODE
    assert pod["spec"]["containers"][0]["command"] == template["spec"]["containers"][0][
        "command"]  # kept as written
    service = installed.get("service", "-n", NS, "custom-server")
    assert [p["port"] for p in service["spec"]["ports"]] == [8080]
    assert _proxy(installed, "custom-server", 8080, "/hostname").strip() == pod[
        "metadata"]["name"]  # the pod's own /etc/hostname, through the Service
    ws = installed.get("workspace", "-n", NS, "custom-server")
    assert "maxModelLen" not in ws["status"]
