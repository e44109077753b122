#!/usr/bin/env python3
"""Benchmark of the GPU pods' front: streamed tokens/s direct to the upstream vs through the front.

Why: every request of a vLLM model's Service passes through our front
(runtime/serving/vllm_front.py), so the front must not cap the concurrency vLLM batches
(256 sequences by default) nor add latency. This measures, in one run and on loopback only:
the same client, the same requests, once straight to the upstream (the baseline) and once
through the front's port, at 16, 64 and 256 concurrent streams, median of --runs runs
(direct and front runs alternate so that drifting machine load hits both alike).
The upstream is a stand-in (an asyncio server in its own process, no concurrency limit)
that plays vLLM's continuous batching: every --step-ms it emits one token to every active
stream, 50 tokens per request, as OpenAI server-sent events in chunked HTTP/1.1, so only
our front is measured. It also prints how busy the machine's CPUs were during the runs: on
a small machine the client, the stand-in and the front share them, and near 100 % the
ratio measures the front's CPU per token against theirs more than the front's throughput.
With --vllm MODEL_DIR it measures the same against real vLLM on CPU
(started by the front's own command line) at the concurrency two cores allow.
What it must not do: talk to anything but 127.0.0.1, run without a bound (--budget-s), or
leave a process behind (it stops what it started).
Usage: .venv/bin/python hack/bench-front.py [--runs 5] [--step-ms 20] [--vllm DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TOKENS = 50
PROMPT = "Write a long story about a cat who learns to sail across the sea."


# --- the stand-in upstream ------------------------------------------------------------------

class _Engine:
    """Continuous batching: each step, one token to every active stream."""

    def __init__(self, step_s: float) -> None:
        self.step_s = step_s
        self.active: list[_Gen] = []
        self.wake = asyncio.Event()

    def add(self, gen: _Gen) -> None:
        self.active.append(gen)
        self.wake.set()

    async def run(self) -> None:
        while True:
            if not self.active:
                self.wake.clear()
                await self.wake.wait()
            await asyncio.sleep(self.step_s)
            still = []
            for gen in self.active:
                if gen.step():
                    still.append(gen)
            self.active = still


_EVENT = ('data: {"id":"cmpl-standin","object":"text_completion","created":0,'
          '"model":"standin","choices":[{"index":0,"text":" tok%d","logprobs":null,'
          '"finish_reason":null}]}\n\n')


class _Gen:
    """One request being generated: streams chunks, or answers once at the end."""

    def __init__(self, conn: _Conn, tokens: int, stream: bool) -> None:
        self.conn, self.left, self.stream, self.done = conn, tokens, stream, 0

    def step(self) -> bool:
        t = self.conn.transport
        if t is None or t.is_closing():
            return False
        self.left -= 1
        self.done += 1
        if self.stream:
            ev = (_EVENT % self.done).encode()
            t.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            if self.left <= 0:
                t.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
        elif self.left <= 0:
            body = json.dumps({"id": "cmpl-standin", "object": "text_completion", "created": 0,
                               "model": "standin", "choices": [
                                   {"index": 0, "text": " tok" * self.done,
                                    "finish_reason": "length"}],
                               "usage": {"prompt_tokens": 1, "completion_tokens": self.done,
                                         "total_tokens": self.done + 1}}).encode()
            t.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        return self.left > 0


class _Conn(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one request at a time: /health, /metrics, /v1/*completions."""

    engine: _Engine

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body, self.buf = self.buf[end + 4:end + 4 + length], self.buf[end + 4 + length:]
            self.handle(head[0].split(" ")[:2], body)

    def _reply(self, status: str, ctype: str, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                             % (status.encode(), ctype.encode(), len(body), body))

    def handle(self, line: list[str], body: bytes) -> None:
        method, path = line
        if method == "GET" and path == "/health":
            self._reply("200 OK", "application/json", b"{}")
        elif method == "GET" and path == "/v1/models":
            self._reply("200 OK", "application/json",
                        b'{"object":"list","data":[{"id":"standin","object":"model"}]}')
        elif method == "GET" and path == "/metrics":
            self._reply("200 OK", "text/plain", b"standin_requests_total 1.0\n")
        elif method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
            req = json.loads(body)
            gen = _Gen(self, int(req.get("max_tokens") or TOKENS), bool(req.get("stream")))
            if gen.stream:
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; "
                                     b"charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n")
            self.engine.add(gen)
        else:
            self._reply("404 Not Found", "application/json", b'{"detail":"Not Found"}')


async def _standin(port: int, step_s: float) -> None:
    engine = _Engine(step_s)
    _Conn.engine = engine
    server = await asyncio.get_running_loop().create_server(_Conn, HOST, port, backlog=4096)
    async with server:
        await engine.run()


# --- the client -----------------------------------------------------------------------------

@dataclass
class Run:
    tokens: int
    seconds: float
    ttfts: list[float]
    front_cpu_s: float = 0.0
    busy: float = 0.0  # the machine's CPUs busy during the run (all processes), 0..1

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


def _request(port: int, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST /v1/completions HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def _stream_worker(port: int, request: bytes, count: int, ttfts: list[float]) -> int:
    reader, writer = await asyncio.open_connection(HOST, port, limit=2**20)
    tokens = 0
    try:
        for _ in range(count):
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1]
            if status != b"200" or b"chunked" not in head.lower():
                raise RuntimeError(f"unexpected answer: {head[:200]!r}")
            parts: list[bytes] = []
            first = True
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                if first:
                    ttfts.append(time.perf_counter() - start)
                    first = False
                parts.append(chunk[:-2])
            tokens += b"".join(parts).count(b"data: {")
    finally:
        writer.close()
    return tokens


async def _measure(port: int, streams: int, per_stream: int, body: dict[str, Any],
                   timeout_s: float) -> Run:
    request = _request(port, body)
    ttfts: list[float] = []
    start = time.perf_counter()
    counts = await asyncio.wait_for(asyncio.gather(
        *(_stream_worker(port, request, per_stream, ttfts) for _ in range(streams))), timeout_s)
    return Run(sum(counts), time.perf_counter() - start, ttfts)


async def _round_trips(port: int, count: int) -> list[float]:
    """`count` sequential GET /v1/models on one keep-alive connection, each timed."""
    reader, writer = await asyncio.open_connection(HOST, port)
    request = f"GET /v1/models HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    out = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            out.append(time.perf_counter() - start)
    finally:
        writer.close()
    return out


def _latency(direct_port: int, front_port: int, runs: int) -> tuple[list[float], list[float]]:
    direct: list[float] = []
    front: list[float] = []
    for i in range(runs + 1):  # the first round warms up
        for side, port in [(direct, direct_port), (front, front_port)][::1 if i % 2 else -1]:
            times = asyncio.run(_round_trips(port, 100))
            if i:
                side.extend(times)
    return direct, front


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_ticks() -> tuple[int, int]:
    """The machine's (busy, total) CPU ticks so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _measure_sync(port: int, streams: int, per_stream: int, body: dict[str, Any],
                  timeout_s: float, cpu_pid: int | None = None) -> Run:
    before = _cpu_s(cpu_pid) if cpu_pid else 0.0
    busy0, total0 = _cpu_ticks()
    run = asyncio.run(_measure(port, streams, per_stream, body, timeout_s))
    busy1, total1 = _cpu_ticks()
    run.busy = (busy1 - busy0) / max(1, total1 - total0)
    if cpu_pid:
        run.front_cpu_s = _cpu_s(cpu_pid) - before
    return run


# --- processes ------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _wait_health(url_port: int, proc: subprocess.Popen[bytes], limit_s: float) -> None:
    import http.client

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"a benchmark process exited with {proc.returncode}")
        conn = http.client.HTTPConnection(HOST, url_port, timeout=5)
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass  # not listening yet: the process is still starting
        finally:
            conn.close()
        time.sleep(0.2)
    raise SystemExit(f"port {url_port} did not answer /health 200 within {limit_s:g} s")


def _spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- the benchmark --------------------------------------------------------------------------

@dataclass
class Level:
    streams: int
    direct: list[Run]
    front: list[Run]

    def runs(self, side: str) -> list[Run]:
        return self.direct if side == "direct" else self.front

    def med(self, side: str) -> float:
        return statistics.median(r.rate for r in self.runs(side))

    def ttft_ms(self, side: str) -> float:
        return 1000 * statistics.median(t for r in self.runs(side) for t in r.ttfts)


def _compare(direct_port: int, front_port: int, front_pid: int, levels: Sequence[int],
             runs: int, per_stream: int, body: dict[str, Any], deadline: float) -> list[Level]:
    out = []
    for streams in levels:
        level = Level(streams, [], [])
        # one warm-up of each (connections, caches), not counted
        _measure_sync(direct_port, streams, 1, body, 120)
        _measure_sync(front_port, streams, 1, body, 120)
        for i in range(runs):
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"out of time (--budget-s) at {streams} streams, run {i + 1}")
            order = [("direct", direct_port), ("front", front_port)]
            for side, port in order if i % 2 == 0 else order[::-1]:
                run = _measure_sync(port, streams, per_stream, body, left,
                                    front_pid if side == "front" else None)
                level.runs(side).append(run)
        out.append(level)
        print(f"  {streams} streams done (load {_loadavg()})", file=sys.stderr)
    return out


def _report(title: str, levels: list[Level], runs: int, baseline: str,
            ideal: Callable[[int], float] | None = None) -> None:
    print(title)
    print(f"baseline: {baseline}; median of {runs} runs each; ratio = front / direct")
    print("(CPUs busy: the whole machine's, every process, during the runs: near 100 % the"
          " figures measure CPU contention more than the front)")
    print("streams | ideal tok/s | direct tok/s | front tok/s | ratio | TTFT p50 direct ms |"
          " TTFT p50 front ms | front CPU ms per 1000 tokens | CPUs busy direct | front")
    for lv in levels:
        cpu = statistics.median(1e6 * r.front_cpu_s / r.tokens for r in lv.front)
        top = f"{ideal(lv.streams):11.0f}" if ideal else f"{'-':>11}"
        busy = [100 * statistics.median(r.busy for r in lv.runs(side))
                for side in ("direct", "front")]
        print(f"{lv.streams:7d} | {top} | {lv.med('direct'):12.0f} | {lv.med('front'):11.0f} | "
              f"{lv.med('front') / lv.med('direct'):5.2f} | {lv.ttft_ms('direct'):18.1f} | "
              f"{lv.ttft_ms('front'):17.1f} | {cpu:28.0f} | {busy[0]:14.0f} % | "
              f"{busy[1]:3.0f} %")


def _standin_bench(args: argparse.Namespace, deadline: float) -> None:
    up_port, front_port = _free_port(), _free_port()
    standin = _spawn([__file__, "standin", "--port", str(up_port),
                      "--step-ms", str(args.step_ms)])
    front = _spawn(["-c", "import sys; from runtime.serving.vllm_front import create_front_app,"
                    " serve; serve(create_front_app(sys.argv[1]), sys.argv[2], int(sys.argv[3]))",
                    f"http://{HOST}:{up_port}", HOST, str(front_port)])
    try:
        _wait_health(up_port, standin, 60)
        _wait_health(front_port, front, 60)
        body = {"model": "standin", "prompt": PROMPT, "max_tokens": TOKENS, "stream": True}
        direct_rt, front_rt = _latency(up_port, front_port, args.runs)
        levels = _compare(up_port, front_port, front.pid, args.streams, args.runs,
                          args.requests, body, deadline)
    finally:
        _stop([front, standin])
    _report(f"stand-in upstream: {TOKENS} tokens per request, one token per stream every "
            f"{args.step_ms:g} ms (continuous batching), {args.requests} requests per stream "
            "per run", levels, args.runs, "the same client straight to the stand-in's port",
            ideal=lambda streams: streams * 1000 / args.step_ms)
    q = statistics.quantiles
    print(f"round trip GET /v1/models, {len(direct_rt)} sequential requests on one connection:"
          f" direct p50 {1e3 * statistics.median(direct_rt):.2f} ms, p99 "
          f"{1e3 * q(direct_rt, n=100)[98]:.2f} ms; through the front p50 "
          f"{1e3 * statistics.median(front_rt):.2f} ms, p99 {1e3 * q(front_rt, n=100)[98]:.2f}"
          f" ms; added by the front (p50) "
          f"{1e3 * (statistics.median(front_rt) - statistics.median(direct_rt)):.2f} ms")


def _vllm_bench(args: argparse.Namespace, deadline: float) -> None:
    front_port, vllm_port = _free_port(), _free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    front = subprocess.Popen(
        [sys.executable, "-m", "runtime.serving.vllm_front", "--host", HOST, "--port",
         str(front_port), "--vllm-port", str(vllm_port), "--", "--model", str(args.vllm),
         "--served-model-name", "bench", "--max-model-len", "2048"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_health(front_port, front, min(900.0, deadline - time.monotonic()))
        body = {"model": "bench", "prompt": PROMPT, "max_tokens": TOKENS, "stream": True,
                "temperature": 0, "ignore_eos": True}
        levels = _compare(vllm_port, front_port, front.pid, args.vllm_streams, args.runs, 1,
                          body, deadline)
    finally:
        _stop([front])
    _report(f"real vLLM on CPU ({args.vllm}): {TOKENS} tokens per request, greedy, one request"
            " per stream per run", levels, args.runs,
            "the same client straight to vLLM's port (--vllm-port)")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd")
    s = sub.add_parser("standin", help="(internal) serve the stand-in upstream")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--step-ms", type=float, required=True)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--step-ms", type=float, default=20.0,
                   help="the stand-in's batch step: one token per stream each step")
    p.add_argument("--requests", type=int, default=2, help="requests per stream per run")
    p.add_argument("--streams", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--budget-s", type=float, default=600.0, help="give up after this long")
    p.add_argument("--vllm", type=Path, default=None,
                   help="also measure real vLLM serving this model folder (needs vllm)")
    p.add_argument("--vllm-streams", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--skip-standin", action="store_true",
                   help="only the real-vLLM part (e.g. inside the vllm-runtime CPU image)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: stop children
    if args.cmd == "standin":
        asyncio.run(_standin(args.port, args.step_ms / 1000))
        return 0
    deadline = time.monotonic() + args.budget_s
    print(f"machine: {os.cpu_count()} CPUs, load average at start {_loadavg()}")
    if not args.skip_standin:
        _standin_bench(args, deadline)
    if args.vllm is not None:
        _vllm_bench(args, deadline)
    print(f"load average at end {_loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
