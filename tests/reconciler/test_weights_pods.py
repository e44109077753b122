"""Model pods mount the node cache and, for a model artifact, pull it first (pure builders).

The reconciler's desired objects for a Workspace: every model container mounts the
`weights-cache` volume at the path runtime.weights reads (KAITO_WEIGHTS_CACHE), the volume
follows the install setting (hostPath by default, PVC or emptyDir), HF_ENDPOINT is passed
when set, and the annotation kaito.sh/model-artifact adds the `weights` init container
(before the adapters') with the registry secret mounted where KAITO_WEIGHTS_PULL_SECRET
points; the server then gets `--model oci://REF`.
"""

from __future__ import annotations

from typing import Any

import pytest

from crds.workspace import ANNOTATION_MODEL_ARTIFACT
from presets.catalog import load_catalog
from reconciler import weights
from reconciler.expansion import node_request, prepare
from reconciler.objects import desired_objects
from reconciler.provision.byo import node_problem
from reconciler.settings import Settings
from runtime.serving.settings import parse_settings
from runtime.weights.__main__ import build_parser as weights_parser

CATALOG = load_catalog()
REF = "registry.example:5000/models/smollm2:v1"


def _pod(annotations: dict[str, str], settings: dict[str, Any],
         **options: Any) -> dict[str, Any]:
    preset: dict[str, Any] = {"name": "smollm2-135m-instruct"}
    if options:
        preset["presetOptions"] = options
    obj = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
           "metadata": {"name": "w", "namespace": "default", "annotations": annotations},
           "resource": {"instanceType": "Standard_D4s_v3",
                        "labelSelector": {"matchLabels": {"a": "b"}}},
           "inference": {"preset": preset}}
    prep = prepare(obj, CATALOG)
    objs = desired_objects(prep.ws, prep.resolved, ["n1"], settings=settings)
    workload = next(o for o in objs if o["kind"] in ("Deployment", "StatefulSet"))
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_the_model_container_mounts_the_node_cache_the_runtime_reads() -> None:
    pod = _pod({}, {"hf_endpoint": "http://hub.local:8080"})
    model = pod["containers"][0]
    mount = next(m for m in model["volumeMounts"] if m["name"] == weights.CACHE_VOLUME)
    assert mount["mountPath"] == _env(model)["KAITO_WEIGHTS_CACHE"] == weights.CACHE_DIR
    assert _env(model)["HF_ENDPOINT"] == "http://hub.local:8080"
    volume = next(v for v in pod["volumes"] if v["name"] == weights.CACHE_VOLUME)
    assert volume["hostPath"] == {"path": "/var/lib/kaito/weights", "type": "DirectoryOrCreate"}
    assert "initContainers" not in pod or all(
        c["name"] != "weights" for c in pod["initContainers"])


@pytest.mark.parametrize(("setting", "source"), [
    ("pvc:model-cache", {"persistentVolumeClaim": {"claimName": "model-cache"}}),
    ("emptyDir", {"emptyDir": {}}),
    ("hostPath:/mnt/nvme/kaito", {"hostPath": {"path": "/mnt/nvme/kaito",
                                               "type": "DirectoryOrCreate"}}),
])
def test_the_cache_volume_follows_the_install_setting(setting: str, source: Any) -> None:
    pod = _pod({}, {"weights_cache": setting})
    volume = next(v for v in pod["volumes"] if v["name"] == weights.CACHE_VOLUME)
    assert {k: v for k, v in volume.items() if k != "name"} == source


@pytest.mark.parametrize("bad", ["hostPath:relative", "hostPath:/a/../etc", "pvc:", "nfs:x"])
def test_a_bad_cache_setting_is_refused_at_start(bad: str) -> None:
    with pytest.raises(ValueError, match="hostPath:/absolute/path, pvc:NAME or emptyDir"):
        Settings(weights_cache=bad)


@pytest.mark.parametrize(("setting", "owner"), [
    (None, True), ("hostPath:/mnt/nvme/kaito", True), ("pvc:model-cache", False),
    ("emptyDir", False)])
def test_a_host_path_cache_is_handed_to_the_images_user_first(setting: str | None,
                                                               owner: bool) -> None:
    """The kubelet makes a missing hostPath directory root's (0755); our images run as 65532.
    Only the directory is handed over, by uid 0 with CHOWN alone; a PVC or emptyDir gets the
    pod's fsGroup instead, so no root container is added for it."""
    pod = _pod({}, {"weights_cache": setting} if setting else {})
    init = pod.get("initContainers", [])
    if not owner:
        assert all(c["name"] != weights.OWNER_CONTAINER for c in init)
        return
    first = init[0]
    assert first["name"] == weights.OWNER_CONTAINER
    assert first["command"] == ["chown", "65532:65532", weights.CACHE_DIR]
    assert first["volumeMounts"] == [weights.cache_mount()]
    assert first["image"] == pod["containers"][0]["image"]
    assert first["securityContext"] == {
        "allowPrivilegeEscalation": False, "privileged": False, "runAsUser": 0,
        "runAsNonRoot": False, "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}}


def test_a_users_own_image_gets_no_cache_owner() -> None:
    assert weights.cache_owner({}, "registry.example.com/custom:1") is None
    assert weights.cache_owner({}, "ghcr.io/kaito-py/cpu-runtime:1") is not None


def test_a_model_artifact_is_pulled_by_the_first_init_container_after_the_owner() -> None:
    pod = _pod({ANNOTATION_MODEL_ARTIFACT: REF, "kaito.sh/use-local-weights": "true"},
               {"weights_plain_http": True}, imagePullSecrets=["regcred"])
    names = [c["name"] for c in pod["initContainers"]]
    assert names[:2] == [weights.OWNER_CONTAINER, "weights"]
    init = pod["initContainers"][1]
    args = weights_parser().parse_args(init["command"][3:])
    assert (args.command, args.model) == ("pull", f"oci://{REF}")
    env = _env(init)
    secret_dir = env["KAITO_WEIGHTS_PULL_SECRET"].rsplit("/", 1)[0]
    assert {m["mountPath"] for m in init["volumeMounts"]} == {weights.CACHE_DIR, secret_dir}
    assert env["KAITO_WEIGHTS_PLAIN_HTTP"] == "1"
    auth = next(v for v in pod["volumes"] if v["name"] == "weights-auth")
    assert auth["secret"]["secretName"] == "regcred"
    model = pod["containers"][0]
    served = parse_settings(model["command"][3:])
    assert served.model == f"oci://{REF}"
    assert _env(model)["KAITO_WEIGHTS_OFFLINE"] == "1"  # use-local-weights: never online


def test_vllm_on_a_cpu_node_gets_its_kv_cache_space_and_pulls_with_the_cpu_image() -> None:
    pod = _pod({"kaito.sh/runtime": "vllm", ANNOTATION_MODEL_ARTIFACT: REF}, {})
    model = pod["containers"][0]
    assert model["image"] == CATALOG.images["vllm-cpu"]
    assert _env(model)["VLLM_CPU_KVCACHE_SPACE"] == "1"  # 4 x 4096 tokens of SmolLM2-135M
    assert {c["name"]: c["image"] for c in pod["initContainers"]}["weights"] == model["image"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert "VLLM_CPU_KVCACHE_SPACE" not in _env(_pod({}, {})["containers"][0])


def test_vllm_on_a_cpu_instance_type_asks_its_node_for_no_gpu() -> None:
    """A CPU-only node never advertises nvidia.com/gpu: the node must count as ready."""
    obj = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
           "metadata": {"name": "w", "namespace": "default",
                        "annotations": {"kaito.sh/runtime": "vllm"}},
           "resource": {"instanceType": "Standard_D4s_v3",
                        "labelSelector": {"matchLabels": {"a": "b"}}},
           "inference": {"preset": {"name": "smollm2-135m-instruct"}}}
    prep = prepare(obj, CATALOG)
    assert node_request(prep.ws, prep.resolved).gpus_per_node == 0
    cpu_node = {"metadata": {"name": "n1"}, "spec": {}, "status": {
        "capacity": {"cpu": "4"}, "conditions": [{"type": "Ready", "status": "True"}]}}
    assert node_problem(cpu_node, 0) == ""
