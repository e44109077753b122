"""From a stored Workspace object to what the pass needs: expanded, checked, resolved.

The reconciler expands again (an object that bypassed the webhook still works) and checks
it with the same pure rules as the webhook, so an impossible spec becomes a clear status
instead of a crash. Also builds the provisioner's NodeRequest. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crds.workspace import Workspace, WorkspaceParseError, parse_workspace
from presets.catalog import Catalog
from presets.expand import Resolved, expand_object, resolve
from presets.validate import validate_object
from reconciler.provision.base import NodeRequest


class SpecError(ValueError):
    """The Workspace cannot be run as written; `reason` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Prepared:
    obj: dict[str, Any]  # the expanded object
    ws: Workspace
    resolved: Resolved


def _without_managed_fields(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object minus metadata.managedFields: the pass never reads them, and copying and
    parsing them on every pass was half the cost of preparing a stored Workspace."""
    md = obj.get("metadata")
    if not isinstance(md, Mapping) or "managedFields" not in md:
        return obj
    return {**obj, "metadata": {k: v for k, v in md.items() if k != "managedFields"}}


def prepare(obj: Mapping[str, Any], catalog: Catalog) -> Prepared:
    """Expand, validate, parse and resolve; raises SpecError naming every problem found."""
    obj = _without_managed_fields(obj)
    try:
        expanded = expand_object(obj, catalog)
    except (ValueError, TypeError, KeyError) as exc:
        raise SpecError("InvalidSpec", f"cannot expand the Workspace: {exc}") from exc
    errors = validate_object(expanded, catalog)
    if errors:
        raise SpecError("InvalidSpec", "; ".join(str(e) for e in errors))
    try:
        ws = parse_workspace(expanded)
    except WorkspaceParseError as exc:
        raise SpecError("InvalidSpec", "; ".join(str(e) for e in exc.errors)) from exc
    try:
        resolved = resolve(ws, catalog)
    except (ValueError, KeyError, LookupError) as exc:
        raise SpecError("InvalidSpec", f"cannot resolve the Workspace: {exc}") from exc
    return Prepared(expanded, ws, resolved)


def node_request(obj: Mapping[str, Any], resolved: Resolved) -> NodeRequest:
    md = obj.get("metadata") or {}
    resource = obj.get("resource") or {}
    selector = (resource.get("labelSelector") or {}).get("matchLabels") or {}
    it = resolved.instance_type
    instance_type = it.name if it is not None else str(resource.get("instanceType") or "")
    required = 0.0
    if resolved.model is not None:
        required = float(resolved.model.weights_gib)
    return NodeRequest(
        namespace=str(md.get("namespace", "")),
        name=str(md.get("name", "")),
        uid=str(md.get("uid", "")),
        instance_type=instance_type,
        count=int(resolved.node_count),
        label_selector={str(k): str(v) for k, v in selector.items()},
        preferred_nodes=tuple(str(n) for n in resource.get("preferredNodes") or ()),
        gpus_per_node=int(resolved.gpus_per_node or 0),
        gpu_memory_gib_per_gpu=float(it.gpu_memory_gib) if it is not None else None,
        required_gpu_memory_gib=required,
        storage_gib=int(resolved.storage_gib),
        annotations=dict(md.get("annotations") or {}),
    )
