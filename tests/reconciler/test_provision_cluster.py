"""Provisioners against the real local control plane, with SimKarpenter playing Karpenter."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from reconciler.expansion import node_request, prepare
from reconciler.kube import Kube
from reconciler.provision.base import NodeRequest, Snapshot
from reconciler.provision.gc import owner_of
from reconciler.provision.karpenter import NodeClaimProvisioner
from reconciler.provision.karpenter_claims import node_class_for, nodeclaim_for
from reconciler.reconcile import rfc3339
from reconciler.world import PassWriter
from rig.karpenter import SimKarpenter
from rig.nodes import create_gpu_node, delete_node
from tests.reconciler.helpers import catalog, conditions, create_ws, get_ws, phi3, reconcile, unique
from tests.reconciler.provision_helpers import request

pytestmark = pytest.mark.cluster
NC = "karpenter.sh/v1"
Obj = dict[str, Any]


@pytest.fixture
def kube(api_client: client.ApiClient, workspace_crd: object) -> Kube:
    return Kube(api_client)


@pytest.fixture
def sim(api_client: client.ApiClient, kube: Kube) -> Iterator[SimKarpenter]:
    karpenter = SimKarpenter(api_client, catalog=catalog())
    made_before = {c["metadata"]["name"] for c in kube.list_items(NC, "NodeClaim")}
    yield karpenter
    for claim in kube.list_items(NC, "NodeClaim"):  # leave no NodeClaim (and so no Node) behind
        if claim["metadata"]["name"] not in made_before:
            PassWriter(kube, rfc3339(datetime.now(UTC))).delete(
                NC, "NodeClaim", claim["metadata"]["name"]
            )
    karpenter.step()


def snapshot(kube: Kube, now: datetime | None = None) -> Snapshot:
    return Snapshot(
        nodes=kube.list_items("v1", "Node"),
        nodeclaims=kube.list_items(NC, "NodeClaim"),
        now=now or datetime.now(UTC),
    )


def claims_for(kube: Kube, namespace: str, name: str) -> list[Obj]:
    sel = f"kaito.sh/workspace={name},kaito.sh/workspacenamespace={namespace}"
    return kube.list_items(NC, "NodeClaim", None, sel)


def seeded(api: client.ApiClient, namespace: str, name: str, label: str) -> NodeRequest:
    stored = create_ws(api, namespace, phi3(name, label))
    prep = prepare(stored, catalog())
    return node_request(prep.ws, prep.resolved)


def test_seed_workspace_gets_one_nodeclaim_then_a_ready_node_then_nothing(
    api_client: client.ApiClient, kube: Kube, namespace: str, sim: SimKarpenter
) -> None:
    req = seeded(api_client, namespace, "workspace-phi-3-mini", unique("phi"))
    prov, writer = NodeClaimProvisioner(), PassWriter(kube, rfc3339(datetime.now(UTC)))
    stale = snapshot(kube)
    first = prov.ensure(req, stale, writer)
    prov.ensure(req, stale, writer)  # a reconciler killed before its status write, run again
    claims = claims_for(kube, namespace, req.name)
    assert len(claims) == 1, claims
    claim = claims[0]
    assert not first.ready
    assert claim["metadata"]["labels"]["karpenter.sh/nodepool"] == "kaito"
    assert claim["metadata"]["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}
    assert claim["spec"]["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert claim["spec"]["resources"]["requests"]["storage"] == f"{req.storage_gib}Gi"
    assert {r["key"]: r["values"] for r in claim["spec"]["requirements"]}[
        "node.kubernetes.io/instance-type"
    ] == ["Standard_NC6s_v3"]
    launched = f"launched {claim['metadata']['name']} -> aks-{claim['metadata']['name']}"
    assert launched in sim.step()
    status = prov.ensure(req, snapshot(kube), writer)
    assert status.ready, status.message
    node = kube.request("GET", f"/api/v1/nodes/aks-{claim['metadata']['name']}")
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert node["spec"]["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert node["metadata"]["labels"]["kaito.sh/workspace"] == req.name
    assert len(claims_for(kube, namespace, req.name)) == 1
    reconcile(kube, namespace, "karpenter")
    resource = conditions(get_ws(api_client, namespace, req.name))["ResourceReady"]
    assert resource["status"] == "True", resource
    client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
        "kaito.sh", "v1beta1", namespace, "workspaces", req.name
    )
    reconcile(kube, namespace, "karpenter")
    reconcile(kube, namespace, "karpenter")
    assert claims_for(kube, namespace, req.name) == []
    sim.step()
    assert f"aks-{claim['metadata']['name']}" not in {
        n["metadata"]["name"] for n in kube.list_items("v1", "Node")
    }


def test_a_quota_failure_is_shown_in_the_workspace_status_and_an_event(
    api_client: client.ApiClient, kube: Kube, namespace: str, sim: SimKarpenter
) -> None:
    sim.fail("Standard_NC6s_v3")
    create_ws(api_client, namespace, phi3("workspace-phi-3-mini", unique("phi")))
    reconcile(kube, namespace, "karpenter")
    (claim,) = claims_for(kube, namespace, "workspace-phi-3-mini")
    assert f"failed {claim['metadata']['name']}" in sim.step()
    reconcile(kube, namespace, "karpenter")
    resource = conditions(get_ws(api_client, namespace, "workspace-phi-3-mini"))["ResourceReady"]
    assert resource["status"] == "False"
    assert "exceeding approved standardNCSv3Family Cores quota" in resource["message"]
    events = client.CoreV1Api(api_client).list_namespaced_event(namespace).items
    assert any("standardNCSv3Family Cores quota" in (e.message or "") for e in events), [
        (e.reason, e.message) for e in events
    ]


def test_sweep_deletes_orphans_after_the_grace_period_and_never_foreign_claims(
    api_client: client.ApiClient, kube: Kube, namespace: str, sim: SimKarpenter
) -> None:
    writer, azure = PassWriter(kube, rfc3339(datetime.now(UTC))), node_class_for("azure")
    orphan = nodeclaim_for(
        request(namespace=namespace, name=unique("gone")), 0, node_class=azure, cloud="azure"
    )
    foreign = nodeclaim_for(
        request(namespace=namespace, name=unique("x")), 0, node_class=azure, cloud="azure"
    )
    foreign["metadata"] = {
        "name": unique("default"),
        "labels": {"karpenter.sh/nodepool": "default"},
    }
    for obj in (orphan, foreign):
        writer.create(obj)
    snap = snapshot(kube)
    orphan_owner = (namespace, orphan["metadata"]["labels"]["kaito.sh/workspace"])
    live = {o for c in snap.nodeclaims if (o := owner_of(c["metadata"].get("labels")))} - {
        orphan_owner
    }
    prov = NodeClaimProvisioner(grace=timedelta(minutes=5))
    assert prov.sweep(live, snap, writer) == []  # too young
    later = snapshot(kube, datetime.now(UTC) + timedelta(minutes=6))
    assert prov.sweep(live, later, writer) == [orphan["metadata"]["name"]]
    names = {c["metadata"]["name"] for c in kube.list_items(NC, "NodeClaim")}
    assert orphan["metadata"]["name"] not in names
    assert foreign["metadata"]["name"] in names


def test_two_labelled_gpu_nodes_are_used_and_nothing_is_provisioned(
    api_client: client.ApiClient, kube: Kube, namespace: str
) -> None:
    label, nodes = unique("phi"), [unique("byo"), unique("byo")]
    for name in nodes:
        create_gpu_node(
            api_client,
            name,
            instance_type="Standard_NC6s_v3",
            gpus=1,
            gpu_product="Tesla-V100-PCIE-16GB",
            labels={"apps": label},
        )
    try:
        create_ws(api_client, namespace, phi3("workspace-phi-3-mini", label))
        reconcile(kube, namespace, "karpenter")
        assert claims_for(kube, namespace, "workspace-phi-3-mini") == []
        resource = conditions(get_ws(api_client, namespace, "workspace-phi-3-mini"))[
            "ResourceReady"
        ]
        assert resource["status"] == "True", resource
        dep = kube.request(
            "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/workspace-phi-3-mini"
        )
        affinity = dep["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
        terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        hosts = {
            v
            for e in terms[0]["matchExpressions"]
            if e["key"] == "kubernetes.io/hostname"
            for v in e["values"]
        }
        assert hosts == set(nodes)
    finally:
        for name in nodes:
            delete_node(api_client, name)
