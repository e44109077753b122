"""Seed phi-3 with the default (Karpenter) provisioner: NodeClaim, node, ready, deleted.

The phi-3 pod needs vLLM's GPU image, which cannot run here: the simulated kubelet turns
it ready (the same flow with real nodes and real pods: tests/e2e/test_operator_real.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from reconciler.kube import Kube
from rig.kubelet import SimKubelet, always
from rig.nodes import create_gpu_node, delete_node
from tests.reconciler.helpers import conditions, create_ws, get_ws, phi3, reconcile, unique, wait

pytestmark = pytest.mark.cluster


def _claims(kube: Kube, ws: str, ns: str) -> list[dict[str, Any]]:
    sel = f"kaito.sh/workspace={ws},kaito.sh/workspacenamespace={ns}"
    return kube.list_items("karpenter.sh/v1", "NodeClaim", None, sel)


def _launch(api: client.ApiClient, kube: Kube, claim: dict[str, Any]) -> str:
    """Play Karpenter for one claim: register its node, mark it launched and ready."""
    node = f"aks-{claim['metadata']['name']}"
    labels = dict(claim["metadata"]["labels"])
    create_gpu_node(api, node, instance_type="Standard_NC24ads_A100_v4", gpus=1, labels=labels,
                    taints=claim["spec"]["taints"])
    conds = [{"type": t, "status": "True", "reason": t, "message": t,
              "lastTransitionTime": "2026-01-01T00:00:00Z"}
             for t in ("Launched", "Registered", "Initialized", "Ready")]
    kube.merge_patch(claim, {"status": {"nodeName": node, "conditions": conds}}, "status")
    return node


def test_phi3_gets_a_nodeclaim_becomes_ready_and_deletion_removes_everything(
    api_client: client.ApiClient, namespace: str, workspace_crd: object,
) -> None:
    kube = Kube(api_client)
    name = "workspace-phi-3-mini"
    create_ws(api_client, namespace, phi3(name, unique("phi"),
                                          instance_type="Standard_NC24ads_A100_v4"))
    first = reconcile(kube, namespace, "karpenter")
    claims = _claims(kube, name, namespace)
    assert len(claims) == 1, first.line()
    assert claims[0]["spec"]["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    node = _launch(api_client, kube, claims[0])
    kubelet = SimKubelet(api_client, nodes=[node], policy=always("ready")).start()
    try:

        def ready() -> bool:
            reconcile(kube, namespace, "karpenter")
            conds = conditions(get_ws(api_client, namespace, name))
            return conds.get("WorkspaceReady", {}).get("status") == "True"

        wait(ready, 60, "WorkspaceReady True with a Karpenter node")
        assert len(_claims(kube, name, namespace)) == 1  # never a second claim
        client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
            "kaito.sh", "v1beta1", namespace, "workspaces", name)

        def gone() -> bool:
            reconcile(kube, namespace, "karpenter")
            items = kube.list_items("kaito.sh/v1beta1", "Workspace", namespace)
            deps = client.AppsV1Api(api_client).list_namespaced_deployment(namespace).items
            return not items and not deps and not _claims(kube, name, namespace)

        # the garbage collector removes the Deployment; under load it can take a while
        wait(gone, 120, "the Workspace, its Deployment and its NodeClaim to be gone", 1.0)
    finally:
        kubelet.stop()
        delete_node(api_client, node)  # Karpenter's part once the claim is gone
