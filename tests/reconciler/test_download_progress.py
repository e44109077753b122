"""While weights download, the Workspace's status says how far they got, not a bare "not ready".

The data plane (runtime.weights.cache.Progress) logs bytes, total and rate every few seconds;
the reconciler reads the tail of the fetching container's log and puts the last figures in
the InferenceReady condition (or the tuning Job's WorkspaceSucceeded) as DownloadingWeights,
unless the pods show a real problem. The log line is the contract between the two planes,
so the first test feeds the real Progress's output through the reconciler's parser. The log
read through the apiserver and a real kubelet is tested in tests/rig/test_real_nodes.py.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest

from reconciler.podstate import download_progress, fetching_container
from reconciler.provision.base import NodeStatus
from reconciler.reconcile import fetch_progress
from reconciler.status import INFERENCE_READY, WORKSPACE_SUCCEEDED, Observed, conditions
from runtime.weights.cache import Progress

MIB = 1 << 20


def _container_log(tmp_path: Path, *, total: int | None, final: bool) -> str:
    """What the model container's log holds after two progress reports, in the format the
    server configures (runtime.serving.server)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("test.weights.progress")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    watch = tmp_path / "download"
    watch.mkdir()
    try:
        with Progress(tmp_path / "cache", "org--model@0123abc", watch, total, logger,
                      every=3600) as progress:
            (watch / "part-1").write_bytes(b"\0" * (3 * MIB))
            progress.report(final=False)
            (watch / "part-2").write_bytes(b"\0" * MIB)
            progress.report(final=False)
            if not final:
                raise RuntimeError("the download is cut off")  # leaves no "done" line
    except RuntimeError:
        pass
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_the_data_planes_progress_lines_read_as_bytes_total_and_share(tmp_path: Path) -> None:
    text = _container_log(tmp_path, total=16 * MIB, final=False)
    said = download_progress("booting\n" + text)
    assert said is not None
    assert said.startswith("downloading weights: 4.0 of 16.0 MiB (25 %) at "), said
    assert said.endswith(" MiB/s"), said


def test_without_a_total_the_bytes_so_far_are_shown(tmp_path: Path) -> None:
    said = download_progress(_container_log(tmp_path, total=None, final=False))
    assert said is not None
    assert said.startswith("downloading weights: 4.0 MiB so far at "), said


def test_a_finished_download_is_no_longer_progress(tmp_path: Path) -> None:
    assert download_progress(_container_log(tmp_path, total=16 * MIB, final=True)) is None


@pytest.mark.parametrize("text", [
    "", "model loading\n", "weights: x: lots MiB downloaded (fast)",
    "weights: k: 1.0 of 2.0 MiB downloaded (0.5 MiB/s)\x00\xff garbage \n\n",
])
def test_logs_without_a_usable_progress_line(text: str) -> None:
    said = download_progress(text)
    assert said is None or said == "downloading weights: 1.0 of 2.0 MiB (50 %) at 0.5 MiB/s"


def _status(name: str, *, running: bool = True, ready: bool = False) -> dict[str, Any]:
    state = {"running": {"startedAt": "2026-12-03T00:00:00Z"}} if running else {
        "waiting": {"reason": "PodInitializing"}}
    return {"name": name, "ready": ready, "restartCount": 0, "state": state}


def _pod(inits: list[dict[str, Any]], mains: list[dict[str, Any]],
         phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"name": "ws-abc", "namespace": "team"},
            "status": {"phase": phase, "initContainerStatuses": inits,
                       "containerStatuses": mains}}


def test_the_fetching_container_is_the_one_still_loading() -> None:
    puller = _pod([_status("weights")], [_status("model", running=False)], phase="Pending")
    assert fetching_container(puller) == "weights"
    serving = _pod([_status("weights", running=False)], [_status("model")])
    assert fetching_container(serving) == "model"
    assert fetching_container(_pod([], [_status("model", ready=True)])) is None
    assert fetching_container(_pod([], [_status("train", ready=True)])) == "train"
    assert fetching_container(_pod([], [_status("sidecar")])) is None
    assert fetching_container({"metadata": {}}) is None


class _World:
    """The one read fetch_progress makes: the log tail of a pod's container."""

    def __init__(self, logs: dict[tuple[str, str], str | None]) -> None:
        self.logs = logs
        self.reads: list[tuple[str, str, str]] = []

    def log_tail(self, namespace: str, pod: str, container: str) -> str | None:
        self.reads.append((namespace, pod, container))
        return self.logs.get((pod, container))


LINE = ("2026-12-03 INFO runtime.weights.cache "
        "weights: k: 96.0 of 384.0 MiB downloaded (12.5 MiB/s)\n")


def test_one_log_read_per_starting_workspace_and_none_for_ready_pods() -> None:
    loading = _pod([], [_status("model")])
    world = _World({("ws-abc", "model"): LINE})
    said = fetch_progress(world, [loading, loading])  # type: ignore[arg-type]
    assert said == "pod ws-abc: downloading weights: 96.0 of 384.0 MiB (25 %) at 12.5 MiB/s"
    assert world.reads == [("team", "ws-abc", "model")]
    ready = _World({})
    assert fetch_progress(ready, [_pod([], [_status("model", ready=True)])]) is None  # type: ignore[arg-type]
    assert ready.reads == []
    unreadable = _World({("ws-abc", "model"): None})  # no log: the pod status speaks alone
    assert fetch_progress(unreadable, [loading]) is None  # type: ignore[arg-type]


def _deployment(ready: int) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"name": "ws", "generation": 1},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "readyReplicas": ready, "updatedReplicas": 1}}


def _inference(o: Observed) -> dict[str, Any]:
    return next(c for c in conditions(o) if c["type"] == INFERENCE_READY)


PROGRESS = "pod ws-abc: downloading weights: 96.0 of 384.0 MiB (25 %) at 12.5 MiB/s"


def test_status_says_downloading_while_the_pod_is_merely_not_ready() -> None:
    o = Observed(generation=1, nodes=NodeStatus(ready=True, nodes=["n1"]),
                 workload=_deployment(0), target_nodes=1, pods=[_pod([], [_status("model")])],
                 progress=PROGRESS)
    cond = _inference(o)
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "False", "DownloadingWeights", PROGRESS)


def test_a_real_problem_wins_over_download_progress() -> None:
    crashed = _status("model")
    crashed.update(state={"waiting": {"reason": "CrashLoopBackOff"}}, restartCount=2,
                   lastState={"terminated": {"exitCode": 1, "message": "bad weights"}})
    o = Observed(generation=1, nodes=NodeStatus(ready=True, nodes=["n1"]),
                 workload=_deployment(0), target_nodes=1, pods=[_pod([], [crashed])],
                 progress=PROGRESS)
    assert _inference(o)["reason"] == "CrashLoopBackOff"


def test_a_tuning_job_shows_its_base_weights_download() -> None:
    job = {"kind": "Job", "metadata": {"name": "ws-t"}, "status": {"active": 1}}
    o = Observed(generation=1, tuning=True, nodes=NodeStatus(ready=True, nodes=["n1"]),
                 workload=job, pods=[_pod([], [_status("train")])], progress=PROGRESS)
    cond = next(c for c in conditions(o) if c["type"] == WORKSPACE_SUCCEEDED)
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "Unknown", "DownloadingWeights", PROGRESS)
