"""Bring-your-own nodes: pick the existing nodes a Workspace may use, and say why others were not.

Used on its own (provisioner name `byo`: create nothing, only select) and by the NodeClaim and
agent-pool provisioners, which count ready BYO nodes toward the target as Kaito does. Also
holds the node readiness rule shared by every provisioner: a node counts only when it is
Ready, schedulable, and advertises `nvidia.com/gpu` capacity (the device plugin is up).

Pure functions over raw Node dicts from the pass's snapshot: no client, no I/O, no writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from presets.catalog import InstanceType
from reconciler.provision.base import NodeRequest, NodeStatus, Obj, Snapshot, Writer

GPU_RESOURCE = "nvidia.com/gpu"
LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
LABEL_GPU_MEMORY = "nvidia.com/gpu.memory"  # per GPU, MiB (NVIDIA GPU feature discovery)
LABEL_GPU_COUNT = "nvidia.com/gpu.count"
LABEL_GPU_PRODUCT = "nvidia.com/gpu.product"
LABEL_NODEPOOL = "karpenter.sh/nodepool"


def node_name(node: Obj) -> str:
    return str((node.get("metadata") or {}).get("name") or "")


def node_labels(node: Obj) -> Mapping[str, str]:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return labels if isinstance(labels, Mapping) else {}


def node_is_ready(node: Obj) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status")) == "True"
    return False


def gpu_capacity(node: Obj, resource: str = GPU_RESOURCE) -> int:
    """The node's advertised nvidia.com/gpu (or MIG slice `resource`) capacity; 0 when the
    device plugin is not up."""
    raw = ((node.get("status") or {}).get("capacity") or {}).get(resource, "0")
    try:  # a quantity: the API may write 1000 GPUs as "1k"
        return max(0, int(parse_quantity(str(raw))))  # type: ignore[no-untyped-call]
    except (ValueError, ArithmeticError):
        return 0


def node_problem(node: Obj, gpus_per_node: int, resource: str = GPU_RESOURCE) -> str:
    """Why this node cannot run GPU work now ("" when it can): Ready, schedulable, GPUs up."""
    if (node.get("metadata") or {}).get("deletionTimestamp"):
        return "being deleted"
    if not node_is_ready(node):
        return "not Ready"
    if (node.get("spec") or {}).get("unschedulable"):
        return "cordoned (spec.unschedulable)"
    have = gpu_capacity(node, resource)
    if gpus_per_node > 0 and have == 0:
        return f"advertises no {resource} capacity (NVIDIA device plugin not running?)"
    if have < gpus_per_node:
        return f"advertises {have} {resource}, the Workspace needs {gpus_per_node} per node"
    return ""


def _per_gpu_gib(node: Obj) -> float | None:
    """GiB per GPU from the feature-discovery label (MiB), rounded to whole GiB."""
    raw = node_labels(node).get(LABEL_GPU_MEMORY)
    if raw is None:
        return None
    try:
        return float(round(int(raw) / 1024))
    except ValueError:
        return None


def _gpu_memory_gib(node: Obj) -> float | None:
    per_gpu = _per_gpu_gib(node)
    return None if per_gpu is None else per_gpu * max(gpu_capacity(node), 1)


def _fit_problem(req: NodeRequest, node: Obj) -> str:
    """Wrong hardware: too little GPU memory (by label), or another instance type, unproven."""
    mem = _gpu_memory_gib(node)
    if mem is not None:
        if req.gpus_per_node > 0 and mem < req.required_gpu_memory_gib:
            return (
                f"too little GPU memory: {mem:g} GiB ({LABEL_GPU_MEMORY} label), "
                f"the model needs {req.required_gpu_memory_gib:g} GiB"
            )
        return ""
    have = node_labels(node).get(LABEL_INSTANCE_TYPE, "")
    if req.instance_type and have and have.lower() != req.instance_type.lower():
        return (
            f"wrong instance type {have} (the Workspace asks for {req.instance_type}) "
            f"and no {LABEL_GPU_MEMORY} label shows enough GPU memory"
        )
    return ""


def _expression_holds(labels: Mapping[str, str], expr: Mapping[str, Any]) -> bool:
    key, op = str(expr.get("key")), expr.get("operator")
    values = [str(v) for v in expr.get("values") or []]
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False  # an operator admission refuses never matches


def matches_selector(
    node: Obj, selector: Mapping[str, str], expressions: Sequence[Mapping[str, Any]] = ()
) -> bool:
    """matchLabels and matchExpressions, as the API server selects; an empty selector
    selects nothing (bring-your-own nodes are named, never "every node")."""
    labels = node_labels(node)
    if not selector and not expressions:
        return False
    return all(labels.get(k) == v for k, v in selector.items()) and all(
        _expression_holds(labels, e) for e in expressions
    )


def node_gpus(nodes: Sequence[Obj]) -> InstanceType | None:
    """The GPUs every one of `nodes` has, from NVIDIA's feature-discovery labels
    (`nvidia.com/gpu.count`, `.memory` in MiB per GPU, `.product`) or the advertised
    capacity, as an instance type the GPU fit can use; None when a node shows none."""
    counts: list[int] = []
    memories: list[float] = []
    products: set[str] = set()
    for node in nodes:
        labels = node_labels(node)
        raw = labels.get(LABEL_GPU_COUNT, "")
        counts.append(int(raw) if raw.isdigit() else gpu_capacity(node))
        per_gpu = _per_gpu_gib(node)
        if per_gpu:
            memories.append(per_gpu)
        products.add(labels.get(LABEL_GPU_PRODUCT, "unknown GPU"))
    if not counts or min(counts) <= 0:
        return None
    return InstanceType(
        name=f"bring-your-own {'/'.join(sorted(products))}",
        cloud="byo",
        gpu_model="/".join(sorted(products)),
        gpu_count=min(counts),
        gpu_memory_gib=min(memories) if len(memories) == len(nodes) else 0.0,
        vcpu=0,
        memory_gib=0.0,
        relative_cost=0.0,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ByoSelection:
    """The nodes chosen (preferred first, then by name) and, per node not chosen, the reason."""

    chosen: tuple[str, ...]
    rejected: Mapping[str, str]

    @property
    def message(self) -> str:
        parts = []
        if self.chosen:
            parts.append("using nodes " + ", ".join(self.chosen))
        else:
            parts.append("no usable node")
        if self.rejected:
            parts.append(
                "not used: " + "; ".join(f"{n} ({why})" for n, why in sorted(self.rejected.items()))
            )
        return "; ".join(parts)


def select_byo_nodes(
    req: NodeRequest, nodes: Sequence[Obj], *, exclude_provisioned: bool = False
) -> ByoSelection:
    """Candidates are `preferred_nodes` plus nodes matching the label selector.

    With `exclude_provisioned`, nodes made by a provisioner (they carry `karpenter.sh/nodepool`)
    are left out, so a NodeClaim's own node is not counted twice.
    """
    by_name = {node_name(n): n for n in nodes}
    candidates: list[str] = []
    rejected: dict[str, str] = {}
    for name in req.preferred_nodes:
        if name not in by_name:
            rejected[name] = "preferred node does not exist"
        elif name not in candidates:
            candidates.append(name)
    for name in sorted(by_name):
        if name not in candidates and matches_selector(
            by_name[name], req.label_selector, req.match_expressions
        ):
            candidates.append(name)
    chosen: list[str] = []
    for name in candidates:
        node = by_name[name]
        if exclude_provisioned and LABEL_NODEPOOL in node_labels(node):
            continue
        why = node_problem(node, req.gpus_per_node, req.gpu_resource) or _fit_problem(req, node)
        if why:
            rejected[name] = why
        else:
            chosen.append(name)
    return ByoSelection(chosen=tuple(chosen), rejected=rejected)


class ByoProvisioner:
    """Creates nothing: the Workspace runs on nodes the user brought, or waits for them."""

    name = "byo"

    def ensure(self, req: NodeRequest, snap: Snapshot, writer: Writer) -> NodeStatus:
        sel = select_byo_nodes(req, snap.nodes)
        if len(sel.chosen) >= req.count:
            return NodeStatus(
                ready=True, nodes=sel.chosen, reason="NodesReady", message=sel.message
            )
        selector = ",".join(f"{k}={v}" for k, v in sorted(req.label_selector.items()))
        return NodeStatus(
            ready=False,
            nodes=sel.chosen,
            reason="NoMatchingNodes" if not sel.chosen else "NotEnoughNodes",
            message=(
                f"{len(sel.chosen)} of {req.count} nodes usable (bring-your-own: nodes matching "
                f"{selector or 'the label selector'} or listed in preferredNodes); {sel.message}"
            ),
        )

    def release(self, namespace: str, name: str, snap: Snapshot, writer: Writer) -> bool:
        return True

    def sweep(self, live: set[tuple[str, str]], snap: Snapshot, writer: Writer) -> list[str]:
        return []
