"""The pass's writes: children from a plan, the finalizer, and status when it changed.

Every write here is a consequence of a pure decision made elsewhere (reconciler.plan,
reconciler.status); this module only sends it and treats the races a level-based loop
expects as normal: AlreadyExists on create, NotFound on delete, a Conflict on update
(someone wrote in between; the next pass sees the new state).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from crds.workspace import FINALIZER
from reconciler.kube import Kube, KubeError
from reconciler.plan import plan
from reconciler.status import Observed, desired_status, status_patch, transitions
from reconciler.world import PassWriter

Obj = dict[str, Any]
log = logging.getLogger(__name__)


def apply_children(writer: PassWriter, desired: Sequence[Obj], actual: Sequence[Obj]) -> list[Obj]:
    """Apply the plan; return the objects as they now are (written or untouched)."""
    out = {(a["kind"], a["metadata"]["name"]): a for a in actual}
    for action in plan(desired, actual):
        k = (action.obj["kind"], action.obj["metadata"]["name"])
        log.info("%s %s (%s)", action.op, action.key, action.why)
        try:
            if action.op == "create":
                out[k] = writer.create(action.obj)
            elif action.op == "update":
                out[k] = writer.update(action.obj)
            else:
                md = action.obj["metadata"]
                writer.delete(action.obj["apiVersion"], action.obj["kind"], md["name"],
                              md.get("namespace"))
                out.pop(k, None)
        except KubeError as exc:
            if exc.conflict and action.op == "update":
                log.info("update of %s raced another writer; next pass retries", action.key)
                continue
            if exc.status == 422 and action.op == "update":  # an immutable field changed
                md = action.obj["metadata"]
                writer.delete(action.obj["apiVersion"], action.obj["kind"], md["name"],
                              md.get("namespace"))
                out.pop(k, None)
                continue
            raise
    return list(out.values())


def finalizer_add(kube: Kube, obj: Obj) -> Obj:
    md = obj["metadata"]
    rv = {"op": "test", "path": "/metadata/resourceVersion", "value": md.get("resourceVersion")}
    op: dict[str, Any] = {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
    if md.get("finalizers"):
        op = {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}
    out = kube.json_patch(obj, [rv, op])
    out.setdefault("apiVersion", obj.get("apiVersion"))
    out.setdefault("kind", obj.get("kind"))
    return out


def finalizer_remove(kube: Kube, obj: Obj) -> None:
    finalizers = list(obj["metadata"].get("finalizers") or [])
    i = finalizers.index(FINALIZER)
    ops = [{"op": "test", "path": f"/metadata/finalizers/{i}", "value": FINALIZER},
           {"op": "remove", "path": f"/metadata/finalizers/{i}"}]
    try:
        kube.json_patch(obj, ops)
    except KubeError as exc:
        if not exc.not_found:
            raise


def write_status(
    kube: Kube, writer: PassWriter, obj: Obj, observed: Observed, now: str, *, dry: bool,
) -> bool:
    """Patch /status only when it differs; an Event for each condition that changed."""
    current: Mapping[str, Any] = obj.get("status") or {}
    wanted = desired_status(observed, now)
    if observed.generation:
        wanted["observedGeneration"] = observed.generation
    patch = status_patch(current, wanted)
    if patch is None:
        return False
    for cond in transitions(observed.previous, wanted["conditions"]):
        kind = "Warning" if cond["status"] == "False" else "Normal"
        writer.event(obj, kind, str(cond["reason"]), f"{cond['type']}: {cond['message']}")
    if dry:
        return True
    kube.merge_patch(obj, {"status": patch}, subresource="status")
    return True
