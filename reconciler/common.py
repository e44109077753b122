"""Pieces every desired child object shares: ownership, labels, placement, the spec hash.

Pure functions over plain dicts (the expanded Workspace object as the API returns it).
Nothing here performs I/O or reads the clock. Labels of the Workspace itself are never
copied to children: ArgoCD's tracking label must not spread to objects it does not own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from crds.workspace import LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE

Obj = dict[str, Any]

ANNOTATION_SPEC_HASH = "kaito.sh/spec-hash"
LABEL_HOSTNAME = "kubernetes.io/hostname"
GPU_RESOURCE = "nvidia.com/gpu"
HTTP_PORT = 5000
TORCH_PORT = 29500
# Keys that only the operator may put on nodes; never turned into affinity from a user selector.
RESERVED_SELECTOR_KEYS = frozenset({
    LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE, "kaito.sh/ragengine",
    "kaito.sh/ragenginenamespace", "karpenter.kaito.sh/workspace-name",
    "karpenter.kaito.sh/workspace-namespace",
})


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    md = obj.get("metadata")
    return md if isinstance(md, Mapping) else {}


def owner_labels(ws: Mapping[str, Any]) -> dict[str, str]:
    md = meta(ws)
    return {LABEL_WORKSPACE: str(md.get("name", "")),
            LABEL_WORKSPACE_NAMESPACE: str(md.get("namespace", ""))}


def owner_reference(ws: Mapping[str, Any]) -> Obj:
    md = meta(ws)
    return {
        "apiVersion": str(ws.get("apiVersion", "kaito.sh/v1beta1")),
        "kind": "Workspace",
        "name": str(md.get("name", "")),
        "uid": str(md.get("uid", "")),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(
    ws: Mapping[str, Any], name: str, extra_labels: Mapping[str, str] | None = None,
) -> Obj:
    labels = owner_labels(ws)
    labels.update(extra_labels or {})
    return {
        "name": name,
        "namespace": str(meta(ws).get("namespace", "")),
        "labels": labels,
        "ownerReferences": [owner_reference(ws)],
    }


def spec_hash(obj: Mapping[str, Any]) -> str:
    """A content hash of everything we set, ignoring the hash annotation itself."""
    body = dict(obj)
    if isinstance(obj.get("metadata"), Mapping):  # copy only what changes: no deep copy
        md = dict(obj["metadata"])
        annotations = {
            k: v for k, v in (md.get("annotations") or {}).items() if k != ANNOTATION_SPEC_HASH
        }
        if annotations:
            md["annotations"] = annotations
        else:
            md.pop("annotations", None)
        body["metadata"] = md
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_hash(obj: Obj) -> Obj:
    digest = spec_hash(obj)
    obj.setdefault("metadata", {}).setdefault("annotations", {})[ANNOTATION_SPEC_HASH] = digest
    return obj


def label_selector(ws: Mapping[str, Any]) -> Mapping[str, Any]:
    resource = ws.get("resource")
    sel = resource.get("labelSelector") if isinstance(resource, Mapping) else None
    return sel if isinstance(sel, Mapping) else {}


def node_selector_terms(ws: Mapping[str, Any], nodes: Sequence[str]) -> list[Obj]:
    """One term: the Workspace's label selector (minus reserved keys) and the chosen nodes."""
    sel = label_selector(ws)
    exprs: list[Obj] = []
    match_labels = sel.get("matchLabels")
    if isinstance(match_labels, Mapping):
        for key in sorted(match_labels):
            if key not in RESERVED_SELECTOR_KEYS:
                exprs.append({"key": key, "operator": "In", "values": [str(match_labels[key])]})
    for expr in sel.get("matchExpressions") or []:
        if isinstance(expr, Mapping) and expr.get("key") not in RESERVED_SELECTOR_KEYS:
            item: Obj = {"key": str(expr.get("key")), "operator": str(expr.get("operator"))}
            if expr.get("values"):
                item["values"] = [str(v) for v in expr["values"]]
            exprs.append(item)
    if nodes:
        exprs.append({"key": LABEL_HOSTNAME, "operator": "In", "values": sorted(nodes)})
    return [{"matchExpressions": exprs}] if exprs else []


def placement(ws: Mapping[str, Any], nodes: Sequence[str], *, spread: bool) -> Obj:
    """Affinity (selected nodes, one pod per node when `spread`) and the GPU tolerations."""
    affinity: Obj = {}
    terms = node_selector_terms(ws, nodes)
    if terms:
        affinity["nodeAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
        }
    if spread:
        affinity["podAntiAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": owner_labels(ws)},
                "topologyKey": LABEL_HOSTNAME,
            }]
        }
    out: Obj = {"tolerations": [
        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
        {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
    ]}
    if affinity:
        out["affinity"] = affinity
    return out


def gpu_resources(gpus: int) -> Obj:
    if gpus <= 0:
        return {}
    return {"requests": {GPU_RESOURCE: str(gpus)}, "limits": {GPU_RESOURCE: str(gpus)}}


def pull_secrets(names: Sequence[Any]) -> list[Obj]:
    return [{"name": str(n)} for n in names if isinstance(n, str) and n]
