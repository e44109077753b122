"""The cold-start timeline in status: steps from node, claim and pod status, seconds between
them, an Event per new step, and nothing written once nothing changed."""

from __future__ import annotations

from typing import Any

from reconciler.apply import write_status
from reconciler.provision.base import NodeStatus
from reconciler.startup import Startup, startup_input, timeline
from reconciler.status import Observed, desired_status, status_patch

Obj = dict[str, Any]
T0 = "2026-01-01T00:00:00Z"


def at(minutes: int, seconds: int = 0) -> str:
    return f"2026-01-01T00:{minutes:02d}:{seconds:02d}Z"


WS: Obj = {"metadata": {"name": "ws", "namespace": "default", "creationTimestamp": T0,
                        "generation": 1}}
CLAIM: Obj = {"metadata": {"name": "ws-abc", "creationTimestamp": at(0, 2),
                           "labels": {"kaito.sh/workspace": "ws",
                                      "kaito.sh/workspacenamespace": "default"}}}
OTHER_CLAIM: Obj = {"metadata": {"name": "other", "creationTimestamp": at(0, 1),
                                 "labels": {"kaito.sh/workspace": "other"}}}


def node(name: str, ready_at: str | None) -> Obj:
    conds = [{"type": "Ready", "status": "True" if ready_at else "False",
              "lastTransitionTime": ready_at or T0}]
    return {"metadata": {"name": name}, "status": {"conditions": conds}}


def model_pod(*, scheduled: str, pulled: str | None = None, weights: str | None = None,
              ready: str | None = None) -> Obj:
    conds = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled},
             {"type": "Ready", "status": "True" if ready else "False",
              "lastTransitionTime": ready or scheduled}]
    status: Obj = {"phase": "Running" if pulled else "Pending", "conditions": conds}
    if weights:
        status["initContainerStatuses"] = [{"name": "weights", "state": {"terminated": {
            "exitCode": 0, "startedAt": pulled, "finishedAt": weights}}}]
    if pulled:
        status["containerStatuses"] = [{"name": "model", "ready": bool(ready), "state": {
            "running": {"startedAt": weights or pulled}}}]
    return {"metadata": {"name": "ws-0"}, "status": status}


def steps(rows: list[Obj]) -> list[tuple[str, str, int]]:
    return [(r["step"], r["time"], r["seconds"]) for r in rows]


def test_a_slow_node_shows_as_the_big_number() -> None:
    s = startup_input(WS, ["n1", "n2"], [node("n1", at(3)), node("n2", at(9, 30)),
                                         node("unrelated", at(0, 5))],
                      [CLAIM, OTHER_CLAIM], live=True)
    pod = model_pod(scheduled=at(9, 31), pulled=at(11), weights=at(12), ready=at(13))
    rows = timeline(s, [pod])
    assert steps(rows) == [
        ("Created", T0, 0), ("NodeRequested", at(0, 2), 2), ("NodeReady", at(9, 30), 568),
        ("PodScheduled", at(9, 31), 1), ("ImagePulled", at(11), 89),
        ("WeightsReady", at(12), 60), ("ModelStarted", at(12), 0), ("EngineReady", at(13), 60)]
    assert rows[2]["message"] == "2 node(s) Ready: n1, n2"
    assert "readiness probe" in rows[-1]["message"]


def test_only_steps_every_pod_and_node_reached_are_listed() -> None:
    s = startup_input(WS, ["n1", "n2"], [node("n1", at(1)), node("n2", None)], [], live=True)
    assert steps(timeline(s, [])) == [("Created", T0, 0)]
    both = startup_input(WS, ["n1"], [node("n1", at(1))], [], live=True)
    pods = [model_pod(scheduled=at(2), pulled=at(3), ready=at(4)),
            model_pod(scheduled=at(2, 30))]  # the second pod still pulls its image
    assert steps(timeline(both, pods)) == [("Created", T0, 0), ("NodeReady", at(1), 60),
                                           ("PodScheduled", at(2, 30), 90)]


def test_nodes_ready_before_the_workspace_count_zero_seconds() -> None:
    s = startup_input(WS, ["n1"], [node("n1", "2025-12-31T23:00:00Z")], [], live=True)
    rows = timeline(s, [model_pod(scheduled=at(0, 4))])
    assert steps(rows) == [("Created", T0, 0), ("NodeReady", "2025-12-31T23:00:00Z", 0),
                           ("PodScheduled", at(0, 4), 4)]


def test_a_settled_workload_keeps_the_stored_timeline() -> None:
    stored = [{"step": "Created", "time": T0, "seconds": 0, "message": "Workspace created"}]
    ws = {**WS, "status": {"startup": stored}}
    s = startup_input(ws, ["n1"], [node("n1", at(1))], [CLAIM], live=False)
    assert s == Startup(tuple(stored))
    assert timeline(s, []) == stored


class Recorder:
    """The writer and kube of write_status: records Events and status patches."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.patches: list[Obj] = []

    def event(self, _obj: Obj, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def merge_patch(self, _obj: Obj, patch: Obj, *, subresource: str = "") -> Obj:
        assert subresource == "status"
        self.patches.append(patch)
        return patch


def test_each_new_step_is_an_event_and_a_converged_pass_writes_nothing() -> None:
    rec = Recorder()
    s = startup_input(WS, ["n1"], [node("n1", at(5))], [CLAIM], live=True)
    observed = Observed(generation=1, nodes=NodeStatus(ready=True, nodes=("n1",)), startup=s)
    assert write_status(rec, rec, WS, observed, at(6), dry=False)  # type: ignore[arg-type]
    cold = [e for e in rec.events if e[1] == "ColdStart"]
    assert cold == [("Normal", "ColdStart", "Created after 0 s: Workspace created"),
                    ("Normal", "ColdStart", "NodeRequested after 2 s: 1 NodeClaim(s) created"),
                    ("Normal", "ColdStart", "NodeReady after 298 s: 1 node(s) Ready: n1")]
    stored = {**WS, "status": rec.patches[-1]["status"]}
    same = startup_input(stored, ["n1"], [node("n1", at(5))], [CLAIM], live=True)
    again = Observed(generation=1, nodes=NodeStatus(ready=True, nodes=("n1",)), startup=same,
                     previous=tuple(stored["status"]["conditions"]))
    assert status_patch(stored["status"], desired_status(again, at(7)) | {
        "observedGeneration": 1}) is None
