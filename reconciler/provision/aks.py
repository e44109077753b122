"""AKS agent-pool provisioner: one agent pool per Workspace, through Azure Resource Manager.

For clusters without Karpenter. The pool carries the same labels (nodeLabels) and taint
(`sku=gpu:NoSchedule`) as a Kaito NodeClaim, the deterministic name of karpenter_claims.py
(valid under AKS pool-name rules), and tags that mark it as ours with its creation time.
Creating, scaling and deleting are long-running in Azure: we start them and read the pool's
provisioningState on later passes, never waiting inside a pass. Azure's errors (quota, SKU
not available, a failed provisioning) reach NodeStatus in Azure's own words; a 429 is not a
failure: we stop calling ARM until Retry-After has passed and say so.

Unlike the other provisioners this one must ask ARM (one LIST of pools per pass, cached for
the Snapshot), and it never touches a pool that lacks both our labels and our tags.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from crds.workspace import API_VERSION, KIND
from reconciler.provision.aks_arm import AgentPools, ArmError, Obj
from reconciler.provision.base import (
    NodeRequest,
    NodeStatus,
    Snapshot,
    Writer,
    all_ready,
    ready_head,
)
from reconciler.provision.byo import node_labels, node_problem, select_byo_nodes
from reconciler.provision.gc import (
    DEFAULT_GRACE,
    clock,
    format_time,
    judge_orphan,
    owner_of,
    parse_time,
)
from reconciler.provision.karpenter import workspace_ref
from reconciler.provision.karpenter_claims import (
    GPU_TAINT,
    LABEL_NODEPOOL,
    claim_labels,
    claim_name,
    truncate,
)

log = logging.getLogger(__name__)

LABEL_AGENTPOOL = "kubernetes.azure.com/agentpool"
TAG_WORKSPACE = "kaito-workspace"
TAG_NAMESPACE = "kaito-workspace-namespace"
TAG_CREATED = "kaito-created-at"
AZURE_MESSAGE_LIMIT = 512


def pool_name(req: NodeRequest) -> str:
    return claim_name(req.namespace, req.name, req.uid, 0)


def pool_body(req: NodeRequest, count: int, created: str) -> Obj:
    """The agent pool PUT body (REST shape): VM size, count, our labels, taint and tags."""
    labels = claim_labels(req)
    labels.pop(LABEL_NODEPOOL, None)  # Karpenter must never think it owns these nodes
    return {
        "properties": {
            "count": count,
            "vmSize": req.instance_type,
            "osType": "Linux",
            "mode": "User",
            "type": "VirtualMachineScaleSets",
            "osDiskSizeGB": max(30, min(2048, req.storage_gib)),
            "nodeLabels": labels,
            "nodeTaints": ["{key}={value}:{effect}".format(**GPU_TAINT)],
            "tags": {TAG_WORKSPACE: req.name, TAG_NAMESPACE: req.namespace, TAG_CREATED: created},
        }
    }


def _props(pool: Obj) -> Obj:
    props = pool.get("properties")
    return props if isinstance(props, dict) else {}


def pool_state(pool: Obj) -> str:
    return str(_props(pool).get("provisioningState") or "Unknown")


def pool_owner(pool: Obj) -> tuple[str, str] | None:
    """(namespace, name) when the pool carries both our nodeLabels and our tags, else None."""
    props = _props(pool)
    owner = owner_of(props.get("nodeLabels"))
    tags = props.get("tags") or {}
    if owner is None or (tags.get(TAG_NAMESPACE), tags.get(TAG_WORKSPACE)) != owner:
        return None
    return owner


def pool_created(pool: Obj) -> datetime | None:
    tags = _props(pool).get("tags") or {}
    return parse_time(tags.get(TAG_CREATED)) or parse_time(
        (pool.get("systemData") or {}).get("createdAt")
    )


def _provisioning_error(pool: Obj) -> tuple[str, str]:
    err = (_props(pool).get("status") or {}).get("provisioningError") or {}
    return str(err.get("code") or "AgentPoolFailed"), str(err.get("message") or "no message")


class AgentPoolProvisioner:
    """Agent pools through ARM; construct with an `AgentPools` (see aks_arm.make_client)."""

    name = "aks"

    def __init__(self, *, pools: AgentPools, grace: timedelta = DEFAULT_GRACE) -> None:
        self.arm = pools
        self.grace = grace
        self._throttled_until: datetime | None = None
        self._throttle_note = ""
        self._cache: tuple[Snapshot, dict[str, Obj]] | None = None

    # ARM access --------------------------------------------------------------------

    def _pools(self, snap: Snapshot) -> dict[str, Obj]:
        if self._cache is None or self._cache[0] is not snap:
            self._cache = (snap, self.arm.list())
        return self._cache[1]

    def _throttled(self, now: datetime) -> NodeStatus | None:
        if self._throttled_until is None or now >= self._throttled_until:
            return None
        left = max(1, int((self._throttled_until - now).total_seconds()))
        message = f"{self._throttle_note}; throttled, retrying after {left} s"
        return NodeStatus(ready=False, reason="Throttled", message=message)

    def _arm_failed(self, err: ArmError, now: datetime, what: str) -> NodeStatus:
        if err.status == 429:
            wait = err.retry_after or 30
            self._throttled_until = now + timedelta(seconds=wait)
            self._throttle_note = f"Azure throttled {what} (429 {err.code}: {err.message})"
            log.warning("%s; backing off %ss", self._throttle_note, wait)
            return NodeStatus(
                ready=False,
                reason="Throttled",
                message=f"{truncate(self._throttle_note, AZURE_MESSAGE_LIMIT)}; "
                f"throttled, retrying after {wait} s",
            )
        reason = "AzureUnreachable" if err.status == 0 else err.code
        text = truncate(err.message or err.code, AZURE_MESSAGE_LIMIT)
        return NodeStatus(ready=False, reason=reason, message=f"Azure rejected {what}: {text}")

    # Provisioner -------------------------------------------------------------------

    def ensure(self, req: NodeRequest, snap: Snapshot, writer: Writer) -> NodeStatus:
        now = clock(snap.now)
        name = pool_name(req)
        throttled = self._throttled(now)
        if throttled is not None:
            return throttled
        try:
            return self._ensure(req, snap, writer, name, now)
        except ArmError as err:
            return self._arm_failed(err, now, f"agent pool {name} ({req.instance_type})")

    def _ensure(
        self, req: NodeRequest, snap: Snapshot, writer: Writer, name: str, now: datetime
    ) -> NodeStatus:
        pools = self._pools(snap)
        others = [n for n in snap.nodes if node_labels(n).get(LABEL_AGENTPOOL) != name]
        byo = select_byo_nodes(req, others, exclude_provisioned=True)
        needed = max(0, req.count - len(byo.chosen))
        pool = pools.get(name)
        what = f"agent pool {name} ({req.instance_type} x {needed})"
        if pool is None:
            if needed == 0:
                return NodeStatus(
                    ready=True, nodes=byo.chosen, reason="NodesReady", message=byo.message
                )
            pools[name] = self.arm.put(name, pool_body(req, needed, format_time(now)))
            log.info("creating %s for Workspace %s/%s", what, req.namespace, req.name)
            writer.event(workspace_ref(req), "Normal", "AgentPoolCreating", f"Creating {what}")
            return NodeStatus(
                ready=False,
                nodes=byo.chosen,
                reason="AgentPoolCreating",
                message=f"creating {what}",
            )
        state = pool_state(pool)
        if state == "Failed":
            code, message = _provisioning_error(pool)
            text = truncate(message, AZURE_MESSAGE_LIMIT)
            return NodeStatus(
                ready=False,
                nodes=byo.chosen,
                reason=code,
                message=f"{what} failed in Azure: {text}",
            )
        if state != "Succeeded":
            return NodeStatus(
                ready=False,
                nodes=byo.chosen,
                reason=f"AgentPool{state}",
                message=f"{what} is {state}",
            )
        if int(_props(pool).get("count") or 0) < needed:
            created = (_props(pool).get("tags") or {}).get(TAG_CREATED) or format_time(now)
            pools[name] = self.arm.put(name, pool_body(req, needed, created))
            return NodeStatus(
                ready=False, nodes=byo.chosen, reason="AgentPoolScaling", message=f"scaling {what}"
            )
        return self._nodes_status(req, snap, name, list(byo.chosen))

    @staticmethod
    def _nodes_status(req: NodeRequest, snap: Snapshot, name: str, ready: list[str]) -> NodeStatus:
        waiting = []
        for node in sorted(snap.nodes, key=lambda n: str(n["metadata"]["name"])):
            if node_labels(node).get(LABEL_AGENTPOOL) != name:
                continue
            why = node_problem(node, req.gpus_per_node)
            if why:
                waiting.append(f"{node['metadata']['name']} ({why})")
            else:
                ready.append(str(node["metadata"]["name"]))
        done = all_ready(ready, req.count)
        if done is not None:
            return done
        detail = "; not ready: " + ", ".join(waiting) if waiting else ""
        return NodeStatus(
            ready=False,
            nodes=tuple(ready),
            reason="NodeNotReady",
            message=f"{ready_head(ready, req.count)} in agent pool {name}{detail}",
        )

    def release(self, namespace: str, name: str, snap: Snapshot, writer: Writer) -> bool:
        now = clock(snap.now)
        if self._throttled(now) is not None:
            return False
        try:
            pools = self._pools(snap)
            for pname in [p for p, body in pools.items() if pool_owner(body) == (namespace, name)]:
                self._delete(pools, pname)
            return not any(pool_owner(b) == (namespace, name) for b in pools.values())
        except ArmError as err:
            if err.status in (409, 429):
                self._arm_failed(err, now, f"deleting the agent pools of {namespace}/{name}")
                return False
            raise

    def _delete(self, pools: dict[str, Obj], pname: str) -> None:
        if pool_state(pools[pname]) == "Deleting":
            return
        if self.arm.delete(pname):
            del pools[pname]
        else:
            _props(pools[pname])["provisioningState"] = "Deleting"
        log.info("deleting agent pool %s", pname)

    def sweep(self, live: set[tuple[str, str]], snap: Snapshot, writer: Writer) -> list[str]:
        now = clock(snap.now)
        deleted: list[str] = []
        if self._throttled(now) is not None:
            return deleted
        try:
            pools = self._pools(snap)
            for pname, body in sorted(pools.items()):
                owner = pool_owner(body)
                verdict = judge_orphan(
                    owner, pool_created(body), live=live, now=now, grace=self.grace
                )
                if owner is None or verdict is None or pool_state(body) == "Deleting":
                    continue
                if not verdict.delete:
                    log.info("orphan agent pool %s kept for now: %s", pname, verdict.reason)
                    continue
                self._delete(pools, pname)
                ref = {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "metadata": {"namespace": owner[0], "name": owner[1]},
                }
                writer.event(
                    ref, "Normal", "OrphanDeleted", f"Deleted agent pool {pname}: {verdict.reason}"
                )
                log.warning("deleted orphan agent pool %s: %s", pname, verdict.reason)
                deleted.append(pname)
        except ArmError as err:
            self._arm_failed(err, now, "the orphan sweep")
            log.warning("agent pool sweep stopped: %s", err)
        return deleted
