"""Status conditions name the real cause, and an unchanged world yields no status write."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.podstate import explain_pods
from reconciler.provision.base import NodeStatus
from reconciler.status import Observed, desired_status, status_patch

Obj = dict[str, Any]
NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def pod(*, waiting: Obj | None = None, terminated: Obj | None = None, last: Obj | None = None,
        phase: str = "Running", scheduled: Obj | None = None) -> Obj:
    state: Obj = {"waiting": waiting} if waiting else (
        {"terminated": terminated} if terminated else {"running": {}})
    cs: Obj = {"name": "model", "image": "img:1", "state": state, "ready": False}
    if last:
        cs["lastState"] = {"terminated": last}
    conds = [scheduled] if scheduled else []
    return {"metadata": {"name": "p"}, "status": {"phase": phase, "conditions": conds,
                                                  "containerStatuses": [cs]}}


@pytest.mark.parametrize(("p", "reason", "text"), [
    pytest.param(pod(waiting={"reason": "ImagePullBackOff", "message": "not found"}),
                 "ImagePullBackOff", "cannot pull image img:1: not found", id="image-pull"),
    pytest.param(pod(waiting={"reason": "CrashLoopBackOff"},
                     last={"exitCode": 1, "reason": "Error", "message": "a\nValueError: bad\n"}),
                 "CrashLoopBackOff", "ValueError: bad", id="crash-loop-last-line"),
    pytest.param(pod(waiting={"reason": "CrashLoopBackOff"},
                     last={"exitCode": 137, "reason": "OOMKilled"}), "OOMKilled", "OOMKilled",
                 id="oom"),
    pytest.param(pod(phase="Pending", scheduled={"type": "PodScheduled", "status": "False",
                                                  "message": "0/3 nodes: Insufficient gpu"}),
                 "Unschedulable", "Insufficient gpu", id="unschedulable"),
    pytest.param(pod(), "ProbeFailing", "/health", id="probe"),
    pytest.param(pod(phase="Failed", terminated={"exitCode": 1, "message": "push denied by "
                                                 "registry: 401 UNAUTHORIZED"}),
                 "PushDenied", "401 UNAUTHORIZED", id="push-denied"),
])
def test_pod_problems_are_explained(p: Obj, reason: str, text: str) -> None:
    why = explain_pods([p])
    assert why is not None
    assert why[0] == reason
    assert text in why[1]


def deployment(ready: int) -> Obj:
    return {"kind": "Deployment", "metadata": {"name": "ws", "generation": 2},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 2, "readyReplicas": ready, "updatedReplicas": 1}}


def test_ready_workspace_is_true_true_true_and_a_second_computation_changes_nothing() -> None:
    nodes = NodeStatus(ready=True, nodes=("gpu-1",))
    first = desired_status(Observed(generation=2, nodes=nodes, workload=deployment(1),
                                    target_nodes=1), NOW)
    assert [(c["type"], c["status"]) for c in first["conditions"]] == [
        ("ResourceReady", "True"), ("InferenceReady", "True"), ("WorkspaceReady", "True")]
    again = desired_status(Observed(generation=2, nodes=nodes, workload=deployment(1),
                                    target_nodes=1, previous=first["conditions"]), LATER)
    assert status_patch(first, again) is None


def test_provider_text_reaches_resource_ready_and_workspace_ready() -> None:
    quota = "Operation could not be completed as it results in exceeding approved quota"
    nodes = NodeStatus(ready=False, reason="LaunchFailed", message=quota)
    st = desired_status(Observed(generation=1, nodes=nodes), NOW)
    conds = {c["type"]: c for c in st["conditions"]}
    assert (conds["ResourceReady"]["reason"], conds["ResourceReady"]["message"]) == (
        "LaunchFailed", quota)
    assert conds["WorkspaceReady"]["message"] == quota


def test_transition_time_moves_only_when_the_status_changes() -> None:
    nodes = NodeStatus(ready=True, nodes=("n",))
    first = desired_status(Observed(generation=1, nodes=nodes, workload=deployment(0)), NOW)
    second = desired_status(Observed(generation=1, nodes=nodes, workload=deployment(1),
                                     previous=first["conditions"]), LATER)
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    assert times == {"ResourceReady": NOW, "InferenceReady": LATER, "WorkspaceReady": LATER}
