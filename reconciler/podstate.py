"""Read pod statuses and say, in one reason and one message, why a workload is not running.

Covers what users of Kaito ask about most: unschedulable pods (no matching node, no GPU),
image pull back-off, OOMKilled, crash loops (with the last line the container wrote, which
the kubelet puts in the termination message thanks to FallbackToLogsOnError), failed
containers (the tuning job writes bad-data and push-denied reasons there) and probes that
do not pass; and, while weights download, how far they got (from the lines runtime.weights
writes to the container's log). Pure: reads the pod dicts and log text it is given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler import weights

Obj = dict[str, Any]

PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                          "ErrImageNeverPull", "RegistryUnavailable"})
# Lower is worse; the worst finding across pods wins.
SEVERITY = {"OOMKilled": 0, "BadData": 1, "BadConfig": 1, "FetchRefused": 1, "PushDenied": 1,
            "ContainerFailed": 1, "CrashLoopBackOff": 2, "ImagePullBackOff": 3,
            "CreateContainerConfigError": 4, "Unschedulable": 5, "ProbeFailing": 6,
            "PodPending": 7}


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    return lines[-1][:512] if lines else ""


# Categories the tuning job writes at the start of its termination message (runtime.jobstep).
CATEGORIES = (("bad data:", "BadData"), ("bad config:", "BadConfig"),
              ("fetch refused:", "FetchRefused"), ("push denied", "PushDenied"),
              ("out of memory", "OOMKilled"))


def _terminated(name: str, term: Mapping[str, Any]) -> tuple[str, str]:
    reason = str(term.get("reason") or "")
    code = term.get("exitCode")
    detail = last_line(str(term.get("message") or ""))
    if reason == "OOMKilled" or (code == 137 and not detail):
        return "OOMKilled", f"container {name} was killed for using too much memory (OOMKilled)"
    text = f"container {name} exited with code {code}"
    for prefix, why in CATEGORIES:
        if detail.lower().startswith(prefix):
            return why, f"{text}: {detail}"
    return "ContainerFailed", f"{text}: {detail}" if detail else f"{text} ({reason or 'Error'})"


def _container(status: Mapping[str, Any], pod_running: bool,
               deleting: bool = False) -> tuple[str, str] | None:
    name = str(status.get("name", "?"))
    state = status.get("state") or {}
    waiting = state.get("waiting") or {}
    reason = str(waiting.get("reason") or "")
    if reason in PULL_REASONS:
        msg = str(waiting.get("message") or "")
        image = status.get("image", "")
        return "ImagePullBackOff", f"container {name} cannot pull image {image}: {msg}".rstrip(": ")
    last = (status.get("lastState") or {}).get("terminated") or {}
    if reason == "CrashLoopBackOff":
        why, text = _terminated(name, last)
        if why in ("OOMKilled", *(c for _p, c in CATEGORIES)):  # a known cause names itself
            return why, f"{text}; restarting"
        return "CrashLoopBackOff", f"{text}; restarting (crash loop)"
    if reason == "CreateContainerConfigError":
        return reason, f"container {name}: {waiting.get('message', '')}"
    term = state.get("terminated")
    if term and term.get("exitCode", 0) != 0:
        if deleting and last.get("exitCode", 0) != 0:  # killed by the deletion: the cause is older
            return _terminated(name, last)
        return _terminated(name, term)
    restarted = int(status.get("restartCount") or 0) > 0 and not status.get("ready")
    if restarted and last.get("exitCode", 0) != 0:
        why, text = _terminated(name, last)  # restarted by OnFailure and running again
        return why, f"{text}; restarted {status['restartCount']} time(s)"
    if "running" in state and pod_running and not status.get("ready"):
        return "ProbeFailing", f"container {name} is running but /health does not pass yet"
    return None


def explain_pod(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    st = pod.get("status") or {}
    name = pod.get("metadata", {}).get("name", "?")
    for cond in st.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return "Unschedulable", f"pod {name} cannot be scheduled: {cond.get('message', '')}"
    running = st.get("phase") == "Running"
    deleting = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
    found: list[tuple[str, str]] = []
    for cs in [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]:
        why = _container(cs, running, deleting)
        if why:
            found.append(why)
    if found:
        return min(found, key=lambda f: SEVERITY.get(f[0], 99))
    if st.get("phase") == "Pending":
        return "PodPending", f"pod {name} is pending"
    return None


def explain_pods(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """The worst problem across the pods, or None when none is visible."""
    found = [w for w in (explain_pod(p) for p in pods) if w]
    if not found:
        return None
    return min(found, key=lambda f: SEVERITY.get(f[0], 99))


# --- cold start: when each pod reached each step (RFC 3339 times from its status) ------------


def _started(status: Mapping[str, Any]) -> str | None:
    state = status.get("state") or {}
    for kind in ("running", "terminated"):
        when = (state.get(kind) or {}).get("startedAt")
        if when:
            return str(when)
    return None


def _true_since(conditions: Sequence[Mapping[str, Any]], kind: str) -> str | None:
    for cond in conditions:
        if cond.get("type") == kind and cond.get("status") == "True":
            return str(cond.get("lastTransitionTime") or "") or None
    return None


def pod_milestones(pod: Mapping[str, Any]) -> dict[str, str]:
    """Step -> time for one pod: PodScheduled, ImagePulled (its first container started, so
    its image was there), WeightsReady (the weights init container finished), ModelStarted
    (the model container started) and EngineReady (Ready: the server's /health passed)."""
    st = pod.get("status") or {}
    conds = st.get("conditions") or []
    inits = st.get("initContainerStatuses") or []
    mains = st.get("containerStatuses") or []
    out: dict[str, str] = {}
    scheduled = _true_since(conds, "PodScheduled")
    if scheduled:
        out["PodScheduled"] = scheduled
    starts = [t for t in (_started(s) for s in [*inits, *mains]) if t]
    if starts:
        out["ImagePulled"] = min(starts)
    for s in inits:
        done = (s.get("state") or {}).get("terminated") or {}
        if s.get("name") == weights.CONTAINER and done.get("exitCode") == 0 and done.get(
                "finishedAt"):
            out["WeightsReady"] = str(done["finishedAt"])
    model = next((s for s in mains if s.get("name") == "model"), mains[0] if mains else None)
    started = _started(model) if model is not None else None
    if started:
        out["ModelStarted"] = started
    ready = _true_since(conds, "Ready")
    if ready:
        out["EngineReady"] = ready
    return out


def pods_milestones(pods: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Step -> time every pod reached it (the slowest pod's time); steps some pod lacks are
    left out."""
    each = [pod_milestones(p) for p in pods]
    if not each:
        return {}
    common = set(each[0]).intersection(*each[1:])
    return {step: max(m[step] for m in each) for step in common}


# --- weights download progress, read from the log of the container that fetches them --------

# What runtime.weights.cache.Progress logs every few seconds while a download runs (the
# format is a contract with the data plane: tests/reconciler/test_download_progress.py feeds
# the real Progress's output through this pattern).
PROGRESS_LINE = re.compile(
    r"weights: (?P<key>\S+): (?P<done>\d+(?:\.\d+)?)(?: of (?P<total>\d+(?:\.\d+)?))? MiB "
    r"downloaded \((?P<rate>\d+(?:\.\d+)?) MiB/s\)(?P<final>, done)?")
# Containers that fetch weights through runtime.weights: the OCI puller (init), the model
# server (from the Hub, before its /health passes) and the tuning Job's trainer.
FETCHERS = (weights.CONTAINER, "model", "train")


def fetching_container(pod: Mapping[str, Any]) -> str | None:
    """The container of this pod that may be downloading weights now: a fetcher that is
    running and not yet ready (init containers first); None when there is none."""
    st = pod.get("status") or {}
    for cs in [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]:
        running = "running" in (cs.get("state") or {})
        if cs.get("name") in FETCHERS and running and (cs.get("name") == "train"
                                                       or not cs.get("ready")):
            return str(cs["name"])
    return None


def download_progress(log_text: str) -> str | None:
    """'downloading weights: 120.0 of 260.0 MiB (46 %) at 5.1 MiB/s' from the last progress
    line in the log text, None when there is none or the last one says the download is done."""
    lines = list(PROGRESS_LINE.finditer(log_text or ""))
    if not lines or lines[-1]["final"]:
        return None
    last = lines[-1]
    done, rate = float(last["done"]), float(last["rate"])
    if last["total"] and float(last["total"]) > 0:
        total = float(last["total"])
        share = min(100, int(100 * done / total))
        return (f"downloading weights: {done:.1f} of {total:.1f} MiB ({share} %) "
                f"at {rate:.1f} MiB/s")
    return f"downloading weights: {done:.1f} MiB so far at {rate:.1f} MiB/s"
