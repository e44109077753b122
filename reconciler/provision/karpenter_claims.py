"""NodeClaims as data: names, labels, the object Kaito's gpu-provisioner expects, condition reading.

Kaito names a NodeClaim "ws" + 9 hex of sha256(namespace + name + time); ours hashes
namespace/name/uid and an index instead, so a reconciler killed between create and status
write finds its own NodeClaim on the next pass (and a repeated create is AlreadyExists)
rather than creating a second one. Names also satisfy AKS agent-pool rules (lowercase
alphanumeric, starts with a letter, at most 11 characters) and are reused by aks.py.

Pure functions over raw dicts: no client, no clock, no writes (karpenter.py acts on them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from crds.workspace import (
    ANNOTATION_NODE_IMAGE_FAMILY,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    RESERVED_LABEL_KEYS,
)
from reconciler.provision.base import NodeRequest, Obj
from reconciler.provision.byo import node_problem
from reconciler.provision.gc import owner_of

NODECLAIM_API = "karpenter.sh/v1"
LABEL_NODEPOOL = "karpenter.sh/nodepool"
NODEPOOL = "kaito"
ANNOTATION_DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
GPU_TAINT = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}
LIFECYCLE = ("Launched", "Registered", "Initialized")
MESSAGE_LIMIT = 512
# Selector keys never copied from matchLabels onto NodeClaims: Kaito's reserved keys (their
# one home is crds.workspace) and Karpenter's pool, which the claim sets itself.
RESERVED_LABELS = RESERVED_LABEL_KEYS | {LABEL_NODEPOOL}


def claim_name(namespace: str, name: str, uid: str, index: int) -> str:
    """Return "ws" + 9 hex of sha256 over namespace/name/uid/index: stable, collision-resistant."""
    digest = hashlib.sha256(f"{namespace}/{name}/{uid}/{index}".encode()).hexdigest()
    return "ws" + digest[:9]


def owner_labels(namespace: str, name: str) -> dict[str, str]:
    return {LABEL_WORKSPACE: name, LABEL_WORKSPACE_NAMESPACE: namespace}


def claim_labels(req: NodeRequest) -> dict[str, str]:
    """matchLabels minus reserved keys, then our ownership labels and the fake pool name."""
    labels = {k: v for k, v in req.label_selector.items() if k not in RESERVED_LABELS}
    labels.update(owner_labels(req.namespace, req.name))
    labels[LABEL_NODEPOOL] = NODEPOOL
    return labels


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeClassRef:
    group: str
    kind: str
    name: str = "default"


_NODE_CLASSES = {
    "azure": ("kaito.sh", "KaitoNodeClass"),
    "aws": ("karpenter.k8s.aws", "EC2NodeClass"),
}


def node_class_for(
    cloud: str, *, name: str = "default", group: str = "", kind: str = ""
) -> NodeClassRef:
    """The nodeClassRef per cloud; the real CRD rejects an empty group/kind, so name one."""
    default_group, default_kind = _NODE_CLASSES.get(cloud.lower(), ("", ""))
    ref = NodeClassRef(group=group or default_group, kind=kind or default_kind, name=name)
    if not ref.group or not ref.kind or not ref.name:
        raise ValueError(
            f"cloud {cloud!r} has no default NodeClass; set the node class group and kind "
            f"(known clouds: {', '.join(sorted(_NODE_CLASSES))})"
        )
    return ref


def nodeclaim_for(req: NodeRequest, index: int, *, node_class: NodeClassRef, cloud: str) -> Obj:
    """The NodeClaim for the index-th node of a Workspace (pure)."""
    requirements: list[Obj] = [
        {"key": LABEL_NODEPOOL, "operator": "In", "values": [NODEPOOL]},
        {
            "key": "node.kubernetes.io/instance-type",
            "operator": "In",
            "values": [req.instance_type],
        },
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
    ]
    if cloud.lower() == "azure":
        requirements.append(
            {"key": "karpenter.azure.com/sku-name", "operator": "In", "values": [req.instance_type]}
        )
    annotations = {ANNOTATION_DO_NOT_DISRUPT: "true"}
    if ANNOTATION_NODE_IMAGE_FAMILY in req.annotations:
        annotations[ANNOTATION_NODE_IMAGE_FAMILY] = req.annotations[ANNOTATION_NODE_IMAGE_FAMILY]
    return {
        "apiVersion": NODECLAIM_API,
        "kind": "NodeClaim",
        "metadata": {
            "name": claim_name(req.namespace, req.name, req.uid, index),
            "labels": claim_labels(req),
            "annotations": annotations,
        },
        "spec": {
            "requirements": requirements,
            "taints": [dict(GPU_TAINT)],
            "nodeClassRef": {
                "group": node_class.group,
                "kind": node_class.kind,
                "name": node_class.name,
            },
            "resources": {"requests": {"storage": f"{max(1, req.storage_gib)}Gi"}},
        },
    }


def is_ours(claim: Obj) -> bool:
    labels: Mapping[str, str] = (claim.get("metadata") or {}).get("labels") or {}
    return labels.get(LABEL_NODEPOOL) == NODEPOOL and owner_of(labels) is not None


def claims_of(namespace: str, name: str, claims: Sequence[Obj]) -> list[Obj]:
    """This Workspace's NodeClaims (deleting ones included), found by our labels."""
    return [
        c
        for c in claims
        if is_ours(c) and owner_of((c.get("metadata") or {}).get("labels")) == (namespace, name)
    ]


def is_deleting(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def truncate(text: str, limit: int = MESSAGE_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _conditions(claim: Obj) -> Mapping[str, Obj]:
    conds = (claim.get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in conds if isinstance(c, dict)}


def lifecycle_problem(claim: Obj) -> tuple[bool, int, str, str] | None:
    """(is_error, stage, reason, message) of the earliest non-True lifecycle condition."""
    conds = _conditions(claim)
    cname = (claim.get("metadata") or {}).get("name", "")
    for stage, ctype in enumerate(LIFECYCLE):
        cond = conds.get(ctype)
        if cond is None:
            return (False, stage, "NodeClaimNotReady", f"NodeClaim {cname}: waiting for {ctype}")
        if str(cond.get("status")) == "True":
            continue
        reason = str(cond.get("reason") or "")
        error = bool(reason) and reason != "AwaitingReconciliation"
        text = truncate(str(cond.get("message") or reason or "no message"))
        message = (
            f"NodeClaim {cname}: {ctype}={cond.get('status')} ({reason or 'no reason'}): {text}"
        )
        return (error, stage, reason if error else "NodeClaimNotReady", message)
    return None


def _claim_node(claim: Obj, nodes: Mapping[str, Obj]) -> Obj | None:
    node_name = (claim.get("status") or {}).get("nodeName")
    return nodes.get(str(node_name)) if node_name else None


def claim_state(
    claim: Obj, nodes: Mapping[str, Obj], gpus: int
) -> tuple[bool, int, str, str] | None:
    """None when the claim's node is usable; else the problem ranked like lifecycle_problem."""
    problem = lifecycle_problem(claim)
    if problem is not None:
        return problem
    cname = claim["metadata"]["name"]
    node = _claim_node(claim, nodes)
    if node is None:
        return (
            False,
            len(LIFECYCLE),
            "NodeNotFound",
            f"NodeClaim {cname}: its node is not registered yet",
        )
    why = node_problem(node, gpus)
    if why:
        reason = "GPUNotReady" if "nvidia.com/gpu" in why else "NodeNotReady"
        return (
            False,
            len(LIFECYCLE),
            reason,
            f"node {node['metadata']['name']} of NodeClaim {cname}: {why}",
        )
    return None
