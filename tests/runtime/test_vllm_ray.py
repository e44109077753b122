"""The front's Ray cluster forming: the pure commands, and a worker pod run against a fake `ray`.

Ray cannot form a real cluster here; a tiny executable named `ray`, written by the test onto
PATH, records its argv and plays `ray start --block` (sleeps) and `ray status` (prints nodes),
so these tests check OUR commands, ordinal reading, join wait and worker /health.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from runtime.serving import ray_cluster as rc

STATUS_2_NODES = """======== Autoscaler status: 2026-01-01 ========
Node status
---------------------------------------------------------------
Active:
 1 node_aaaa
 1 node_bbbb
Pending:
 (no pending nodes)
Recent failures:
 (no failures)
"""

FAKE_RAY = """#!{python}
import os, sys, time
with open(os.environ["FAKE_RAY_LOG"], "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1:2] == ["status"]:
    print("Active:")
    for i in range(int(os.environ.get("FAKE_RAY_NODES", "1"))):
        print(f" 1 node_{{i}}")
    print("Pending:")
    sys.exit(0)
if "--block" in sys.argv:
    with open(os.environ["FAKE_RAY_LOG"] + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(os.environ["FAKE_RAY_LOG"] + ".tmp", os.environ["FAKE_RAY_LOG"] + ".pid")
    while True:
        time.sleep(1)
"""

RAY_ARGS = ["--", "--model", "m", "--pipeline-parallel-size", "2",
            "--distributed-executor-backend", "ray"]


def test_leader_and_worker_argv() -> None:
    assert rc.ray_start_argv(0, "lead.svc", 6379) == ["ray", "start", "--head", "--port=6379",
                                                      "--block"]
    assert rc.ray_start_argv(1, "ws-0.ws-headless.ns.svc", 7000) == [
        "ray", "start", "--address=ws-0.ws-headless.ns.svc:7000", "--block"]
    with pytest.raises(ValueError, match="KAITO_LEADER_ADDRESS"):
        rc.ray_start_argv(2, "", 6379)


def test_reads_backend_pipeline_and_ordinal() -> None:
    assert rc.uses_ray(RAY_ARGS[1:])
    assert rc.uses_ray(["--distributed-executor-backend=ray"])
    assert not rc.uses_ray(["--distributed-executor-backend", "mp"])
    assert rc.expected_nodes(RAY_ARGS[1:]) == 2
    assert rc.expected_nodes(["--pipeline-parallel-size=3"]) == 3
    assert rc.expected_nodes(["--model", "m"]) == 1
    with pytest.raises(ValueError, match="positive integer"):
        rc.expected_nodes(["--pipeline-parallel-size", "two"])
    assert rc.pod_ordinal({}, "my-ws-12") == 12
    assert rc.pod_ordinal({"POD_NAME": "my-ws-3"}, "host") == 3
    assert rc.pod_ordinal({"KAITO_POD_ORDINAL": "1", "POD_NAME": "my-ws-0"}, "x") == 1
    with pytest.raises(ValueError, match="KAITO_POD_ORDINAL"):
        rc.pod_ordinal({}, "nodash")


def test_counts_nodes_and_wait_names_how_many_joined() -> None:
    assert rc.count_active_nodes(STATUS_2_NODES) == 2
    assert rc.count_active_nodes("") == 0
    assert rc.wait_for_nodes(2, lambda: STATUS_2_NODES, lambda: True, 5, poll_s=0.01) == 2
    with pytest.raises(RuntimeError, match="2 of 3 nodes"):
        rc.wait_for_nodes(3, lambda: STATUS_2_NODES, lambda: True, 0.05, poll_s=0.01)
    with pytest.raises(RuntimeError, match="head process exited"):
        rc.wait_for_nodes(3, lambda: "", lambda: False, 5, poll_s=0.01)


@pytest.fixture
def fake_ray(tmp_path: Path) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "ray"
    script.write_text(FAKE_RAY.format(python=sys.executable))
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_RAY_LOG": str(tmp_path / "ray.log"), "KAITO_RAY_PORT": "6379",
            "KAITO_LEADER_ADDRESS": "ws-0.ws-headless.ns.svc.cluster.local"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def front_proc() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.terminate()
            p.wait(timeout=30)


def _wait_health(url: str, proc: subprocess.Popen[bytes]) -> requests.Response:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the front exited with {proc.returncode}"
        try:
            return requests.get(url + "/health", timeout=2)
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError("the worker front never answered /health")


def test_worker_front_joins_leader_and_serves_health_only(
        fake_ray: dict[str, str], front_proc: list[subprocess.Popen[bytes]]) -> None:
    port = _free_port()
    env = {**fake_ray, "POD_NAME": "ws-1"}
    proc = subprocess.Popen([sys.executable, "-m", "runtime.serving.vllm_front",
                             "--port", str(port), *RAY_ARGS], env=env)
    front_proc.append(proc)
    url = f"http://127.0.0.1:{port}"
    resp = _wait_health(url, proc)
    assert resp.status_code == 200, resp.text
    assert resp.json()["role"] == "ray-worker"
    log = Path(env["FAKE_RAY_LOG"])
    pid_file = Path(str(log) + ".pid")
    deadline = time.monotonic() + 30
    while not pid_file.exists():  # the fake ray is a Python script still starting
        assert time.monotonic() < deadline, "the front never ran the fake `ray start`"
        time.sleep(0.05)
    assert log.read_text().splitlines() == [
        "start --address=ws-0.ws-headless.ns.svc.cluster.local:6379 --block"]
    assert requests.post(url + "/chat", json={"prompt": "hi"}, timeout=5).status_code == 404
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while requests.get(url + "/health", timeout=2).status_code != 503:
        assert time.monotonic() < deadline, "/health stayed 200 after ray died"
        time.sleep(0.1)


def test_leader_front_fails_naming_how_many_joined(fake_ray: dict[str, str]) -> None:
    env = {**fake_ray, "KAITO_POD_ORDINAL": "0", "FAKE_RAY_NODES": "1", "KAITO_RAY_WAIT_S": "1"}
    done = subprocess.run([sys.executable, "-m", "runtime.serving.vllm_front",
                           "--port", str(_free_port()), *RAY_ARGS], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert "1 of 2 nodes" in done.stderr
    lines = Path(env["FAKE_RAY_LOG"]).read_text().splitlines()
    assert lines.count("start --head --port=6379 --block") == 1  # the head races its poll
    assert "status --address=127.0.0.1:6379" in lines
    assert not any(line.startswith("start --address") for line in lines)
