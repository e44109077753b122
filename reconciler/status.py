"""Workspace status from what the pass observed: conditions that name the real cause.

Pure: given the provisioner's answer, the live workload and its pods, compute the
metav1 Conditions ResourceReady, InferenceReady (inference) or JobStarted and
WorkspaceSucceeded (tuning), and WorkspaceReady, plus workerNodes, targetNodeCount and,
for an inference preset, the served context (maxModelLen) and its GPU layout (parallelism).
`merge_status` keeps lastTransitionTime when a condition's status did not change, so an
unchanged world yields an identical status and the pass writes nothing. No I/O, and the
clock comes in as an argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.podstate import explain_pods
from reconciler.provision.base import NodeStatus
from reconciler.startup import Startup, timeline

Obj = dict[str, Any]
MAX_MESSAGE = 1024

RESOURCE_READY = "ResourceReady"
INFERENCE_READY = "InferenceReady"
JOB_STARTED = "JobStarted"
WORKSPACE_SUCCEEDED = "WorkspaceSucceeded"
WORKSPACE_READY = "WorkspaceReady"


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """What one pass saw for one Workspace."""

    generation: int = 0
    tuning: bool = False
    error: tuple[str, str] | None = None  # (reason, message): spec or expansion problem
    nodes: NodeStatus | None = None
    workload: Obj | None = None  # the live Deployment, StatefulSet or Job
    pods: Sequence[Obj] = ()
    target_nodes: int = 0
    previous: Sequence[Obj] = field(default_factory=tuple)  # conditions already stored
    serving: tuple[int, str] | None = None  # (max-model-len, layout) of an inference preset
    startup: Startup | None = None  # the cold-start timeline's inputs (reconciler.startup)
    progress: str | None = None  # "pod P: downloading weights: ..." while weights download


def _cond(type_: str, ok: bool | None, reason: str, message: str, gen: int) -> Obj:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    return {"type": type_, "status": status, "reason": reason,
            "message": message[:MAX_MESSAGE], "observedGeneration": gen}


def _resource(o: Observed) -> Obj:
    if o.error:
        return _cond(RESOURCE_READY, False, o.error[0], o.error[1], o.generation)
    n = o.nodes
    if n is None:
        return _cond(RESOURCE_READY, None, "Pending", "nodes not checked yet", o.generation)
    if n.ready:
        names = ", ".join(sorted(n.nodes))
        return _cond(RESOURCE_READY, True, "NodesReady",
                     f"{len(n.nodes)} node(s) ready: {names}", o.generation)
    return _cond(RESOURCE_READY, False, n.reason or "NodesNotReady",
                 n.message or "waiting for nodes", o.generation)


def workload_ready(w: Mapping[str, Any]) -> tuple[bool, str]:
    spec, st = w.get("spec") or {}, w.get("status") or {}
    want = int(spec.get("replicas", 1))
    ready = int(st.get("readyReplicas") or 0)
    gen_ok = int(st.get("observedGeneration") or 0) >= int(w["metadata"].get("generation") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    ok = gen_ok and ready >= want and updated >= want
    return ok, f"{w['kind']} {w['metadata']['name']}: {ready}/{want} replicas ready"


def _inference(o: Observed, resource: Obj) -> Obj:
    if o.error:
        return _cond(INFERENCE_READY, False, o.error[0], o.error[1], o.generation)
    if resource["status"] != "True":
        return _cond(INFERENCE_READY, False, "WaitingForNodes",
                     "the model server starts once its nodes are ready", o.generation)
    if o.workload is None:
        return _cond(INFERENCE_READY, False, "WorkloadPending",
                     "the inference workload is being created", o.generation)
    ok, summary = workload_ready(o.workload)
    if ok:
        return _cond(INFERENCE_READY, True, "InferenceReady", summary, o.generation)
    why = _downloading(o, explain_pods(o.pods))
    if why:
        return _cond(INFERENCE_READY, False, why[0], why[1], o.generation)
    return _cond(INFERENCE_READY, False, "InferenceNotReady", summary, o.generation)


# What a pod status says while weights download: nothing worse is happening.
_WAITING = frozenset({"ProbeFailing", "PodPending"})


def _downloading(o: Observed, why: tuple[str, str] | None) -> tuple[str, str] | None:
    """DownloadingWeights with bytes, total and rate in place of `why` (what the pods say),
    unless that is a real problem; `why` itself when nothing is downloading."""
    if o.progress and (why is None or why[0] in _WAITING):
        return "DownloadingWeights", o.progress
    return why


def _job_state(job: Mapping[str, Any]) -> tuple[str, str]:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            return str(cond["type"]), str(cond.get("message") or cond.get("reason") or "")
    return "", ""


def _tuning(o: Observed, resource: Obj) -> tuple[Obj, Obj]:
    g = o.generation
    if o.error:
        return (_cond(JOB_STARTED, False, o.error[0], o.error[1], g),
                _cond(WORKSPACE_SUCCEEDED, False, o.error[0], o.error[1], g))
    if o.workload is None:
        if tuning_finished(o.previous):  # the Job finished and was removed by its TTL
            old = {c.get("type"): c for c in o.previous}
            return dict(old[JOB_STARTED]), dict(old[WORKSPACE_SUCCEEDED])
        reason = "WaitingForNodes" if resource["status"] != "True" else "JobPending"
        return (_cond(JOB_STARTED, False, reason, "the tuning Job is not created yet", g),
                _cond(WORKSPACE_SUCCEEDED, False, "TuningPending", "tuning has not started", g))
    name = o.workload["metadata"]["name"]
    started = _cond(JOB_STARTED, True, "JobStarted", f"tuning Job {name} started", g)
    state, message = _job_state(o.workload)
    if state == "Complete":
        return started, _cond(WORKSPACE_SUCCEEDED, True, "TuningSucceeded",
                              f"tuning Job {name} completed", g)
    why = explain_pods(o.pods)
    if state == "Failed":
        # restartPolicy OnFailure: the Job controller deletes the pod when it fails the Job,
        # so the cause may only be in what an earlier pass saw (a restarting container).
        reason, text = why or _seen_before(o.previous, g) or ("TuningFailed", message)
        return started, _cond(WORKSPACE_SUCCEEDED, False, reason,
                              f"tuning Job {name} failed: {text}", g)
    why = _downloading(o, why)
    if why:
        return started, _cond(WORKSPACE_SUCCEEDED, None, why[0], why[1], g)
    return started, _cond(WORKSPACE_SUCCEEDED, None, "TuningRunning",
                          f"tuning Job {name} is running", g)


# WorkspaceSucceeded reasons that say nothing about a failure's cause.
_NO_CAUSE = frozenset({"TuningPending", "TuningRunning", "PodPending", "ProbeFailing",
                       "DownloadingWeights"})


def _seen_before(previous: Sequence[Mapping[str, Any]], gen: int) -> tuple[str, str] | None:
    """The pod-level cause an earlier pass of this generation stored while the Job ran."""
    old = next((c for c in previous if c.get("type") == WORKSPACE_SUCCEEDED), None)
    if old is None or old.get("status") != "Unknown" or old.get("observedGeneration") != gen:
        return None
    if old.get("reason") in _NO_CAUSE or not old.get("reason"):
        return None
    return str(old["reason"]), str(old.get("message") or "")


def tuning_finished(previous: Sequence[Mapping[str, Any]]) -> bool:
    """A verdict was reached: succeeded, or failed after the Job had started."""
    old = {c.get("type"): c.get("status") for c in previous}
    verdict = old.get(WORKSPACE_SUCCEEDED)
    return verdict == "True" or (verdict == "False" and old.get(JOB_STARTED) == "True")


def conditions(o: Observed) -> list[Obj]:
    resource = _resource(o)
    if o.tuning:
        started, succeeded = _tuning(o, resource)
        ready = dict(succeeded, type=WORKSPACE_READY)
        if succeeded["status"] != "True" and succeeded["status"] != "False":
            ready["status"] = "False"
        return [resource, started, succeeded, ready]
    inference = _inference(o, resource)
    if resource["status"] == "True" and inference["status"] == "True":
        ready = _cond(WORKSPACE_READY, True, "WorkspaceReady", "the model is being served",
                      o.generation)
    else:
        failing = resource if resource["status"] != "True" else inference
        ready = dict(failing, type=WORKSPACE_READY)
    return [resource, inference, ready]


def desired_status(o: Observed, now: str) -> Obj:
    """The status to store; `now` (RFC 3339) stamps only conditions whose status changed."""
    old = {c.get("type"): c for c in o.previous}
    conds = []
    for cond in conditions(o):
        prev = old.get(cond["type"])
        same = prev is not None and prev.get("status") == cond["status"]
        stamp = prev.get("lastTransitionTime") if prev is not None and same else None
        conds.append({**cond, "lastTransitionTime": stamp or cond.get("lastTransitionTime") or now})
    status: Obj = {"conditions": conds}
    if o.nodes is not None:
        status["workerNodes"] = sorted(o.nodes.nodes)
    if o.target_nodes:
        status["targetNodeCount"] = o.target_nodes
    if o.serving is not None:
        status["maxModelLen"] = o.serving[0]
        if o.serving[1]:
            status["parallelism"] = o.serving[1]
    steps = timeline(o.startup, o.pods) if o.startup is not None else []
    if steps:
        status["startup"] = steps
    return status


def status_patch(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> Obj | None:
    """A merge patch for /status, or None when nothing we own changed."""
    patch = {k: v for k, v in wanted.items() if current.get(k) != v}
    return patch or None


def transitions(previous: Sequence[Obj], new: Sequence[Obj]) -> list[Obj]:
    """Conditions whose status or reason changed: each deserves an Event."""
    old = {(c.get("type"), c.get("status"), c.get("reason")) for c in previous}
    return [c for c in new if (c["type"], c["status"], c["reason"]) not in old]
