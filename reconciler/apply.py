"""The pass's writes: children from a plan, the finalizer, and status when it changed.

Every write here is a consequence of a pure decision made elsewhere (reconciler.plan,
reconciler.status); this module only sends it and treats the races a level-based loop
expects as normal: AlreadyExists on create (of an object its Workspace owns), NotFound on
delete, a Conflict on update (someone wrote in between; the next pass sees the new state).
A 422 on update recreates the child only when the API says a field is immutable; any other
422, and a same-named object owned by someone else, is a ChildError for the status.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from crds.workspace import FINALIZER, FINALIZERS_RELEASED
from reconciler.kube import Kube, KubeError
from reconciler.plan import plan
from reconciler.startup import new_steps
from reconciler.status import Observed, desired_status, status_patch, transitions
from reconciler.world import ChildError, PassWriter

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
                out[k] = writer.create_owned(action.obj)
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
            if exc.immutable and action.op == "update":  # recreated, as the API asks
                md = action.obj["metadata"]
                writer.delete(action.obj["apiVersion"], action.obj["kind"], md["name"],
                              md.get("namespace"))
                out.pop(k, None)
                continue
            if exc.status == 422 and action.op == "update":  # refused for another reason
                raise ChildError("ChildRejected", f"the API refused the update of "
                                 f"{action.key}: {exc.message}") from exc
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
    """Drop our finalizer and upstream Kaito's (a migrated Workspace carries that one), each
    guarded by a test op, from the highest index down so the indices stay right."""
    finalizers = list(obj["metadata"].get("finalizers") or [])
    ops: list[Obj] = []
    for i in sorted((i for i, f in enumerate(finalizers) if f in FINALIZERS_RELEASED),
                    reverse=True):
        ops += [{"op": "test", "path": f"/metadata/finalizers/{i}", "value": finalizers[i]},
                {"op": "remove", "path": f"/metadata/finalizers/{i}"}]
    if not ops:
        return
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
    for step in new_steps(current.get("startup") or (), wanted.get("startup") or ()):
        writer.event(obj, "Normal", "ColdStart", f"{step['step']} after {step['seconds']} s: "
                     f"{step['message']}")
    if dry:
        return True
    kube.merge_patch(obj, {"status": patch}, subresource="status")
    return True
