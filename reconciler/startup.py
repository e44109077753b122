"""A Workspace's cold-start timeline, from what the API shows, for `status.startup`.

Why: "why did this take 12 minutes?" must be answered by `kubectl get workspace -o yaml`.
The timeline lists, in order, the steps the API can see: Created (the Workspace),
NodeRequested (its first NodeClaim), NodeReady (the last of its nodes Ready), PodScheduled,
ImagePulled (the first container started), WeightsReady (the weights init container
finished, when there is one), ModelStarted (the model container started) and EngineReady
(the pod Ready: the model server's /health passed), each with its time and the seconds
since the step before, so the biggest number names the slow part. The first answer a
client gets is not visible to the API and is not invented here.
Pure and deterministic: every time comes from an object's status or metadata, so the
same world gives the same list and a converged pass writes nothing. Once the workload is
settled and the timeline has reached EngineReady (a tuning Job: once it completed), the
pass reads no pods for it and the stored timeline is kept as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crds.workspace import LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from reconciler.podstate import pods_milestones

Obj = dict[str, Any]
STEPS = ("Created", "NodeRequested", "NodeReady", "PodScheduled", "ImagePulled",
         "WeightsReady", "ModelStarted", "EngineReady")
_POD_TEXT = {
    "PodScheduled": "pod(s) bound to a node",
    "ImagePulled": "first container started (its image pulled)",
    "WeightsReady": "the weights init container finished",
    "ModelStarted": "the model container started",
    "EngineReady": "the model server passed its readiness probe (/health)",
}


@dataclass(frozen=True, slots=True)
class Startup:
    """The inputs of one Workspace's timeline; `live` False keeps `previous` as stored."""

    previous: Sequence[Obj] = ()
    live: bool = False
    created: str = ""
    nodes: Sequence[Obj] = ()  # this Workspace's Node objects
    claims: Sequence[Obj] = ()  # its NodeClaims


def startup_input(ws: Mapping[str, Any], node_names: Sequence[str], all_nodes: Sequence[Obj],
                  all_claims: Sequence[Obj], *, live: bool) -> Startup:
    """Pick this Workspace's nodes and claims out of the pass's lists (only when `live`)."""
    md = ws.get("metadata") or {}
    previous = tuple((ws.get("status") or {}).get("startup") or ())
    if not live:
        return Startup(previous)
    names = set(node_names)
    nodes = [n for n in all_nodes if n.get("metadata", {}).get("name") in names]
    claims = [c for c in all_claims if _owned(c, str(md.get("namespace")), str(md.get("name")))]
    return Startup(previous, True, str(md.get("creationTimestamp") or ""), nodes, claims)


def startup_complete(ws: Mapping[str, Any]) -> bool:
    """Whether the stored timeline reached EngineReady (then it is no longer recomputed)."""
    return any(step.get("step") == "EngineReady"
               for step in (ws.get("status") or {}).get("startup") or ())


def _owned(obj: Mapping[str, Any], namespace: str, name: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return bool(labels.get(LABEL_WORKSPACE) == name
                and labels.get(LABEL_WORKSPACE_NAMESPACE, namespace) == namespace)


def _ready_since(node: Mapping[str, Any]) -> str | None:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "True":
            return str(cond.get("lastTransitionTime") or "") or None
    return None


def _node_steps(s: Startup) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    made = sorted(str(c["metadata"].get("creationTimestamp") or "") for c in s.claims)
    if made and made[0]:
        out["NodeRequested"] = (made[0], f"{len(made)} NodeClaim(s) created")
    ready = [_ready_since(n) for n in s.nodes]
    if ready and all(ready):
        names = ", ".join(sorted(str(n["metadata"]["name"]) for n in s.nodes))
        out["NodeReady"] = (max(t for t in ready if t), f"{len(ready)} node(s) Ready: {names}")
    return out


def _seconds(later: str, earlier: str) -> int:
    try:
        a = datetime.fromisoformat(later.replace("Z", "+00:00"))
        b = datetime.fromisoformat(earlier.replace("Z", "+00:00"))
    except ValueError:
        return 0
    return max(0, round((a - b).total_seconds()))


def timeline(s: Startup, pods: Sequence[Mapping[str, Any]]) -> list[Obj]:
    """The `status.startup` list: one entry per step seen, in STEPS order."""
    if not s.live:
        return [dict(step) for step in s.previous]
    found: dict[str, tuple[str, str]] = {}
    if s.created:
        found["Created"] = (s.created, "Workspace created")
    found.update(_node_steps(s))
    count = len(pods)
    for step, when in pods_milestones(pods).items():
        found[step] = (when, f"{_POD_TEXT[step]} ({count} pod(s))")
    out: list[Obj] = []
    previous = ""
    for step in STEPS:
        if step not in found:
            continue
        when, message = found[step]
        out.append({"step": step, "time": when,
                    "seconds": _seconds(when, previous) if previous else 0,
                    "message": message})
        previous = max(previous, when)
    return out


def new_steps(current: Sequence[Mapping[str, Any]], wanted: Sequence[Mapping[str, Any]]
              ) -> list[Mapping[str, Any]]:
    """Steps of `wanted` that `current` lacks (or had at another time): each gets an Event."""
    old = {(c.get("step"), c.get("time")) for c in current}
    return [w for w in wanted if (w.get("step"), w.get("time")) not in old]
