"""Pieces every desired child object shares: ownership, labels, placement, the spec hash.

Pure functions of the typed Workspace (parsed once per pass, reconciler.expansion) that
return the plain JSON dicts the API takes. Nothing here performs I/O or reads the clock.
Labels of the Workspace itself are never copied to children: ArgoCD's tracking label must
not spread to objects it does not own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from crds.workspace import (
    API_VERSION,
    KIND,
    LABEL_WORKSPACE,
    LABEL_WORKSPACE_NAMESPACE,
    RESERVED_LABEL_KEYS,
    Workspace,
)
from presets.commands import SERVER_PORT

Obj = dict[str, Any]

ANNOTATION_SPEC_HASH = "kaito.sh/spec-hash"
LABEL_HOSTNAME = "kubernetes.io/hostname"
GPU_RESOURCE = "nvidia.com/gpu"
HTTP_PORT = SERVER_PORT  # the model server listens where its command line says
TORCH_PORT = 29500


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    md = obj.get("metadata")
    return md if isinstance(md, Mapping) else {}


def uid(ws: Workspace) -> str:
    """metadata.uid, which the typed Metadata keeps among its unmodelled fields."""
    return str(ws.metadata.extra.get("uid") or "")


def owner_labels(ws: Workspace) -> dict[str, str]:
    return {LABEL_WORKSPACE: ws.metadata.name or "",
            LABEL_WORKSPACE_NAMESPACE: ws.metadata.namespace or ""}


def owner_reference(ws: Workspace) -> Obj:
    return {
        "apiVersion": ws.api_version or API_VERSION,
        "kind": KIND,
        "name": ws.metadata.name or "",
        "uid": uid(ws),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(ws: Workspace, name: str, extra_labels: Mapping[str, str] | None = None) -> Obj:
    labels = owner_labels(ws)
    labels.update(extra_labels or {})
    return {
        "name": name,
        "namespace": ws.metadata.namespace or "",
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


def label_selector(ws: Workspace) -> Mapping[str, Any]:
    sel = ws.resource.label_selector if ws.resource is not None else None
    return sel if isinstance(sel, Mapping) else {}


def node_selector_terms(ws: Workspace, nodes: Sequence[str]) -> list[Obj]:
    """One term: the Workspace's label selector (minus reserved keys) and the chosen nodes."""
    sel = label_selector(ws)
    exprs: list[Obj] = []
    match_labels = sel.get("matchLabels")
    if isinstance(match_labels, Mapping):
        for key in sorted(match_labels):
            if key not in RESERVED_LABEL_KEYS:
                exprs.append({"key": key, "operator": "In", "values": [str(match_labels[key])]})
    for expr in sel.get("matchExpressions") or []:
        if isinstance(expr, Mapping) and expr.get("key") not in RESERVED_LABEL_KEYS:
            item: Obj = {"key": str(expr.get("key")), "operator": str(expr.get("operator"))}
            if expr.get("values"):
                item["values"] = [str(v) for v in expr["values"]]
            exprs.append(item)
    if nodes:
        exprs.append({"key": LABEL_HOSTNAME, "operator": "In", "values": sorted(nodes)})
    return [{"matchExpressions": exprs}] if exprs else []


def placement(ws: Workspace, nodes: Sequence[str], *, spread: bool) -> Obj:
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


def gpu_resources(gpus: int, resource: str = GPU_RESOURCE) -> Obj:
    """Requests and limits of `gpus` GPUs (or MIG slices, `resource` nvidia.com/mig-...)."""
    if gpus <= 0:
        return {}
    return {"requests": {resource: str(gpus)}, "limits": {resource: str(gpus)}}


def pull_secrets(names: Sequence[Any]) -> list[Obj]:
    return [{"name": str(n)} for n in names if isinstance(n, str) and n]
