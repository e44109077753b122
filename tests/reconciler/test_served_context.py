"""What the reconciler serves: the context (annotation or the user's ConfigMap) and the
GPU layout reach the pod, the status and `kubectl get -o wide`. Pure: no cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from presets.validate import ValidationOptions
from reconciler.expansion import SpecError, node_request, on_nodes, prepare
from reconciler.objects import desired_objects
from reconciler.podparts import CONFIG_KEY
from reconciler.provision.base import NodeStatus, Snapshot
from reconciler.provision.byo import ByoProvisioner
from reconciler.status import Observed, desired_status
from tests.reconciler.helpers import catalog, phi3

Obj = dict[str, Any]
A100 = "Standard_NC24ads_A100_v4"


def _ws(preset: str, sku: str, *, config: str | None = None, count: int | None = None) -> Obj:
    obj = phi3("ws-context", "ctx", instance_type=sku)
    obj["metadata"].update(namespace="default", uid="u-1", generation=1)
    obj["inference"]["preset"]["name"] = preset
    if config:
        obj["inference"]["config"] = config
    if count:
        obj["resource"]["count"] = count
    return obj


def _user(vllm: str) -> dict[str, str]:
    return {CONFIG_KEY: f"vllm:\n{vllm}\n"}


def _workload(objs: list[Obj]) -> Obj:
    return next(o for o in objs if o["kind"] in ("Deployment", "StatefulSet"))


def _args(objs: list[Obj]) -> list[str]:
    args: list[str] = _workload(objs)["spec"]["template"]["spec"]["containers"][0]["command"]
    return args


def test_a_128k_preset_on_an_a100_is_served_its_whole_context() -> None:
    prep = prepare(_ws("phi-3-mini-128k-instruct", A100), catalog())
    assert prep.resolved.max_model_len == 131072
    args = _args(desired_objects(prep.ws, prep.resolved, ["gpu-1"]))
    assert args[args.index("--max-model-len") + 1] == "131072"


def test_the_configmap_context_is_served_and_shown() -> None:
    user = _user("  max-model-len: 8192")
    prep = prepare(_ws("phi-3-mini-128k-instruct", A100, config="cfg"), catalog(),
                   user_config=user)
    assert prep.resolved.max_model_len == 8192
    objs = desired_objects(prep.ws, prep.resolved, ["gpu-1"], user_config=user)
    args = _args(objs)
    assert args.count("--max-model-len") == 1
    assert args[args.index("--max-model-len") + 1] == "8192"


@pytest.mark.parametrize(
    ("preset", "sku", "value", "fragment"),
    [
        pytest.param("phi-3-mini-4k-instruct", A100, "20480", "exceeds the context length",
                     id="beyond-the-model"),
        pytest.param("phi-3-mini-128k-instruct", "Standard_NC6s_v3", "131072", "does not fit",
                     id="beyond-the-gpus"),
        pytest.param("phi-3-mini-4k-instruct", A100, "lots", "must be a positive integer",
                     id="not-a-number"),
    ],
)
def test_a_configmap_context_that_cannot_be_served_is_a_clear_status(
    preset: str, sku: str, value: str, fragment: str
) -> None:
    with pytest.raises(SpecError) as caught:
        prepare(_ws(preset, sku, config="cfg", count=1), catalog(),
                user_config=_user(f"  max-model-len: {value}"))
    assert caught.value.reason == "InvalidConfig"
    assert "ConfigMap cfg" in caught.value.message
    assert fragment in caught.value.message


def test_a_small_model_on_four_gpus_is_one_pod_with_four_engines() -> None:
    prep = prepare(_ws("phi-3-mini-4k-instruct", "Standard_NC96ads_A100_v4"), catalog())
    objs = desired_objects(prep.ws, prep.resolved, ["gpu-1"])
    workload = _workload(objs)
    assert (workload["kind"], workload["spec"]["replicas"]) == ("Deployment", 1)
    container = workload["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    args = container["command"]
    assert args[args.index("--data-parallel-size") + 1] == "4"
    assert prep.resolved.layout == "data-parallel 4 x 1 GPU"


def test_more_nodes_than_needed_are_replicas_one_per_node() -> None:
    prep = prepare(_ws("phi-3-mini-4k-instruct", A100, count=3), catalog())
    objs = desired_objects(prep.ws, prep.resolved, ["gpu-1", "gpu-2", "gpu-3"])
    workload = _workload(objs)
    assert (workload["kind"], workload["spec"]["replicas"]) == ("Deployment", 3)
    affinity = workload["spec"]["template"]["spec"]["affinity"]
    assert "podAntiAffinity" in affinity
    assert "--pipeline-parallel-size" in _args(objs)
    args = _args(objs)
    assert args[args.index("--pipeline-parallel-size") + 1] == "1"


def test_status_carries_the_context_and_the_layout() -> None:
    observed = Observed(generation=1, nodes=NodeStatus(ready=True, nodes=("gpu-1",)),
                        serving=(131072, "1 GPU"))
    status = desired_status(observed, "2026-01-01T00:00:00Z")
    assert (status["maxModelLen"], status["parallelism"]) == (131072, "1 GPU")
    tuning = desired_status(Observed(generation=1, tuning=True), "2026-01-01T00:00:00Z")
    assert "maxModelLen" not in tuning


def _node(name: str, labels: dict[str, str], capacity: dict[str, str]) -> Obj:
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "capacity": capacity},
    }


A100X4_LABELS = {"pool": "gpu", "nvidia.com/gpu.count": "4", "nvidia.com/gpu.memory": "81920",
                 "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}


def _byo(selector: Obj) -> Obj:
    obj = _ws("phi-3-mini-4k-instruct", A100)
    del obj["resource"]["instanceType"]
    obj["resource"]["labelSelector"] = selector
    return obj


def test_a_label_selector_alone_picks_nodes_and_pods_get_their_gpus() -> None:
    selector = {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]},
                                     {"key": "spot", "operator": "DoesNotExist"}]}
    byo = ValidationOptions(require_instance_type=False)  # the byo provisioner's pass
    prep = prepare(_byo(selector), catalog(), options=byo)
    req = node_request(prep.ws, prep.resolved)
    assert (req.instance_type, req.gpus_per_node) == ("", 1)
    nodes = [
        _node("gpu-a", A100X4_LABELS, {"nvidia.com/gpu": "4"}),
        _node("gpu-spot", {**A100X4_LABELS, "spot": "true"}, {"nvidia.com/gpu": "4"}),
        _node("cpu-a", {"pool": "cpu"}, {}),
    ]
    snap = Snapshot(nodes=nodes, nodeclaims=[], now=datetime(2026, 1, 1, tzinfo=UTC))
    status = ByoProvisioner().ensure(req, snap, writer=None)  # type: ignore[arg-type]
    assert (status.ready, tuple(status.nodes)) == (True, ("gpu-a",))
    sized = on_nodes(prep, catalog(), [nodes[0]])
    assert (sized.resolved.gpus_per_node, sized.resolved.data_parallel_size) == (4, 4)
    objs = desired_objects(sized.ws, sized.resolved, ["gpu-a"])
    container = _workload(objs)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    terms = _workload(objs)["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    exprs = terms["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert {"key": "spot", "operator": "DoesNotExist"} in exprs["matchExpressions"]


def test_a_mig_workspace_requests_one_slice_and_fits_the_slice() -> None:
    obj = _byo({"matchLabels": {"pool": "mig"}})
    obj["resource"]["partition"] = {"mode": "mig", "profile": "3g.40gb"}
    prep = prepare(obj, catalog())
    assert prep.resolved.gpu_resource == "nvidia.com/mig-3g.40gb"
    assert prep.resolved.max_model_len == 4096  # the model's whole context fits the slice
    req = node_request(prep.ws, prep.resolved)
    mig_node = _node("mig-a", {"pool": "mig"}, {"nvidia.com/mig-3g.40gb": "2"})
    snap = Snapshot(nodes=[mig_node], nodeclaims=[], now=datetime(2026, 1, 1, tzinfo=UTC))
    status = ByoProvisioner().ensure(req, snap, writer=None)  # type: ignore[arg-type]
    assert status.ready, status.message
    objs = desired_objects(prep.ws, prep.resolved, ["mig-a"])
    container = _workload(objs)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/mig-3g.40gb": "1"}
    too_small = _byo({"matchLabels": {"pool": "mig"}})
    too_small["resource"]["partition"] = {"mode": "mig", "profile": "1g.5gb"}
    with pytest.raises(SpecError, match=r"does not fit one 1g\.5gb MIG slice"):
        prepare(too_small, catalog())


def test_the_transformers_section_reaches_the_cpu_server() -> None:
    user = {CONFIG_KEY: "transformers:\n  max-model-len: 2048\n  threads: 2\n"}
    prep = prepare(_ws("smollm2-135m-instruct", "Standard_D4s_v3", config="cfg"), catalog(),
                   user_config=user)
    assert prep.resolved.max_model_len == 2048
    args = _args(desired_objects(prep.ws, prep.resolved, ["cpu-1"], user_config=user))
    assert args[args.index("--max-model-len") + 1] == "2048"
    assert args.count("--max-model-len") == 1
    assert args[args.index("--threads") + 1] == "2"


def test_unknown_configmap_keys_are_a_clear_message_not_a_crash() -> None:
    bad_key = {CONFIG_KEY: "transformers:\n  max-batch: 4\n"}
    prep = prepare(_ws("smollm2-135m-instruct", "Standard_D4s_v3", config="cfg"), catalog(),
                   user_config=bad_key)
    with pytest.raises(ValueError, match="the transformers server has no setting 'max-batch'"):
        desired_objects(prep.ws, prep.resolved, ["cpu-1"], user_config=bad_key)
    with pytest.raises(SpecError) as caught:
        prepare(_ws("phi-3-mini-4k-instruct", A100, config="cfg"), catalog(),
                user_config={CONFIG_KEY: "vlm:\n  max-model-len: 2048\n"})
    assert caught.value.reason == "InvalidConfig"
    assert "unknown section(s) vlm" in caught.value.message


def test_bring_your_own_gpus_too_small_for_the_model_are_named_in_status() -> None:
    obj = _byo({"matchLabels": {"pool": "small"}})
    obj["inference"]["preset"]["name"] = "phi-3-medium-4k-instruct"  # 26 GiB of weights
    prep = prepare(obj, catalog(), options=ValidationOptions(require_instance_type=False))
    small = _node("t4", {"pool": "small", "nvidia.com/gpu.count": "1",
                         "nvidia.com/gpu.memory": "16384", "nvidia.com/gpu.product": "Tesla-T4"},
                  {"nvidia.com/gpu": "1"})
    sized = on_nodes(prep, catalog(), [small])
    assert sized.node_problem is not None
    reason, message = sized.node_problem
    assert reason == "InsufficientGPUMemory"
    assert "does not fit" in message
    fits = on_nodes(prep, catalog(), [_node("a100", A100X4_LABELS, {"nvidia.com/gpu": "4"})])
    assert fits.node_problem is None
