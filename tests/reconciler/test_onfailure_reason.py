"""restartPolicy OnFailure: the cause of a failed tuning Job survives the Job deleting its pod.

The Job controller fails an OnFailure Job once the containers' restarts reach backoffLimit
and deletes the pod; a pass that saw the restarting container stored its cause, so the
verdict names it instead of "BackoffLimitExceeded"; a container killed by that deletion
does not hide the older cause, and a known category names itself while restarting.
"""

from __future__ import annotations

from typing import Any

from reconciler.podstate import explain_pods
from reconciler.provision.base import NodeStatus
from reconciler.status import Observed, conditions

Obj = dict[str, Any]
BAD = "bad data: no 'messages' column and no prompt/completion columns; found: text, id"
NODES = NodeStatus(ready=True, nodes=["gpu-1"])


def _job(failed: bool) -> Obj:
    conds = [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
              "message": "Job has reached the specified backoff limit"}] if failed else []
    return {"kind": "Job", "metadata": {"name": "ws"}, "status": {"conditions": conds}}


def _pod(state: Obj, *, deleting: bool = False, restarts: int = 1) -> Obj:
    md: Obj = {"name": "ws-abcde"}
    if deleting:
        md["deletionTimestamp"] = "2026-01-01T00:00:30Z"
    last = {"terminated": {"exitCode": 1, "reason": "Error", "message": BAD + "\n"}}
    cs = {"name": "fetch-data", "ready": False, "restartCount": restarts, "state": state,
          "lastState": last}
    return {"metadata": md, "status": {"phase": "Pending", "initContainerStatuses": [cs]}}


def _succeeded(o: Observed) -> Obj:
    return {c["type"]: c for c in conditions(o)}["WorkspaceSucceeded"]


def test_the_cause_seen_while_restarting_is_kept_when_the_job_fails_and_the_pod_is_gone() -> None:
    crash = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}
    running = _succeeded(Observed(generation=3, tuning=True, nodes=NODES, workload=_job(False),
                                  pods=[_pod(crash)]))
    assert (running["status"], running["reason"]) == ("Unknown", "BadData")
    failed = _succeeded(Observed(generation=3, tuning=True, nodes=NODES, workload=_job(True),
                                 pods=[], previous=[running]))
    assert (failed["status"], failed["reason"]) == ("False", "BadData")
    assert "found: text, id" in failed["message"]
    other_gen = _succeeded(Observed(generation=4, tuning=True, nodes=NODES, workload=_job(True),
                                    pods=[], previous=[running]))
    assert other_gen["reason"] == "TuningFailed"


def test_a_container_killed_by_the_pods_deletion_does_not_hide_the_older_cause() -> None:
    killed = {"terminated": {"exitCode": 137, "reason": "Error"}}
    why = explain_pods([_pod(killed, deleting=True)])
    assert why is not None
    assert why[0] == "BadData"


def test_a_restarted_container_running_again_shows_its_last_failure() -> None:
    why = explain_pods([_pod({"running": {"startedAt": "2026-01-01T00:00:00Z"}}, restarts=2)])
    assert why is not None
    assert why[0] == "BadData"
    assert "restarted 2 time(s)" in why[1]
