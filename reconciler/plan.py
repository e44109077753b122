"""Compare desired children with what the cluster has and say what to write: pure.

A child is left alone when its spec-hash annotation matches and the fields we set still
hold our values (someone may have scaled the Deployment by hand; server defaults added
to our objects are not drift). Missing children are created, drifted ones replaced (Jobs,
whose pod template is immutable, are deleted and created again on the next pass) and
owned children that are no longer desired are deleted. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from reconciler.common import ANNOTATION_SPEC_HASH

Obj = dict[str, Any]
Op = Literal["create", "update", "delete"]

# Kinds whose spec cannot be updated in place.
RECREATE_KINDS = frozenset({"Job"})
# Server-owned fields that an update must carry over from the live object.
PRESERVED_SPEC_FIELDS: Mapping[str, tuple[str, ...]] = {
    "Service": ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"),
}


@dataclass(frozen=True, slots=True)
class Action:
    op: Op
    obj: Obj
    why: str

    @property
    def key(self) -> str:
        md = self.obj["metadata"]
        return f"{self.obj['kind']}/{md.get('namespace', '')}/{md['name']}"


def key_of(obj: Mapping[str, Any]) -> tuple[str, str]:
    return str(obj.get("kind")), str(obj.get("metadata", {}).get("name"))


def holds(desired: Any, actual: Any) -> bool:
    """Whether `actual` has every value `desired` sets (extra keys, such as server defaults,
    ignored; lists must match item by item). Stops at the first difference and builds
    nothing: the converged pass asks this of every child of every Workspace, so an equal
    subtree is settled by one C-level comparison and the walk uses plain loops."""
    if desired == actual:
        return True
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return False
        for key, value in desired.items():  # noqa: SIM110 (a loop: no generator per node)
            if not holds(value, actual.get(key)):
                return False
        return True
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return False
        for d, a in zip(desired, actual, strict=True):  # noqa: SIM110 (as above)
            if not holds(d, a):
                return False
        return True
    return False


def drift(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> str:
    """Why `actual` no longer matches `desired`, or "" when it does."""
    want = desired.get("metadata", {}).get("annotations", {}).get(ANNOTATION_SPEC_HASH)
    have = (actual.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
    if want != have:
        return f"spec hash {have or 'missing'} != {want}"
    if desired.get("kind") in RECREATE_KINDS:
        return ""
    for part in ("spec", "data"):
        if part in desired and not holds(desired[part], actual.get(part)):
            return f"{part} was changed outside the reconciler"
    md = desired.get("metadata", {})
    for field in ("labels", "ownerReferences"):
        if not holds(md.get(field), actual.get("metadata", {}).get(field)):
            return f"metadata.{field} was changed outside the reconciler"
    return ""


def update_body(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> Obj:
    """The full object for a PUT: desired plus the server-owned fields of the live object.

    No resourceVersion: an unconditional update, so a controller writing the object's
    status between our LIST and PUT does not defer the repair to the next pass.
    """
    body: Obj = {k: v for k, v in desired.items()}
    md = dict(desired["metadata"])
    live_md = actual.get("metadata", {})
    if live_md.get("finalizers"):
        md["finalizers"] = live_md["finalizers"]
    body["metadata"] = md
    keep = PRESERVED_SPEC_FIELDS.get(str(desired.get("kind")), ())
    if keep and "spec" in body:
        spec = dict(body["spec"])
        for f in keep:
            if f in (actual.get("spec") or {}) and f not in spec:
                spec[f] = actual["spec"][f]
        body["spec"] = spec
    return body


def plan(desired: Iterable[Obj], actual: Iterable[Obj]) -> list[Action]:
    """Actions that make `actual` (this Workspace's owned children) equal to `desired`."""
    have = {key_of(a): a for a in actual}
    want = {key_of(d): d for d in desired}
    actions: list[Action] = []
    for key, obj in want.items():
        live = have.get(key)
        if live is None:
            actions.append(Action("create", obj, "missing"))
            continue
        if live.get("metadata", {}).get("deletionTimestamp"):
            continue  # being deleted; create it again once it is gone
        why = drift(obj, live)
        if not why:
            continue
        if obj["kind"] in RECREATE_KINDS:
            actions.append(Action("delete", live, f"{why}; immutable, recreated next pass"))
        else:
            actions.append(Action("update", update_body(obj, live), why))
    for key, live in have.items():
        if key not in want and not live.get("metadata", {}).get("deletionTimestamp"):
            actions.append(Action("delete", live, "no longer desired"))
    return actions
