"""The simulated Karpenter with real nodes: a NodeClaim becomes a real kubelet node.

Checks the claim's name, labels, taints and instance type (GPU count from the catalog)
reach a real Node that the real scheduler and kubelet use for a GPU pod; that the "no
quota" refusal stays; and that deleting the claim stops the kubelet and dockerd, removes
the node's bridge and containers, and deletes the Node.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient

from presets.catalog import load_catalog
from rig import procs
from rig.cluster import ControlPlane
from rig.kapi import Kube
from rig.karpenter import MADE_BY, SimKarpenter
from rig.realnode import PAUSE_IMAGE, RealNodes
from tests.support.probes import wait_for

pytestmark = pytest.mark.cluster
CLAIMS = "/apis/karpenter.sh/v1/nodeclaims"
NO_QUOTA_SKU = "Standard_NC24ads_A100_v4"


# A node pool of this module's own: the shared test cluster holds other sessions' claims,
# which this Karpenter must not answer with real nodes.
POOL = f"kaito-{uuid.uuid4().hex[:6]}"


def claim(name: str, sku: str, app: str) -> dict[str, Any]:
    return {"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim", "metadata": {
        "name": name, "labels": {"karpenter.sh/nodepool": POOL, "apps": app,
                                 "kaito.sh/workspace": "ws", "kaito.sh/workspacenamespace": "ns"}},
        "spec": {"requirements": [{"key": "node.kubernetes.io/instance-type", "operator": "In",
                                   "values": [sku]}],
                 "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
                 "nodeClassRef": {"group": "karpenter.azure.com", "kind": "AKSNodeClass",
                                  "name": "image-family-ubuntu"},
                 "resources": {"requests": {"storage": "30Gi"}}}}


@pytest.fixture
def made() -> list[str]:
    """Names of the NodeClaims a test created (deleted afterwards)."""
    return []


@pytest.fixture
def karpenter(api_client: ApiClient, control_plane: ControlPlane, kube: Kube,
              made: list[str]) -> Iterator[SimKarpenter]:
    sim = SimKarpenter(api_client, catalog=load_catalog(), nodepool=POOL,
                       real_nodes=RealNodes(control_plane.state_dir))
    sim.fail(NO_QUOTA_SKU)
    yield sim
    for name in made:
        kube.delete(f"{CLAIMS}/{name}", missing_ok=True)
    sim.step()  # stops the real nodes of the claims just deleted


def conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}


def test_a_nodeclaim_becomes_a_real_node_and_its_deletion_stops_it(
        kube: Kube, karpenter: SimKarpenter, made: list[str], namespace: str) -> None:
    name, app = f"kaito-{uuid.uuid4().hex[:6]}", f"app-{uuid.uuid4().hex[:6]}"
    kube.create(CLAIMS, claim(name, "Standard_NC12s_v3", app))
    made.append(name)
    actions = karpenter.step()
    assert f"launched {name} -> aks-{name}" in actions, (actions, karpenter.errors)
    got = kube.get(f"{CLAIMS}/{name}")
    assert conditions(got) == {"Launched": "True", "Registered": "True",
                               "Initialized": "True", "Ready": "True"}
    node_name = got["status"]["nodeName"]
    node = kube.get(f"/api/v1/nodes/{node_name}")
    labels = node["metadata"]["labels"]
    assert labels["node.kubernetes.io/instance-type"] == "Standard_NC12s_v3"
    assert labels["apps"] == app
    assert labels["karpenter.sh/nodepool"] == POOL
    assert labels["nvidia.com/gpu.count"] == "2"
    assert node["metadata"]["annotations"][MADE_BY] == name
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.20.2"
    assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in node["spec"]["taints"]

    pod = {"metadata": {"name": "gpu-pod"}, "spec": {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "apps", "operator": "In", "values": [app]}]}]}}},
        "tolerations": [{"key": "sku", "operator": "Equal", "value": "gpu",
                         "effect": "NoSchedule"}],
        "containers": [{"name": "main", "image": PAUSE_IMAGE, "imagePullPolicy": "Never",
                        "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}}
    kube.create(f"/api/v1/namespaces/{namespace}/pods", pod)
    path = f"/api/v1/namespaces/{namespace}/pods/gpu-pod"
    wait_for("the GPU pod Running on the real node",
             lambda: kube.get(path)["status"].get("phase") == "Running", timeout=60)
    assert kube.get(path)["spec"]["nodeName"] == node_name

    rec = karpenter.real_nodes.record(node_name) if karpenter.real_nodes else None
    assert rec is not None
    kubelet_pid, bridge = int(rec["pids"]["kubelet"]), rec["bridge"]
    kube.delete(f"{CLAIMS}/{name}")
    actions = karpenter.step()
    assert f"removed node {node_name}" in actions
    assert karpenter.real_nodes is not None
    assert node_name not in karpenter.real_nodes.names()
    assert not Path(f"/proc/{kubelet_pid}").exists() or not procs.cmdline(kubelet_pid)
    assert not Path(f"/sys/class/net/{bridge}").exists()
    nodes = [n["metadata"]["name"] for n in kube.items("/api/v1/nodes")]
    assert node_name not in nodes


def test_no_quota_still_fails_the_claim_without_starting_a_node(
        kube: Kube, karpenter: SimKarpenter, made: list[str]) -> None:
    name = f"kaito-{uuid.uuid4().hex[:6]}"
    kube.create(CLAIMS, claim(name, NO_QUOTA_SKU, "nope"))
    made.append(name)
    assert karpenter.real_nodes is not None
    before = karpenter.real_nodes.names()
    assert karpenter.step() == [f"failed {name}"]
    launched = next(c for c in kube.get(f"{CLAIMS}/{name}")["status"]["conditions"]
                    if c["type"] == "Launched")
    assert launched["status"] == "False"
    assert launched["reason"] == "LaunchFailed"
    assert "exceeding approved standardNCSv3Family Cores quota" in launched["message"]
    assert karpenter.real_nodes.names() == before
