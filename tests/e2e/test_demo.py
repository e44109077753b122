"""`make demo` end to end, twice (cold then warm), then `make down` leaving nothing behind.

Why: the demo is the README's first command and joins every part; this test runs the same
script (`hack/demo.py`) with its own state dir, so it never touches a user's running demo
or the tests' shared control plane. It checks what a newcomer must see (every step
numbered and timed, the Paris answer, the quota reason, the GPU-fit refusal), feeds the
live statuses to the ArgoCD health check, and after `down` that no recorded process,
network namespace or listening port is left.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_argocd import run_health
from tests.support.probes import listening, netns_left, still_running

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "hack" / "demo.py"

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def demo(
    state: Path, command: str, timeout: float
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(DEMO), "--state-dir", str(state), command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done, time.monotonic() - started


def live_workspaces(state: Path) -> dict[str, dict[str, Any]]:
    kubectl = Path(json.loads((state / "cluster.json").read_text())["bin_dir"]) / "kubectl"
    out = subprocess.run(
        [
            str(kubectl),
            "--kubeconfig",
            str(state / "kubeconfig"),
            "get",
            "wk",
            "-n",
            "default",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return {w["metadata"]["name"]: w for w in json.loads(out)["items"]}


def check_walkthrough(output: str) -> None:
    steps = re.findall(r"^\[(\d)/8\] ", output, flags=re.MULTILINE)
    assert steps == [str(n) for n in range(1, 9)], output
    assert len(re.findall(r"done in \d+\.\d s \(total \d+\.\d s\)", output)) == 8
    assert re.search(r"answer: .*Paris", output), output
    assert "exceeding approved standardNCSv3Family Cores quota" in output
    assert "does not fit" in output
    assert "cheapest first" in output
    assert "export KUBECONFIG=" in output
    assert "make down" in output


def test_demo_cold_warm_and_down_leaves_nothing(tmp_path: Path) -> None:
    state = tmp_path / "demo-state"
    try:
        cold, cold_s = demo(state, "up", timeout=1200)
        assert cold.returncode == 0, cold.stdout[-4000:] + cold.stderr[-4000:]
        check_walkthrough(cold.stdout)
        warm, warm_s = demo(state, "up", timeout=600)
        assert warm.returncode == 0, warm.stdout[-4000:] + warm.stderr[-4000:]
        check_walkthrough(warm.stdout)
        assert "reused the running control plane" in warm.stdout
        print(f"demo: cold {cold_s:.1f} s, warm {warm_s:.1f} s")
        assert warm_s < 90, f"warm demo took {warm_s:.1f} s (target: under 90 s)"
        health = {name: run_health(ws)["status"] for name, ws in live_workspaces(state).items()}
        assert sorted(health.values()) == ["Degraded", "Healthy"], health
        procs = json.loads((state / "demo" / "procs.json").read_text())
        cluster = json.loads((state / "cluster.json").read_text())
        ports = [*cluster["ports"].values(), int((state / "demo" / "webhook.port").read_text())]
        netns_file = state / "demo" / "netns.txt"
        netns = netns_file.read_text().split() if netns_file.exists() else []
    finally:
        down, _ = demo(state, "down", timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    pids = [int(p["pid"]) for p in procs.values()] + [int(p) for p in cluster["pids"].values()]
    assert still_running(pids) == []
    assert [p for p in ports if listening(int(p))] == []
    assert netns_left(netns) == []
    assert not state.exists(), sorted(str(p) for p in state.rglob("*"))
    again, _ = demo(state, "status", timeout=60)
    assert again.returncode == 1
    assert "down" in again.stdout
