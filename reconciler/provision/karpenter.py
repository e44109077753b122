"""Karpenter NodeClaim provisioner (the default): one karpenter.sh/v1 NodeClaim per node needed.

Follows the contract of Kaito's gpu-provisioner (see karpenter_claims.py for the object and
the deterministic names). It reads only the pass's Snapshot (never a LIST/GET of its own),
writes through the Writer, counts ready bring-your-own nodes toward the target as Kaito does,
never scales down, and never deletes a NodeClaim that lacks our labels.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from crds.workspace import API_VERSION
from reconciler.provision.base import (
    NodeRequest,
    NodeStatus,
    Obj,
    Snapshot,
    Writer,
    all_ready,
    ready_head,
)
from reconciler.provision.byo import select_byo_nodes
from reconciler.provision.gc import DEFAULT_GRACE, clock, judge_orphan, owner_of, parse_time
from reconciler.provision.karpenter_claims import (
    NODECLAIM_API,
    NodeClassRef,
    claim_state,
    claims_of,
    is_deleting,
    is_ours,
    node_class_for,
    nodeclaim_for,
)

log = logging.getLogger(__name__)
WORKSPACE_API = API_VERSION


def workspace_ref(req: NodeRequest) -> Obj:
    """The Workspace as an Event's involved object."""
    return {
        "apiVersion": WORKSPACE_API,
        "kind": "Workspace",
        "metadata": {"name": req.name, "namespace": req.namespace, "uid": req.uid},
    }


class NodeClaimProvisioner:
    """Default provisioner: one karpenter.sh/v1 NodeClaim per node the Workspace needs."""

    name = "karpenter"

    def __init__(
        self,
        *,
        cloud: str = "azure",
        node_class: NodeClassRef | None = None,
        grace: timedelta = DEFAULT_GRACE,
    ) -> None:
        self.cloud = cloud
        self.node_class = node_class or node_class_for(cloud)
        self.grace = grace

    def ensure(self, req: NodeRequest, snap: Snapshot, writer: Writer) -> NodeStatus:
        if req.count < 1:
            raise ValueError(
                f"Workspace {req.namespace}/{req.name}: node count must be >= 1, got {req.count}"
            )
        byo = select_byo_nodes(req, snap.nodes, exclude_provisioned=True)
        mine = claims_of(req.namespace, req.name, snap.nodeclaims)
        live = [c for c in mine if not is_deleting(c)]
        missing = max(0, req.count - len(byo.chosen) - len(live))
        created = self._create(req, missing, {c["metadata"]["name"] for c in mine}, writer)
        nodes = {str(n["metadata"]["name"]): n for n in snap.nodes}
        ready = list(byo.chosen)
        problems = []
        for claim in sorted(live, key=lambda c: str(c["metadata"]["name"])):
            state = claim_state(claim, nodes, req.gpus_per_node)
            if state is None:
                ready.append(str(claim["status"]["nodeName"]))
            else:
                problems.append(state)
        done = all_ready(ready, req.count)
        return done if done is not None else self._not_ready(req, ready, problems, created)

    def _create(self, req: NodeRequest, missing: int, taken: set[str], writer: Writer) -> list[str]:
        made: list[str] = []
        index = 0
        while len(made) < missing:
            claim = nodeclaim_for(req, index, node_class=self.node_class, cloud=self.cloud)
            index += 1
            cname = claim["metadata"]["name"]
            if cname in taken:
                continue
            writer.create(claim)
            made.append(cname)
            log.info("created NodeClaim %s for Workspace %s/%s", cname, req.namespace, req.name)
            writer.event(
                workspace_ref(req),
                "Normal",
                "NodeClaimCreated",
                f"Created NodeClaim {cname} ({req.instance_type})",
            )
        return made

    @staticmethod
    def _not_ready(
        req: NodeRequest,
        ready: list[str],
        problems: list[tuple[bool, int, str, str]],
        created: list[str],
    ) -> NodeStatus:
        head = ready_head(ready, req.count)
        if problems:
            _, _, reason, message = min(problems, key=lambda p: (not p[0], p[1]))
            return NodeStatus(
                ready=False, nodes=tuple(ready), reason=reason, message=f"{head}; {message}"
            )
        detail = f"created NodeClaims {', '.join(created)}" if created else "waiting for NodeClaims"
        return NodeStatus(
            ready=False, nodes=tuple(ready), reason="NodeClaimNotReady", message=f"{head}; {detail}"
        )

    def release(self, namespace: str, name: str, snap: Snapshot, writer: Writer) -> bool:
        mine = claims_of(namespace, name, snap.nodeclaims)
        for claim in mine:
            if not is_deleting(claim):
                writer.delete(NODECLAIM_API, "NodeClaim", claim["metadata"]["name"])
                log.info(
                    "deleting NodeClaim %s of Workspace %s/%s",
                    claim["metadata"]["name"],
                    namespace,
                    name,
                )
        return not mine

    def sweep(self, live: set[tuple[str, str]], snap: Snapshot, writer: Writer) -> list[str]:
        now = clock(snap.now)
        deleted: list[str] = []
        for claim in snap.nodeclaims:
            if not is_ours(claim) or is_deleting(claim):
                continue
            md = claim["metadata"]
            verdict = judge_orphan(
                owner_of(md.get("labels")),
                parse_time(md.get("creationTimestamp")),
                live=live,
                now=now,
                grace=self.grace,
            )
            if verdict is None:
                continue
            if not verdict.delete:
                log.info("orphan NodeClaim %s kept for now: %s", md["name"], verdict.reason)
                continue
            writer.delete(NODECLAIM_API, "NodeClaim", md["name"])
            writer.event(
                claim,
                "Normal",
                "OrphanDeleted",
                f"Deleted NodeClaim {md['name']}: {verdict.reason}",
            )
            log.warning("deleted orphan NodeClaim %s: %s", md["name"], verdict.reason)
            deleted.append(str(md["name"]))
        return deleted
