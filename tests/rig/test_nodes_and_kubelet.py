"""Simulated GPU nodes, the real scheduler, and the simulated kubelet working together."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient

from rig.kapi import Kube, KubeApiError
from rig.kubelet import SimKubelet
from rig.nodes import NOT_READY_TAINT, create_gpu_node, delete_node, set_node_ready
from rig.podstatus import Action
from tests.support.probes import wait_for

pytestmark = pytest.mark.cluster
GPU_TAINT = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}


@pytest.fixture
def node_names(api_client: ApiClient) -> Iterator[list[str]]:
    """Nodes a test made (cluster-scoped, shared with parallel sessions): deleted afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        delete_node(api_client, name)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _gpu_pod(name: str, app: str, gpus: int) -> dict[str, Any]:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "apps", "operator": "In", "values": [app]}]}]}}}
    return {"metadata": {"name": name}, "spec": {
        "affinity": affinity, "tolerations": [{"key": "sku", "operator": "Equal", "value": "gpu",
                                               "effect": "NoSchedule"}],
        "containers": [{"name": "model", "image": "model:1",
                        "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]}}


def test_a_simulated_node_looks_like_a_provisioned_gpu_node(
        api_client: ApiClient, node_names: list[str]) -> None:
    name = _unique("gpu")
    node_names.append(name)
    node = create_gpu_node(api_client, name, instance_type="Standard_NC24ads_A100_v4", gpus=1,
                           labels={"apps": "x"}, taints=[GPU_TAINT])
    labels = node["metadata"]["labels"]
    assert labels["node.kubernetes.io/instance-type"] == "Standard_NC24ads_A100_v4"
    assert labels["nvidia.com/gpu.memory"] == "81920"
    assert labels["apps"] == "x"
    assert labels["topology.kubernetes.io/zone"] == "eastus-1"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    assert [t["key"] for t in node["spec"]["taints"]] == ["sku"]
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "True"
    set_node_ready(api_client, name, False)
    again = Kube(api_client).get(f"/api/v1/nodes/{name}")
    assert {c["type"]: c["status"] for c in again["status"]["conditions"]}["Ready"] == "False"
    assert NOT_READY_TAINT in [t["key"] for t in again["spec"]["taints"]]
    set_node_ready(api_client, name, True)
    back = Kube(api_client).get(f"/api/v1/nodes/{name}")
    assert [t["key"] for t in back["spec"]["taints"]] == ["sku"]


def test_the_scheduler_binds_a_gpu_pod_only_to_the_matching_node(
        api_client: ApiClient, namespace: str, node_names: list[str]) -> None:
    app = _unique("app")
    match, no_gpu, no_label = _unique("match"), _unique("nogpu"), _unique("nolabel")
    node_names.extend([match, no_gpu, no_label])
    create_gpu_node(api_client, match, instance_type="Standard_NC6s_v3", gpus=1,
                    gpu_product="Tesla-V100", labels={"apps": app}, taints=[GPU_TAINT])
    create_gpu_node(api_client, no_gpu, instance_type="Standard_D4s_v3", gpus=0,
                    labels={"apps": app}, taints=[GPU_TAINT])
    create_gpu_node(api_client, no_label, instance_type="Standard_NC6s_v3", gpus=1,
                    taints=[GPU_TAINT])
    kube, pods = Kube(api_client), f"/api/v1/namespaces/{namespace}/pods"
    kube.create(pods, _gpu_pod("fits", app, 1))
    kube.create(pods, _gpu_pod("too-big", app, 2))
    bound = wait_for("the scheduler to bind the GPU pod",
                  lambda: kube.get(f"{pods}/fits")["spec"].get("nodeName"))
    assert bound == match

    def unschedulable() -> str:
        conds = kube.get(f"{pods}/too-big").get("status", {}).get("conditions") or []
        return next((c["message"] for c in conds if c.get("reason") == "Unschedulable"), "")

    message = wait_for("the 2-GPU pod to be reported unschedulable", unschedulable)
    assert "nvidia.com/gpu" in message


def _deployment(name: str, node: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {"metadata": {"name": name}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{"name": "main", "image": "img:1"}]}}}}


def test_the_sim_kubelet_makes_a_deployment_available_and_confirms_deletion(
        api_client: ApiClient, namespace: str, node_names: list[str]) -> None:
    node = _unique("cpu")
    node_names.append(node)
    create_gpu_node(api_client, node, instance_type="Standard_D4s_v3", gpus=0)
    kube = Kube(api_client)
    deployments = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    with SimKubelet(api_client, [node]) as kubelet:
        kube.create(deployments, _deployment("web", node, 2))
        wait_for("2 available replicas", lambda: (
            kube.get(f"{deployments}/web").get("status", {}).get("availableReplicas") == 2))
        kube.delete(f"{deployments}/web")
        wait_for("the pods to be gone",
              lambda: not kube.items(f"/api/v1/namespaces/{namespace}/pods"))
    assert kubelet.errors == []


@pytest.mark.parametrize(("action", "phase", "expect"), [
    pytest.param(Action("imagepull"), "Pending", "ImagePullBackOff", id="image-pull"),
    pytest.param(Action("oom"), "Running", "OOMKilled", id="oom"),
    pytest.param(Action("crash", message="CUDA out of memory"), "Running", "CUDA out of memory",
                 id="crash-with-log-line"),
    pytest.param(Action("fail", exit_code=2), "Failed", "Error", id="job-fails"),
])
def test_failure_actions_are_reported_the_way_a_kubelet_reports_them(
        api_client: ApiClient, namespace: str, node_names: list[str],
        action: Action, phase: str, expect: str) -> None:
    node = _unique("cpu")
    node_names.append(node)
    create_gpu_node(api_client, node, instance_type="Standard_D4s_v3", gpus=0)
    kube, pods = Kube(api_client), f"/api/v1/namespaces/{namespace}/pods"
    pod = {"metadata": {"name": "p"}, "spec": {
        "nodeName": node, "restartPolicy": "Never" if action.kind == "fail" else "Always",
        "containers": [{"name": "main", "image": "img:1"}]}}
    with SimKubelet(api_client, [node], policy=lambda _pod: action):
        kube.create(pods, pod)

        def reached() -> dict[str, Any] | None:
            status: dict[str, Any] = kube.get(f"{pods}/p").get("status") or {}
            done = status.get("phase") == phase and "containerStatuses" in status
            return status if done else None

        status = wait_for(f"phase {phase}", reached)
    assert expect in str(status["containerStatuses"][0])


def test_the_sim_kubelet_rejects_an_unknown_action() -> None:
    with pytest.raises(ValueError, match="one of ready"):
        Action("explode")


def test_deleting_a_missing_node_reports_false(api_client: ApiClient) -> None:
    assert delete_node(api_client, _unique("never")) is False
    with pytest.raises(KubeApiError) as info:
        Kube(api_client).get(f"/api/v1/nodes/{_unique('never')}")
    assert info.value.status == 404


def test_a_policy_error_on_one_pod_is_recorded_and_the_others_are_still_served(
        api_client: ApiClient, namespace: str, node_names: list[str]) -> None:
    node = _unique("cpu")
    node_names.append(node)
    create_gpu_node(api_client, node, instance_type="Standard_D4s_v3", gpus=0)
    kube, pods = Kube(api_client), f"/api/v1/namespaces/{namespace}/pods"

    def policy(pod: dict[str, Any]) -> str:
        return "explode" if pod["metadata"]["name"] == "bad" else "ready"

    with SimKubelet(api_client, [node], policy=policy) as kubelet:
        for name in ("bad", "good"):
            kube.create(pods, {"metadata": {"name": name}, "spec": {
                "nodeName": node, "containers": [{"name": "main", "image": "img:1"}]}})
        wait_for("the good pod to run",
              lambda: kube.get(f"{pods}/good").get("status", {}).get("phase") == "Running")
    assert kube.get(f"{pods}/bad")["status"]["phase"] == "Pending"
    assert any("bad" in e and "unknown kubelet action 'explode'" in e for e in kubelet.errors)
