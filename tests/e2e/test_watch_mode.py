"""`kaito reconcile --watch` as users run it: a real process against the real control plane.

What a user relies on: a change is acted on within seconds (no CronJob tick), the status
tells the reason, and /metrics counts the passes and the writes.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig.cluster import ControlPlane
from rig.kapi import Kube
from rig.procs import free_port
from tests.support.probes import wait_for

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
WS_PATH = "/apis/kaito.sh/v1beta1/namespaces/{ns}/workspaces"


@pytest.fixture
def watcher(control_plane: ControlPlane, namespace: str,
            tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    log = tmp_path / "reconciler.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "--watch", "--kubeconfig",
             str(control_plane.kubeconfig), "--namespace", namespace, "--provisioner", "byo",
             "--metrics-port", str(port), "--debounce", "0.2"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield port, log
    finally:
        time.sleep(2.0)  # let it go idle: SIGTERM must not wait for the next resync (60 s)
        proc.terminate()
        try:  # well inside a pod's default 30 s termination grace period
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"--watch did not stop on SIGTERM within 10 s:\n{log.read_text()[-2000:]}")
    assert code == 0, f"--watch exited {code} on SIGTERM:\n{log.read_text()[-2000:]}"


def _condition(kube: Kube, ns: str, name: str, kind: str) -> dict[str, str] | None:
    obj = kube.get(f"{WS_PATH.format(ns=ns)}/{name}")
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _metrics_up(port: int) -> str | None:
    try:
        return _metrics(port)
    except OSError:  # not listening yet (URLError is an OSError)
        return None


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def test_watch_mode_acts_on_a_new_workspace_and_serves_metrics(
    kube: Kube, namespace: str, watcher: tuple[int, Path]
) -> None:
    port, log = watcher
    wait_for("the metrics endpoint", lambda: _metrics_up(port), timeout=30)
    kube.create(WS_PATH.format(ns=namespace), {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
        "metadata": {"name": "watched"},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4",
                     "labelSelector": {"matchLabels": {"apps": "no-such-nodes"}}},
        "inference": {"preset": {"name": "phi-3-mini-4k-instruct"}},
    })
    cond = wait_for(
        "the watcher to write ResourceReady",
        lambda: _condition(kube, namespace, "watched", "ResourceReady"),
        timeout=30,
    )
    assert cond["status"] == "False", cond
    assert cond["reason"] == "NoMatchingNodes", cond
    text = _metrics(port)
    assert _sample(text, "kaito_reconcile_passes_total") >= 1
    assert _sample(text, "kaito_reconcile_api_calls_total") > 0
    assert "pass:" in log.read_text(), "the pass summary line is missing from the log"
