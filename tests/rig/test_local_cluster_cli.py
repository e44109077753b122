"""`hack/local-cluster.sh up|status|logs|down` on a state dir of its own."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from rig.cluster import ControlPlane, ControlPlaneError
from tests.support.probes import alive

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "local-cluster.sh"


def _cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_up_is_idempotent_and_down_stops_exactly_what_up_started(
        tmp_path: Path, control_plane: ControlPlane) -> None:
    state = tmp_path / "cp"
    started = time.monotonic()
    up = _cli("up", "--state-dir", str(state))
    assert up.returncode == 0, up.stderr + ControlPlane(state).log_tails()
    # The binary cache was used: no build step ran (how long a start takes is printed, a
    # benchmark figure, not asserted).
    assert "step 1/5" not in up.stdout + up.stderr, "`up` rebuilt the control plane"
    print(f"up from the binary cache: {time.monotonic() - started:.1f} s")
    pids = json.loads((state / "cluster.json").read_text())["pids"]
    assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
    again = _cli("up", "--state-dir", str(state))
    assert again.returncode == 0
    assert json.loads((state / "cluster.json").read_text())["pids"] == pids
    status = _cli("status", "--state-dir", str(state))
    assert status.returncode == 0, status.stdout
    assert [line.split()[0] for line in status.stdout.splitlines()[1:5]] == list(pids)
    assert all(line.split()[-1] == "ok" for line in status.stdout.splitlines()[1:5])
    logs = _cli("logs", "kube-apiserver", "--state-dir", str(state))
    assert logs.returncode == 0
    assert logs.stdout.strip()
    assert control_plane.is_up()  # the tests' own control plane is a different one
    down = _cli("down", "--state-dir", str(state))
    assert down.returncode == 0
    assert "kube-apiserver" in down.stdout
    assert not any(alive(pid) for pid in pids.values())
    assert not (state / "cluster.json").exists()
    assert not (state / "etcd").exists()
    assert control_plane.is_up()
    after = _cli("status", "--state-dir", str(state))
    assert after.returncode == 1
    assert "run `up`" in after.stdout


def test_logs_of_an_unknown_component_is_refused_with_the_choices(tmp_path: Path) -> None:
    out = _cli("logs", "kubelet", "--state-dir", str(tmp_path))
    assert out.returncode == 2
    assert "kube-apiserver" in out.stderr


def test_a_component_that_cannot_start_fails_up_with_its_log_tail(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, control_plane: ControlPlane) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr("rig.procs.free_port", lambda: port)
        cp = ControlPlane(tmp_path / "broken")
        with pytest.raises(ControlPlaneError) as info:
            cp.up(timeout=30)
    message = str(info.value)
    assert "etcd exited during start" in message
    assert "address already in use" in message
    assert not (tmp_path / "broken" / "cluster.json").exists()
