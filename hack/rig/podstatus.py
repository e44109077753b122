"""Pod status documents as a kubelet would write them, for each simulated outcome.

Why: the reconciler reads pod status to report the real cause of a failure (image pull,
OOM, crash, readiness), so the simulated kubelet must write the same shapes a real
kubelet does: phase, conditions, containerStatuses with waiting/running/terminated.

It must not: read the clock or the API (the caller passes `now` and the pod), or invent
fields a kubelet would not set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Pod = dict[str, Any]
ACTIONS = ("ready", "succeed", "fail", "imagepull", "oom", "crash", "run", "pending")


@dataclass(frozen=True, slots=True)
class Action:
    """What the simulated kubelet does with one pod; `message` feeds waiting/terminated."""

    kind: str
    message: str | None = None
    exit_code: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ACTIONS:
            raise ValueError(f"unknown kubelet action {self.kind!r}; one of {', '.join(ACTIONS)}")


@dataclass(frozen=True, slots=True)
class Observed:
    """What happened to the pod's first container (for 'run': the real process)."""

    started: str  # RFC 3339
    pod_ip: str
    host_ip: str
    ready: bool = False
    exit_code: int | None = None  # set once the container ended
    finished: str | None = None
    message: str | None = None


def _cond(kind: str, ok: bool, now: str, reason: str | None = None) -> dict[str, Any]:
    cond: dict[str, Any] = {"type": kind, "status": "True" if ok else "False",
                            "lastProbeTime": None, "lastTransitionTime": now}
    if reason and not ok:
        cond["reason"] = reason
    return cond


def _container(c: dict[str, Any], i: int, state: dict[str, Any], *, ready: bool,
               restarts: int = 0, last: dict[str, Any] | None = None) -> dict[str, Any]:
    image = c.get("image", "")
    return {"name": c["name"], "image": image, "imageID": f"sim://{image}",
            "containerID": f"sim://{c['name']}-{i}", "ready": ready, "started": "running" in state,
            "restartCount": restarts, "state": state, "lastState": last or {}}


def _terminated(code: int, now: str, started: str, reason: str | None = None,
                message: str | None = None) -> dict[str, Any]:
    default_reason = "Completed" if code == 0 else "Error"
    term: dict[str, Any] = {"exitCode": code, "reason": reason or default_reason,
                            "startedAt": started, "finishedAt": now}
    if message:
        term["message"] = message
    return {"terminated": term}


def _inits(pod: Pod, now: str) -> list[dict[str, Any]]:
    return [_container(c, i, _terminated(0, now, now), ready=True)
            for i, c in enumerate(pod["spec"].get("initContainers") or [])]


def build_status(pod: Pod, action: Action, obs: Observed, now: str) -> dict[str, Any]:
    """The full status for pod under action, given what was observed."""
    spec = pod["spec"]
    containers = spec.get("containers") or []
    always = spec.get("restartPolicy", "Always") == "Always"
    kind = action.kind
    code = obs.exit_code if kind == "run" else action.exit_code
    msg = obs.message if kind == "run" else action.message
    if kind == "run" and obs.exit_code is not None:
        kind = "crash" if always else ("succeed" if obs.exit_code == 0 else "fail")
    phase, states, ready = _phase_and_states(kind, containers, obs, always, code, msg, now)
    status: dict[str, Any] = {
        "phase": phase, "hostIP": obs.host_ip, "startTime": obs.started,
        "conditions": [_cond("Initialized", True, obs.started),
                       _cond("Ready", ready, now, "ContainersNotReady"),
                       _cond("ContainersReady", ready, now, "ContainersNotReady"),
                       _cond("PodScheduled", True, obs.started)],
        "containerStatuses": states, "initContainerStatuses": _inits(pod, obs.started),
        "qosClass": "BestEffort",
    }
    if phase != "Pending":
        status["podIP"] = obs.pod_ip
        status["podIPs"] = [{"ip": obs.pod_ip}]
    return status


def _each(containers: list[dict[str, Any]], state: dict[str, Any],
          ready: bool) -> list[dict[str, Any]]:
    return [_container(c, i, state, ready=ready) for i, c in enumerate(containers)]


def _phase_and_states(kind: str, containers: list[dict[str, Any]], obs: Observed, always: bool,
                      code: int | None, msg: str | None,
                      now: str) -> tuple[str, list[dict[str, Any]], bool]:
    started, end = obs.started, obs.finished or now
    running = {"running": {"startedAt": started}}
    if kind in ("ready", "run"):
        ready = kind == "ready" or obs.ready
        return "Running", _each(containers, running, ready), ready
    if kind in ("succeed", "fail"):
        rc = code if code is not None else (0 if kind == "succeed" else 1)
        states = _each(containers, _terminated(rc, end, started, message=msg), False)
        return ("Succeeded" if rc == 0 else "Failed"), states, False
    if kind == "imagepull":
        image = containers[0].get("image", "") if containers else ""
        waiting = {"waiting": {"reason": "ImagePullBackOff",
                               "message": msg or f'Back-off pulling image "{image}"'}}
        return "Pending", _each(containers, waiting, False), False
    if kind == "pending":
        creating = {"waiting": {"reason": "ContainerCreating"}}
        return "Pending", _each(containers, creating, False), False
    reason = "OOMKilled" if kind == "oom" else "Error"
    rc = 137 if kind == "oom" else (code if code not in (None, 0) else 1)
    last = _terminated(rc, end, started, reason=reason, message=msg)
    if not always:
        return "Failed", _each(containers, last, False), False
    back_off = {"waiting": {"reason": "CrashLoopBackOff",
                            "message": f"back-off 10s restarting failed container; "
                                       f"last: {msg or reason}"}}
    first = _container(containers[0], 0, back_off, ready=False, restarts=1, last=last)
    return "Running", [first, *_each(containers, running, False)[1:]], False
