"""Serving shapes on the real local control plane: a labelSelector-only BYO Workspace on a
4-GPU node (data parallel, pods ask for the node's GPUs), a MIG Workspace (one slice), and
a Workspace with its own pod template each reach their workload and a Ready status that
shows the context and the layout (`kubectl get workspace -o wide`).

These phi-3 pods need vLLM's GPU image, which cannot run here: the simulated kubelet turns
them ready. The same three shapes serve SmolLM2 from the CPU runtime image in real pods on
real nodes in tests/e2e/test_operator_real.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from reconciler.kube import Kube
from rig.kapi import Kube as RigKube
from rig.kubelet import SimKubelet, always
from rig.nodes import create_gpu_node, delete_node
from tests.reconciler.helpers import conditions, create_ws, get_obj, get_ws, reconcile, unique, wait
from tests.support.cluster import Kubectl

pytestmark = pytest.mark.cluster
Obj = dict[str, Any]
READY = ("ResourceReady", "InferenceReady", "WorkspaceReady")


@pytest.fixture
def kube(api_client: client.ApiClient, workspace_crd: object) -> Kube:
    return Kube(api_client)


@pytest.fixture
def nodes(api_client: client.ApiClient) -> Iterator[dict[str, str]]:
    """A 4 x A100 node and a MIG node (two 3g.40gb slices), each with its own pool label."""
    made = {"a100": unique("a100"), "mig": unique("mig")}
    pools = {kind: unique(kind) for kind in made}
    create_gpu_node(api_client, made["a100"], instance_type="Standard_NC96ads_A100_v4", gpus=4,
                    gpu_product="NVIDIA-A100-SXM4-80GB", gpu_memory_mib=81920,
                    labels={"pool": pools["a100"]})
    create_gpu_node(api_client, made["mig"], instance_type="byo-mig", gpus=0,
                    labels={"pool": pools["mig"]})
    slices = {"nvidia.com/mig-3g.40gb": "2"}
    RigKube(api_client).patch(f"/api/v1/nodes/{made['mig']}/status",
                              {"status": {"capacity": slices, "allocatable": slices}}, "strategic")
    kubelet = SimKubelet(api_client, nodes=list(made.values()), policy=always("ready")).start()
    yield pools
    kubelet.stop()
    for name in made.values():
        delete_node(api_client, name)


def _ws(name: str, resource: Obj, inference: Obj) -> Obj:
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
            "metadata": {"name": name}, "resource": resource, "inference": inference}


def _ready(api: client.ApiClient, kube: Kube, namespace: str, name: str) -> Obj:
    def done() -> bool:
        reconcile(kube, namespace)
        conds = conditions(get_ws(api, namespace, name))
        return all(conds.get(t, {}).get("status") == "True" for t in READY)

    wait(done, 90, f"{name}: {', '.join(READY)} True")
    return get_ws(api, namespace, name)


def _gpu_limits(container: Obj) -> dict[str, str]:
    """The accelerator limits alone (CPU/memory limits come from the SKU, when known)."""
    limits: dict[str, str] = container["resources"]["limits"]
    return {k: v for k, v in limits.items() if k.startswith("nvidia.com/")}


def _container(kube: Kube, namespace: str, name: str) -> Obj:
    dep = get_obj(kube, "apps/v1", "Deployment", namespace, name)
    container: Obj = dep["spec"]["template"]["spec"]["containers"][0]
    return container


def test_a_label_selector_alone_serves_on_the_nodes_gpus_data_parallel(
    api_client: client.ApiClient, kube: Kube, namespace: str, nodes: dict[str, str],
    kubectl: Kubectl,
) -> None:
    selector = {"matchExpressions": [{"key": "pool", "operator": "In", "values": [nodes["a100"]]},
                                     {"key": "spot", "operator": "DoesNotExist"}]}
    create_ws(api_client, namespace, _ws("byo-phi", {"labelSelector": selector},
                                         {"preset": {"name": "phi-3-mini-4k-instruct"}}))
    ws = _ready(api_client, kube, namespace, "byo-phi")
    container = _container(kube, namespace, "byo-phi")
    assert _gpu_limits(container) == {"nvidia.com/gpu": "4"}
    args = container["command"]
    assert args[args.index("--data-parallel-size") + 1] == "4"
    assert (ws["status"]["maxModelLen"], ws["status"]["parallelism"]) == (
        4096, "data-parallel 4 x 1 GPU")
    header, row = kubectl("get", "workspace", "byo-phi", "-n", namespace,
                          "-o", "wide").stdout.splitlines()[:2]
    assert {"CONTEXT", "PARALLELISM"} <= set(header.split())
    assert " 4096 " in row, row
    assert " data-parallel 4 x 1 GPU " in row, row


def test_a_mig_workspace_runs_on_one_slice(
    api_client: client.ApiClient, kube: Kube, namespace: str, nodes: dict[str, str],
) -> None:
    resource = {"labelSelector": {"matchLabels": {"pool": nodes["mig"]}},
                "partition": {"mode": "mig", "profile": "3g.40gb"}}
    create_ws(api_client, namespace, _ws("mig-phi", resource,
                                         {"preset": {"name": "phi-3-mini-4k-instruct"}}))
    ws = _ready(api_client, kube, namespace, "mig-phi")
    container = _container(kube, namespace, "mig-phi")
    assert _gpu_limits(container) == {"nvidia.com/mig-3g.40gb": "1"}
    assert ws["status"]["parallelism"] == "1 GPU"
    assert ws["status"]["maxModelLen"] == 4096


def test_a_template_workspace_runs_its_own_pod(
    api_client: client.ApiClient, kube: Kube, namespace: str, nodes: dict[str, str],
) -> None:
    template = {"spec": {"containers": [{
        "name": "server", "image": "registry.example.com/custom:1",
        "ports": [{"containerPort": 8080}],
        "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}
    resource = {"instanceType": "Standard_NC96ads_A100_v4",
                "labelSelector": {"matchLabels": {"pool": nodes["a100"]}}}
    create_ws(api_client, namespace, _ws("custom", resource, {"template": template}))
    ws = _ready(api_client, kube, namespace, "custom")
    container = _container(kube, namespace, "custom")
    assert container["image"] == "registry.example.com/custom:1"
    service = get_obj(kube, "v1", "Service", namespace, "custom")
    assert [p["port"] for p in service["spec"]["ports"]] == [8080]
    assert "maxModelLen" not in ws["status"]
