"""No lost work: where train's checkpoints live, which restart policy keeps them, and what
a restarting pod tells the status. Also the inference pod of a volume adapter (golden).

With an output volume the checkpoints sit on it under `.kaito-work/<uid>-<generation>`
and a retry is a new pod (restartPolicy Never); without one they sit in an emptyDir and
the kubelet restarts the failed container in the same pod (OnFailure). A container that
restarts keeps its last failure in `lastState.terminated`, which must reach the status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crds.workspace import parse_workspace
from reconciler.expansion import SpecError, prepare
from reconciler.objects import desired_objects
from reconciler.provision.base import NodeStatus
from reconciler.status import Observed, conditions
from reconciler.tuning import run_id
from tests.reconciler.helpers import catalog, phi3, tuning_ws
from tests.support.golden import check_golden

GOLDEN = Path(__file__).parent / "golden"
Obj = dict[str, Any]
PVC = {"persistentVolumeClaim": {"claimName": "tuned-adapters"}}


def _volume_output(name: str = "ws-tune-pvc") -> Obj:
    ws = tuning_ws(name, "tune")
    ws["tuning"]["output"] = {"volumeSource": PVC}
    return ws


def _volume_adapter() -> Obj:
    ws = phi3("workspace-phi-3-volume-adapter", "phi-3")
    ws["inference"]["preset"]["name"] = "phi-3-mini-128k-instruct"
    ws["inference"]["adapters"] = [{"source": {"name": "tuned", "volumeSource": PVC},
                                    "strength": "0.5"}]
    return ws


def render(obj: Obj, *, uid: str = "1111-2222", generation: int = 1) -> list[Obj]:
    obj["metadata"].update(namespace="default", uid=uid, generation=generation)
    prep = prepare(obj, catalog())
    return desired_objects(prep.ws, prep.resolved, ["gpu-1"])


def _pod(obj: Obj, **meta: Any) -> Obj:
    spec: Obj = render(obj, **meta)[0]["spec"]["template"]["spec"]
    return spec


def _train_work_dir(pod: Obj) -> str:
    cmd = next(c for c in pod["initContainers"] if c["name"] == "train")["command"]
    return str(cmd[cmd.index("--work-dir") + 1])


@pytest.mark.parametrize(("name", "obj"), [
    pytest.param("tuning-volume-output", _volume_output("workspace-tuning-pvc"),
                 id="tuning-volume-output"),
    pytest.param("phi3-with-volume-adapter", _volume_adapter(), id="phi3-with-volume-adapter"),
])
def test_desired_objects_match_the_golden_files(name: str, obj: Obj, update_golden: bool) -> None:
    check_golden(GOLDEN / f"{name}.yaml", render(obj), update=update_golden)


def test_checkpoints_on_the_output_volume_are_per_run_and_the_retry_is_a_new_pod() -> None:
    pod = _pod(_volume_output())
    assert pod["restartPolicy"] == "Never"
    assert _train_work_dir(pod) == "/mnt/output/.kaito-work/1111-2222-1"
    assert "work" not in {v["name"] for v in pod["volumes"]}
    push = pod["containers"][0]["command"]
    assert push[push.index("--work-dir") + 1] == "/mnt/output/.kaito-work/1111-2222-1"


def test_a_new_generation_or_a_recreated_workspace_never_resumes_an_old_run() -> None:
    first = _train_work_dir(_pod(_volume_output()))
    assert _train_work_dir(_pod(_volume_output())) == first  # the same run: a retry resumes
    assert _train_work_dir(_pod(_volume_output(), generation=2)) != first
    assert _train_work_dir(_pod(_volume_output(), uid="3333-4444")) != first


def test_the_run_id_falls_back_to_the_name_without_a_uid() -> None:
    assert run_id(parse_workspace({"metadata": {"name": "ws", "generation": 3}})) == "ws-3"
    assert run_id(parse_workspace({"metadata": {"name": "ws", "uid": "u-1"}})) == "u-1-0"


def test_without_an_output_volume_the_failed_container_restarts_in_the_same_pod() -> None:
    ws = tuning_ws("ws-tune-image", "tune")
    ws["metadata"]["annotations"]["kaito.sh/tuning-backoff-limit"] = "4"
    job = render(ws)[0]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure"
    assert job["spec"]["backoffLimit"] == 4  # with OnFailure: container restarts, summed
    assert _train_work_dir(pod) == "/mnt/work"
    assert {"name": "work", "emptyDir": {}} in pod["volumes"]
    assert "--work-dir" not in pod["containers"][0]["command"]  # the emptyDir goes with the pod


def _restarting(container: str, last: Obj, *, init: bool) -> Obj:
    """A pod of an OnFailure Job as the kubelet reports it between two restarts."""
    status: Obj = {"name": container, "image": "img:1", "ready": False, "restartCount": 1,
                   "state": {"waiting": {"reason": "CrashLoopBackOff",
                                         "message": "back-off 10s restarting failed container"}},
                   "lastState": {"terminated": last}}
    key = "initContainerStatuses" if init else "containerStatuses"
    return {"metadata": {"name": "ws-tune-abcde"},
            "status": {"phase": "Pending" if init else "Running", key: [status]}}


RUNNING_JOB: Obj = {"kind": "Job", "metadata": {"name": "ws-tune"},
                    "status": {"active": 1, "conditions": []}}


@pytest.mark.parametrize(("pod", "reason", "text"), [
    pytest.param(_restarting("fetch-data", {
        "exitCode": 1, "reason": "Error",
        "message": "bad data: no 'messages' column and no prompt/completion columns; "
                   "found: text, id\n"}, init=True),
        "BadData", "found: text, id", id="bad-data-in-fetch"),
    pytest.param(_restarting("train", {"exitCode": 137, "reason": "OOMKilled"}, init=True),
                 "OOMKilled", "container train was killed for using too much memory",
                 id="oom-in-train"),
    pytest.param(_restarting("push", {
        "exitCode": 1, "reason": "Error",
        "message": "push denied by registry: UNAUTHORIZED: authentication required\n"},
        init=False), "PushDenied", "push denied by registry: UNAUTHORIZED",
        id="push-denied"),
])
def test_a_restarting_containers_last_failure_reaches_the_status(
    pod: Obj, reason: str, text: str,
) -> None:
    observed = Observed(generation=1, tuning=True, nodes=NodeStatus(ready=True, nodes=["gpu-1"]),
                        workload=RUNNING_JOB, pods=[pod])
    succeeded = {c["type"]: c for c in conditions(observed)}["WorkspaceSucceeded"]
    assert succeeded["status"] == "Unknown"  # the Job still retries
    assert succeeded["reason"] == reason
    assert text in succeeded["message"]


def test_an_adapter_naming_both_an_image_and_a_volume_is_an_invalid_spec() -> None:
    ws = _volume_adapter()
    ws["inference"]["adapters"][0]["source"]["image"] = "registry.example.com/adapters/x:1"
    ws["metadata"].update(namespace="default", uid="u", generation=1)
    with pytest.raises(SpecError, match=r"inference\.adapters\[0\]\.source: an adapter source "
                                        r"is an image or a volumeSource, not both"):
        prepare(ws, catalog())
