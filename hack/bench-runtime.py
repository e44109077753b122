#!/usr/bin/env python3
"""Benchmark of the CPU model server's overhead against a like-for-like raw `generate`.

Why: the server must add little over the model itself (target < 5 %). The baseline runs
in a process of its own, as the server does, loads the model with the server's own loader
and settings (same dtype, same `--threads`), turns the SAME request into token ids with
the server's own `Engine.prepare` (so the prompt, template and token budget are identical)
and calls `model.generate` once with the server's generation config, greedy, under
`torch.inference_mode()`: everything the server does minus its streamer thread, detokenizer
and HTTP. Both sides generate the same tokens (greedy, same ids), so tokens/s compare
directly. Runs of the baseline and of the server alternate, so drifting machine load hits
both alike. Overhead (wall) = baseline tok/s / server tok/s - 1, positive when the server is
slower; on a loaded machine it is noisy, so the CPU time each side's process used per token
is measured too (/proc for the server's gunicorn worker, process_time for the baseline):
overhead (CPU) = server CPU per token / baseline CPU per token - 1.
What it must not do: download anything, or leave a process running (it stops its own).
Usage: .venv/bin/python hack/bench-runtime.py [--runs 5] [--tokens 48]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
PRESET = "smollm2-135m-instruct"
PROMPT = "Write a long story about a cat who learns to sail across the sea."


def chat_body(tokens: int) -> dict[str, Any]:
    return {"prompt": PROMPT, "generate_kwargs": {"max_new_tokens": tokens}}


def openai_body(tokens: int) -> dict[str, Any]:
    return {"model": PRESET, "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": tokens, "temperature": 0}


# --- the baseline: one process, the server's loader and request preparation, one generate --

def raw_worker(threads: int) -> int:
    """Serve timing requests on stdin/stdout: `chat N`, `openai N` (N new tokens at most)."""
    import torch

    from runtime.serving.engine import Engine
    from runtime.serving.protocol import parse_chat_completion, parse_kaito_chat
    from runtime.serving.settings import parse_settings
    from runtime.serving.streaming import _config

    engine = Engine(parse_settings(["--model", PRESET, "--threads", str(threads)]))
    engine.load()
    model = engine.loaded.model
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        kind, tokens = line.split()
        body = chat_body(int(tokens)) if kind == "chat" else openai_body(int(tokens))
        request = parse_kaito_chat(body) if kind == "chat" else parse_chat_completion(body)
        prep = engine.prepare(request)
        start, cpu = time.perf_counter(), time.process_time()
        ids = torch.tensor([prep.input_ids], dtype=torch.long)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 generation_config=_config(model, prep))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(json.dumps({"seconds": seconds, "cpu": cpu,
                          "tokens": int(out.shape[1]) - ids.shape[1]}), flush=True)
    return 0


class Raw:
    def __init__(self, threads: int, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "raw-worker", "--threads", str(threads)], cwd=REPO,
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._read()

    def _read(self) -> dict[str, Any]:
        out: IO[str] | None = self.proc.stdout
        assert out is not None
        line = out.readline()
        if not line:
            raise SystemExit(f"the baseline process exited ({self.proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(self, kind: str, tokens: int) -> tuple[float, float, int]:
        """(wall seconds, CPU seconds of the process, tokens generated)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{kind} {tokens}\n")
        self.proc.stdin.flush()
        answer = self._read()
        return float(answer["seconds"]), float(answer["cpu"]), int(answer["tokens"])

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# --- the server --------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(threads: int, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    import requests

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.serving.server", "--model", PRESET, "--host",
         "127.0.0.1", "--port", str(port), "--threads", str(threads)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if requests.get(url + "/health", timeout=5).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            pass  # not listening yet: the model server is still starting
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("the server did not become ready in 300 s")


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker_pid(master: int) -> int:
    """The gunicorn worker (the one process that serves and generates) of `master`."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    if len(children) != 1:
        raise SystemExit(f"expected one gunicorn worker under {master}, found {children}")
    return int(children[0])


def _chat(url: str, tokens: int) -> float:
    import requests

    start = time.perf_counter()
    resp = requests.post(url + "/chat", json=chat_body(tokens), timeout=300)
    resp.raise_for_status()
    return time.perf_counter() - start


def _stream(url: str, tokens: int) -> tuple[float, int, float]:
    import openai

    with openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0,
                       timeout=300) as client:
        body = openai_body(tokens)
        start = time.perf_counter()
        first, count = None, 0
        for chunk in client.chat.completions.create(
                model=body["model"], messages=body["messages"], max_tokens=tokens, temperature=0,
                stream=True, stream_options={"include_usage": True}):
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
            if chunk.usage is not None:
                count = chunk.usage.completion_tokens
        return time.perf_counter() - start, count, first or 0.0


def one_setting(threads: int, tokens: int, runs: int, env: dict[str, str]) -> dict[str, float]:
    raw = Raw(threads, env)
    proc, url = _server(threads, env)
    worker = _worker_pid(proc.pid)
    keys = ("raw_chat", "chat", "raw_openai", "stream")
    rates: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}  # CPU ms per token
    ttft: dict[str, list[float]] = {"raw": [], "stream": []}
    try:
        for i in range(runs + 1):  # the first round warms both up and is not counted
            s, s_cpu, n_chat = raw.run("chat", tokens)
            before = _cpu_s(worker)
            chat_s = _chat(url, tokens)
            chat_cpu = _cpu_s(worker) - before
            r_s, r_cpu, n_openai = raw.run("openai", tokens)
            before = _cpu_s(worker)
            stream_s, n_stream, first = _stream(url, tokens)
            stream_cpu = _cpu_s(worker) - before
            r1_s, _, _ = raw.run("openai", 1)  # prefill + one token: the baseline's TTFT
            if n_stream != n_openai:
                raise SystemExit(f"the server made {n_stream} tokens, the baseline {n_openai}:"
                                 " not the same greedy request")
            if i == 0:
                continue
            rates["raw_chat"].append(n_chat / s)
            rates["chat"].append(n_chat / chat_s)  # greedy, same ids: the same tokens
            rates["raw_openai"].append(n_openai / r_s)
            rates["stream"].append(n_stream / stream_s)
            for key, used, count in (("raw_chat", s_cpu, n_chat), ("chat", chat_cpu, n_chat),
                                     ("raw_openai", r_cpu, n_openai),
                                     ("stream", stream_cpu, n_stream)):
                cpu[key].append(1000 * used / count)
            ttft["raw"].append(r1_s)
            ttft["stream"].append(first)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        raw.stop()
    out = {k: statistics.median(v) for k, v in rates.items()}
    out.update({f"cpu_{k}": statistics.median(v) for k, v in cpu.items()})
    out.update({f"ttft_{k}": statistics.median(v) for k, v in ttft.items()})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", nargs="?", default="bench", choices=["bench", "raw-worker"])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--tokens", type=int, default=48)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--cache", type=Path, default=None, help="KAITO_MODEL_CACHE to use")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: stop children
    os.environ.update(HF_HUB_OFFLINE="1", TQDM_DISABLE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    if args.cache is not None:
        os.environ["KAITO_MODEL_CACHE"] = str(args.cache)
    if args.mode == "raw-worker":
        return raw_worker(args.threads[0])
    env = dict(os.environ)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"machine: {os.cpu_count()} CPUs, load average at start {load}", flush=True)
    print(f"SmolLM2-135M ({PRESET}), at most {args.tokens} new tokens, greedy, median of "
          f"{args.runs} runs; baseline: the server's loader and Engine.prepare + one "
          "model.generate in a process of its own, same threads, same token ids")
    print("threads | request | baseline tok/s | server tok/s | overhead (wall) | baseline CPU"
          " ms/token | server CPU ms/token | overhead (CPU) | TTFT baseline s | TTFT server s",
          flush=True)
    for t in args.threads:
        r = one_setting(t, args.tokens, args.runs, env)
        for name, base, served, ttft in (("/chat", "raw_chat", "chat", None),
                                         ("stream", "raw_openai", "stream", "stream")):
            ttfts = (f"{r['ttft_raw']:15.3f} | {r['ttft_stream']:13.3f}" if ttft
                     else f"{'-':>15} | {'-':>13}")
            print(f"{t:7d} | {name:<7} | {r[base]:14.2f} | {r[served]:12.2f} | "
                  f"{(r[base] / r[served] - 1) * 100:14.1f}% | {r['cpu_' + base]:21.1f} | "
                  f"{r['cpu_' + served]:19.1f} | "
                  f"{(r['cpu_' + served] / r['cpu_' + base] - 1) * 100:13.1f}% | {ttfts}",
                  flush=True)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"load average at end {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
