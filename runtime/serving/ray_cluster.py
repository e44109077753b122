"""Forms the Ray cluster that multi-node vLLM (pipeline parallel, ray backend) runs on.

Why: the reconciler runs one StatefulSet pod per node and vLLM's ray executor needs a Ray
cluster spanning them. Pod 0 runs the Ray head and waits for every node to join before vLLM
starts; the other pods run a Ray worker and only answer /health.
What it must not do: import ray or vLLM (the `ray` CLI from the image is run as a child
process), or wait without a bound.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web

DEFAULT_RAY_PORT = 6379
_ORDINAL = re.compile(r"-(\d+)$")
_ACTIVE_NODE = re.compile(r"^\s*(\d+)\s+node_\S+")


def uses_ray(vllm_args: Sequence[str]) -> bool:
    """Whether vLLM was asked for the ray distributed executor."""
    args = list(vllm_args)
    for i, arg in enumerate(args):
        if arg == "--distributed-executor-backend=ray":
            return True
        if arg == "--distributed-executor-backend" and args[i + 1:i + 2] == ["ray"]:
            return True
    return False


def expected_nodes(vllm_args: Sequence[str]) -> int:
    """The pipeline-parallel size vLLM was given (one Ray node per stage), default 1."""
    args = list(vllm_args)
    for i, arg in enumerate(args):
        value = None
        if arg.startswith("--pipeline-parallel-size="):
            value = arg.split("=", 1)[1]
        elif arg == "--pipeline-parallel-size" and i + 1 < len(args):
            value = args[i + 1]
        if value is not None:
            if not value.isdigit() or int(value) < 1:
                raise ValueError("--pipeline-parallel-size must be a positive integer, "
                                 f"got {value!r}")
            return int(value)
    return 1


def pod_ordinal(env: Mapping[str, str], hostname: str) -> int:
    """This pod's StatefulSet ordinal: KAITO_POD_ORDINAL, else POD_NAME's (or hostname's) `-N`."""
    override = env.get("KAITO_POD_ORDINAL", "").strip()
    if override:
        if not override.isdigit():
            raise ValueError(f"KAITO_POD_ORDINAL must be a non-negative integer, got {override!r}")
        return int(override)
    name = env.get("POD_NAME") or hostname
    match = _ORDINAL.search(name)
    if match is None:
        raise ValueError(f"cannot read a StatefulSet ordinal from pod name {name!r} "
                         "(expected <statefulset>-<N>; set KAITO_POD_ORDINAL)")
    return int(match.group(1))


def ray_start_argv(ordinal: int, leader: str, port: int) -> list[str]:
    """The `ray start` command for this pod: the head on ordinal 0, a worker elsewhere."""
    if ordinal == 0:
        return ["ray", "start", "--head", f"--port={port}", "--block"]
    if not leader:
        raise ValueError("KAITO_LEADER_ADDRESS is not set: a Ray worker needs the head's address")
    return ["ray", "start", f"--address={leader}:{port}", "--block"]


def ray_status_argv(port: int) -> list[str]:
    """The command the head polls to count the nodes that joined."""
    return ["ray", "status", f"--address=127.0.0.1:{port}"]


def count_active_nodes(status_text: str) -> int:
    """The number of active nodes in `ray status` output (the lines under `Active:`)."""
    count, active = 0, False
    for line in status_text.splitlines():
        stripped = line.strip()
        if stripped.endswith(":"):
            active = stripped == "Active:"
            continue
        match = _ACTIVE_NODE.match(line) if active else None
        if match is not None:
            count += int(match.group(1))
    return count


def wait_for_nodes(expected: int, status: Callable[[], str], alive: Callable[[], bool],
                   timeout_s: float, poll_s: float = 2.0) -> int:
    """Poll until `expected` nodes are active; raise naming how many joined on timeout."""
    deadline = time.monotonic() + timeout_s
    joined = 0
    while True:
        if not alive():
            raise RuntimeError("the Ray head process exited before the cluster formed")
        joined = count_active_nodes(status())
        if joined >= expected:
            return joined
        if time.monotonic() >= deadline:
            raise RuntimeError(f"the Ray cluster has {joined} of {expected} nodes after "
                               f"{timeout_s:g}s; the other pods did not join")
        time.sleep(poll_s)


def run_status(port: int) -> str:
    """`ray status` output, or "" while the head is not answering yet."""
    try:
        done = subprocess.run(ray_status_argv(port), capture_output=True, text=True,  # noqa: S603
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def settings(env: Mapping[str, str]) -> tuple[str, int, float]:
    """Leader address, Ray port and join wait (seconds) from the pod's environment."""
    leader = env.get("KAITO_LEADER_ADDRESS", "")
    port_text = env.get("KAITO_RAY_PORT", str(DEFAULT_RAY_PORT))
    wait_text = env.get("KAITO_RAY_WAIT_S", "900")
    try:
        return leader, int(port_text), float(wait_text)
    except ValueError as exc:
        raise ValueError(f"KAITO_RAY_PORT / KAITO_RAY_WAIT_S must be numbers: {exc}") from exc


def create_worker_app(alive: Callable[[], bool]) -> web.Application:
    """A worker pod's HTTP face: /health only, 200 while its Ray process lives."""

    async def health(_request: web.Request) -> web.Response:
        ok = alive()
        return web.json_response({"status": "ok" if ok else "ray exited", "role": "ray-worker"},
                                 status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/health", health)
    return app
