"""The reconcile pass against the real local control plane (issue D's acceptance).

The V100 pods need vLLM's GPU image, which cannot run here: the simulated kubelet turns
them ready (real pods: tests/e2e).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from reconciler.kube import Kube
from rig.kubelet import SimKubelet, always
from rig.nodes import create_gpu_node, delete_node
from tests.reconciler.helpers import (
    conditions,
    create_ws,
    get_obj,
    get_ws,
    phi3,
    reconcile,
    resource_versions,
    unique,
    wait,
)
from tests.support.cluster import Kubectl

pytestmark = pytest.mark.cluster


@pytest.fixture
def kube(api_client: client.ApiClient, workspace_crd: object) -> Kube:
    return Kube(api_client)


@pytest.fixture
def gpu_node(api_client: client.ApiClient) -> Iterator[tuple[str, str]]:
    """One simulated V100 node labelled for one test, served by a simulated kubelet."""
    name, label = unique("gpu"), unique("phi")
    create_gpu_node(api_client, name, instance_type="Standard_NC6s_v3", gpus=1,
                    gpu_product="Tesla-V100-PCIE-16GB", labels={"apps": label})
    kubelet = SimKubelet(api_client, nodes=[name], policy=always("ready")).start()
    yield name, label
    kubelet.stop()
    delete_node(api_client, name)


def test_byo_workspace_becomes_ready_and_a_second_pass_writes_nothing(
    api_client: client.ApiClient, kube: Kube, namespace: str, gpu_node: tuple[str, str],
    kubectl: Kubectl,
) -> None:
    node, label = gpu_node
    create_ws(api_client, namespace, phi3("workspace-phi-3-mini", label))
    first = reconcile(kube, namespace)
    assert (first.created, first.failed) == (3, 0), first.line()
    dep = get_obj(kube, "apps/v1", "Deployment", namespace, "workspace-phi-3-mini")
    assert "argocd.argoproj.io/instance" not in dep["metadata"]["labels"]
    affinity = dep["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    exprs = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert {(e["key"], tuple(e["values"])) for e in exprs["matchExpressions"]} == {
        ("apps", (label,)), ("kubernetes.io/hostname", (node,))}

    def ready() -> bool:
        reconcile(kube, namespace)
        conds = conditions(get_ws(api_client, namespace, "workspace-phi-3-mini"))
        return all(conds.get(t, {}).get("status") == "True"
                   for t in ("ResourceReady", "InferenceReady", "WorkspaceReady"))

    wait(ready, 60, "ResourceReady, InferenceReady and WorkspaceReady True")
    table = kubectl("get", "workspace", "-n", namespace).stdout.split()
    assert table[:6] == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY",
                         "WORKSPACEREADY", "AGE"]
    assert table[6:11] == ["workspace-phi-3-mini", "Standard_NC6s_v3", "True", "True", "True"]
    startup = get_ws(api_client, namespace, "workspace-phi-3-mini")["status"]["startup"]
    assert [s["step"] for s in startup] == ["Created", "NodeReady", "PodScheduled",
                                           "ImagePulled", "ModelStarted", "EngineReady"]
    assert all(s["seconds"] >= 0 and s["time"] for s in startup)
    before = resource_versions(kube, namespace)
    converged = reconcile(kube, namespace)
    assert converged.writes == 0, converged.line()
    assert converged.calls <= 8, converged.line()
    assert resource_versions(kube, namespace) == before


def test_children_edited_by_hand_are_restored_by_the_next_pass(
    api_client: client.ApiClient, kube: Kube, namespace: str, gpu_node: tuple[str, str],
) -> None:
    _node, label = gpu_node
    create_ws(api_client, namespace, phi3("ws-edit", label))
    reconcile(kube, namespace)
    apps = client.AppsV1Api(api_client)
    apps.patch_namespaced_deployment_scale("ws-edit", namespace, {"spec": {"replicas": 3}})
    kube.delete("v1", "Service", "ws-edit", namespace)  # 1.20 answers a Status the client rejects
    summary = reconcile(kube, namespace)
    assert (summary.created, summary.updated) == (1, 1), summary.line()
    assert get_obj(kube, "apps/v1", "Deployment", namespace, "ws-edit")["spec"]["replicas"] == 1
    svc = get_obj(kube, "v1", "Service", namespace, "ws-edit")
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(80, 5000),
                                                                             (29500, 29500)]


def test_an_impossible_workspace_gets_a_false_condition_and_the_others_go_on(
    api_client: client.ApiClient, kube: Kube, namespace: str, gpu_node: tuple[str, str],
) -> None:
    _node, label = gpu_node
    bad = phi3("ws-bad", label)
    bad["inference"]["preset"]["name"] = "no-such-model"
    create_ws(api_client, namespace, bad)
    create_ws(api_client, namespace, phi3("ws-good", label))
    summary = reconcile(kube, namespace)
    assert summary.failed == 1, summary.line()
    conds = conditions(get_ws(api_client, namespace, "ws-bad"))
    assert conds["WorkspaceReady"]["status"] == "False"
    assert conds["ResourceReady"]["reason"] == "InvalidSpec"
    assert "no-such-model" in conds["ResourceReady"]["message"]
    assert client.AppsV1Api(api_client).read_namespaced_deployment("ws-good", namespace)
    events = client.CoreV1Api(api_client).list_namespaced_event(namespace).items
    assert any(e.reason == "InvalidSpec" and e.involved_object.name == "ws-bad" for e in events)


def test_no_matching_nodes_is_said_in_resource_ready(
    api_client: client.ApiClient, kube: Kube, namespace: str,
) -> None:
    create_ws(api_client, namespace, phi3("ws-alone", unique("nowhere")))
    summary = reconcile(kube, namespace)
    assert summary.created == 0, summary.line()
    conds = conditions(get_ws(api_client, namespace, "ws-alone"))
    assert conds["ResourceReady"]["status"] == "False"
    assert conds["ResourceReady"]["reason"] == "NoMatchingNodes"
    assert conds["InferenceReady"]["reason"] == "WaitingForNodes"
