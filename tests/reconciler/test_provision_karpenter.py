"""NodeClaim provisioner, pure: names, the contract, condition surfacing, GC, no duplicates."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from reconciler.provision.base import Obj, Snapshot
from reconciler.provision.karpenter import NodeClaimProvisioner
from reconciler.provision.karpenter_claims import claim_name, node_class_for, nodeclaim_for
from tests.reconciler.provision_helpers import NOW, MemoryWriter, launched, node, request

QUOTA = (
    "creating instance, Operation could not be completed as it results in exceeding approved "
    "standardNCSv3Family Cores quota. Additional details - Deployment Model: Resource Manager, "
    "Location: eastus, Current Limit: 0, Current Usage: 0, Additional Required: 6"
)


def with_conditions(claim: Obj, *conds: tuple[str, str, str, str]) -> Obj:
    out = dict(claim)
    out["status"] = {
        "conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conds]
    }
    return out


def test_names_are_short_lowercase_stable_and_distinct() -> None:
    first = claim_name("default", "workspace-phi-3-mini", "uid-1", 0)
    assert re.fullmatch(r"[a-z][a-z0-9]{0,10}", first)
    assert len(first) == 11
    assert first == claim_name("default", "workspace-phi-3-mini", "uid-1", 0)
    variants = {
        claim_name("other", "workspace-phi-3-mini", "uid-1", 0),
        claim_name("default", "workspace-phi-3", "uid-1", 0),
        claim_name("default", "workspace-phi-3-mini", "uid-2", 0),
        claim_name("default", "workspace-phi-3-mini", "uid-1", 1),
    }
    assert first not in variants
    assert len(variants) == 4
    many = {claim_name(f"ns{i % 7}", f"ws-{i}", f"uid-{i}", 0) for i in range(5000)}
    assert len(many) == 5000


def test_nodeclaim_follows_the_kaito_contract() -> None:
    req = request(label_selector={"apps": "phi-3", "kaito.sh/workspace": "spoofed"})
    claim = nodeclaim_for(req, 0, node_class=node_class_for("azure"), cloud="azure")
    assert claim == {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {
            "name": claim_name(req.namespace, req.name, req.uid, 0),
            "labels": {
                "apps": "phi-3",
                "kaito.sh/workspace": "workspace-phi-3-mini",
                "kaito.sh/workspacenamespace": "default",
                "karpenter.sh/nodepool": "kaito",
            },
            "annotations": {"karpenter.sh/do-not-disrupt": "true"},
        },
        "spec": {
            "requirements": [
                {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["kaito"]},
                {
                    "key": "node.kubernetes.io/instance-type",
                    "operator": "In",
                    "values": ["Standard_NC6s_v3"],
                },
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                {
                    "key": "karpenter.azure.com/sku-name",
                    "operator": "In",
                    "values": ["Standard_NC6s_v3"],
                },
            ],
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            "nodeClassRef": {"group": "kaito.sh", "kind": "KaitoNodeClass", "name": "default"},
            "resources": {"requests": {"storage": "87Gi"}},
        },
    }


def test_node_class_is_never_empty() -> None:
    aws = nodeclaim_for(request(), 0, node_class=node_class_for("aws"), cloud="aws")
    assert aws["spec"]["nodeClassRef"]["kind"] == "EC2NodeClass"
    assert len(aws["spec"]["requirements"]) == 3
    with pytest.raises(ValueError, match="no default NodeClass"):
        node_class_for("arc")
    assert node_class_for("arc", group="example.com", kind="ArcNodeClass").kind == "ArcNodeClass"


def test_first_pass_creates_exactly_one_nodeclaim_and_an_event() -> None:
    writer = MemoryWriter()
    status = NodeClaimProvisioner().ensure(request(), Snapshot(now=NOW), writer)
    assert [c["metadata"]["name"] for c in writer.nodeclaims()] == [
        claim_name("default", "workspace-phi-3-mini", request().uid, 0)
    ]
    assert not status.ready
    assert status.reason == "NodeClaimNotReady"
    assert writer.events[0][1] == "NodeClaimCreated"


def test_a_killed_reconciler_never_creates_a_second_nodeclaim() -> None:
    prov, writer = NodeClaimProvisioner(), MemoryWriter()
    stale = Snapshot(now=NOW)  # listed before the first create: the status write never happened
    prov.ensure(request(), stale, writer)
    prov.ensure(request(), stale, writer)
    assert len(writer.nodeclaims()) == 1
    fresh = Snapshot(nodeclaims=writer.nodeclaims(), now=NOW)
    before = len(writer.creates)
    NodeClaimProvisioner().ensure(request(), fresh, writer)
    assert len(writer.creates) == before  # converged: zero writes


def test_launch_failure_surfaces_the_providers_quota_message() -> None:
    claim = nodeclaim_for(request(), 0, node_class=node_class_for("azure"), cloud="azure")
    failed = with_conditions(claim, ("Launched", "False", "LaunchFailed", QUOTA))
    status = NodeClaimProvisioner().ensure(
        request(), Snapshot(nodeclaims=[failed], now=NOW), MemoryWriter()
    )
    assert not status.ready
    assert status.reason == "LaunchFailed"
    assert "exceeding approved standardNCSv3Family Cores quota" in status.message
    assert claim["metadata"]["name"] in status.message


def test_a_real_error_wins_over_waiting_and_long_messages_are_cut() -> None:
    req = request(count=2)
    first = nodeclaim_for(req, 0, node_class=node_class_for("azure"), cloud="azure")
    second = nodeclaim_for(req, 1, node_class=node_class_for("azure"), cloud="azure")
    waiting = with_conditions(first, ("Launched", "Unknown", "AwaitingReconciliation", ""))
    broken = with_conditions(
        second,
        ("Launched", "True", "Launched", ""),
        ("Registered", "False", "RegistrationFailed", "node never joined " + "x" * 2000),
    )
    status = NodeClaimProvisioner().ensure(
        req, Snapshot(nodeclaims=[waiting, broken], now=NOW), MemoryWriter()
    )
    assert status.reason == "RegistrationFailed"
    assert len(status.message) < 700
    assert status.message.endswith("...")


@pytest.mark.parametrize(
    ("gpus_per_node", "capacity", "ready", "reason"),
    [
        pytest.param(1, 1, True, "NodesReady", id="gpu-node-with-device-plugin"),
        pytest.param(1, 0, False, "GPUNotReady", id="device-plugin-not-up"),
        pytest.param(0, 0, True, "NodesReady", id="cpu-only-instance-type"),
    ],
)
def test_a_node_counts_only_when_ready_with_gpu_capacity(
    gpus_per_node: int, capacity: int, ready: bool, reason: str
) -> None:
    req = request(gpus_per_node=gpus_per_node)
    claim = nodeclaim_for(req, 0, node_class=node_class_for("azure"), cloud="azure")
    snap = Snapshot(
        nodeclaims=[launched(claim, "aks-ws-0")], nodes=[node("aks-ws-0", gpus=capacity)], now=NOW
    )
    status = NodeClaimProvisioner().ensure(req, snap, MemoryWriter())
    assert (status.ready, status.reason) == (ready, reason)
    assert list(status.nodes) == (["aks-ws-0"] if ready else [])


def test_ready_byo_nodes_count_toward_the_target() -> None:
    writer = MemoryWriter()
    byo = node("gpu-1", labels={"apps": "phi-3"})
    status = NodeClaimProvisioner().ensure(request(), Snapshot(nodes=[byo], now=NOW), writer)
    assert status.ready
    assert writer.creates == []
    NodeClaimProvisioner().ensure(request(count=2), Snapshot(nodes=[byo], now=NOW), writer)
    assert len(writer.creates) == 1


def test_never_scales_down() -> None:
    req = request(count=2)
    claims = [
        nodeclaim_for(req, i, node_class=node_class_for("azure"), cloud="azure") for i in (0, 1)
    ]
    writer = MemoryWriter()
    NodeClaimProvisioner().ensure(request(count=1), Snapshot(nodeclaims=claims, now=NOW), writer)
    assert writer.deletes == []
    assert writer.creates == []


def test_release_deletes_only_this_workspaces_claims_until_none_is_left() -> None:
    mine = nodeclaim_for(request(), 0, node_class=node_class_for("azure"), cloud="azure")
    other = nodeclaim_for(
        request(name="other"), 0, node_class=node_class_for("azure"), cloud="azure"
    )
    prov, writer = NodeClaimProvisioner(), MemoryWriter()
    assert not prov.release(
        "default", "workspace-phi-3-mini", Snapshot(nodeclaims=[mine, other]), writer
    )
    assert writer.deletes == [mine["metadata"]["name"]]
    deleting = {
        **mine,
        "metadata": {**mine["metadata"], "deletionTimestamp": "2026-01-02T03:04:05Z"},
    }
    assert not prov.release(
        "default", "workspace-phi-3-mini", Snapshot(nodeclaims=[deleting]), writer
    )
    assert writer.deletes == [mine["metadata"]["name"]]  # not deleted twice
    assert prov.release("default", "workspace-phi-3-mini", Snapshot(nodeclaims=[other]), writer)


def aged(claim: Obj, minutes: int) -> Obj:
    created = (NOW - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {**claim, "metadata": {**claim["metadata"], "creationTimestamp": created}}


def test_sweep_deletes_old_orphans_only_and_never_foreign_claims() -> None:
    ac = node_class_for("azure")
    old = aged(nodeclaim_for(request(name="gone"), 0, node_class=ac, cloud="azure"), 10)
    young = aged(nodeclaim_for(request(name="just-gone"), 0, node_class=ac, cloud="azure"), 1)
    alive = aged(nodeclaim_for(request(), 0, node_class=ac, cloud="azure"), 60)
    foreign = aged(
        {
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodeClaim",
            "metadata": {"name": "default-abcde", "labels": {"karpenter.sh/nodepool": "default"}},
        },
        60,
    )
    half_ours = aged(
        {
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodeClaim",
            "metadata": {
                "name": "half",
                "labels": {"karpenter.sh/nodepool": "kaito", "kaito.sh/workspace": "gone"},
            },
        },
        60,
    )
    writer = MemoryWriter()
    snap = Snapshot(nodeclaims=[old, young, alive, foreign, half_ours], now=NOW)
    live = {("default", "workspace-phi-3-mini")}
    deleted = NodeClaimProvisioner(grace=timedelta(minutes=5)).sweep(live, snap, writer)
    assert deleted == [old["metadata"]["name"]]
    assert writer.deletes == deleted
    assert writer.events[0][1] == "OrphanDeleted"
    assert "default/gone" in writer.events[0][2]
