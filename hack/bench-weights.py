#!/usr/bin/env python3
"""Benchmark: pod start to first token for SmolLM2-135M by weights route, next to a raw load.

Why: the weights layer must not make cold start worse than loading the files yourself
(goal: from the node cache within 1.3x of a raw safetensors load + generate). Each run
spawns fresh processes, as a pod would, and times from spawn to the first streamed token:
  raw        a bare python process: transformers from_pretrained of the folder's
             model.safetensors (memory-mapped), then generate until the first token
  node-cache the model server, weights already in the node cache (a restarted pod)
  oci        the init container `python -m runtime.weights pull oci://REF` (a fresh node
             cache, from a local docker-registry) then the model server
  hub        the model server, fresh node cache, downloading from the Hub stand-in
Medians over --runs are printed with the ratio to raw. Everything runs on loopback; the
registry and the stand-in are started here and stopped at the end.
What it must not do: download from the real Hub, or leave a process running.
Usage: .venv/bin/python hack/bench-weights.py [--runs 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from rig.hubstub import running_hub

REPO = Path(__file__).resolve().parent.parent
HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
PRESET = "smollm2-135m-instruct"
QUESTION = "What is the capital of France?"
RAW = r"""
import sys, threading
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer
folder = Path(sys.argv[1]); torch.set_num_threads(int(sys.argv[2]))
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder)  # model.safetensors, memory-mapped
model.eval()
enc = tok.apply_chat_template([{"role": "user", "content": sys.argv[3]}],
                              add_generation_prompt=True, return_tensors="pt", return_dict=True)
streamer = TextIteratorStreamer(tok, skip_prompt=True, timeout=120)
threading.Thread(target=model.generate, kwargs={**enc, "max_new_tokens": 8,
                 "do_sample": False, "streamer": streamer}).start()
for piece in streamer:
    if piece.strip():
        print("FIRST", piece, flush=True)
        break
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def plain_registry(root: Path) -> Iterator[str]:
    """Debian's docker-registry on loopback without auth; yields host:port."""
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config = {"version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
              "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
              "http": {"addr": f"127.0.0.1:{port}"}}
    (root / "config.yml").write_text(json.dumps(config))
    binary = shutil.which("docker-registry")
    if binary is None:
        raise SystemExit("docker-registry is not installed (hack/bootstrap.sh installs it)")
    with open(root / "registry.log", "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=log,
                                stderr=log)
    try:
        deadline = time.monotonic() + 20
        while not _answers(f"http://127.0.0.1:{port}/v2/"):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"docker-registry did not start: {root / 'registry.log'}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def _env(cache: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "KAITO_WEIGHTS_CACHE": str(cache), "KAITO_MODEL_CACHE": str(cache),
            "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1", **extra}


def raw_first_token(folder: Path, threads: int) -> float:
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", RAW, str(folder), str(threads), QUESTION],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("FIRST"):
            elapsed = time.monotonic() - start
            proc.wait(timeout=60)
            return elapsed
    raise SystemExit(f"the raw load produced no token (exit {proc.wait()})")


def server_first_token(model: str, env: dict[str, str], threads: int, log: Path) -> float:
    """Spawn the server (the clock starts here) and time the first streamed token."""
    port = _free_port()
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.serving.server", "--model", model,
             "--served-model-name", PRESET, "--host", "127.0.0.1", "--port", str(port),
             "--threads", str(threads), "--max-model-len", "2048"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if requests.get(url + "/health", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.05)  # not listening yet: the server is still loading the weights
                continue
            time.sleep(0.05)
        body = {"model": PRESET, "stream": True, "max_tokens": 8, "temperature": 0,
                "messages": [{"role": "user", "content": QUESTION}]}
        with requests.post(url + "/v1/chat/completions", json=body, stream=True,
                           timeout=120) as resp:
            for line in resp.iter_lines():
                if not line.startswith(b"data: {"):
                    continue
                delta = json.loads(line[6:])["choices"][0].get("delta", {})
                if (delta.get("content") or "").strip():
                    return time.monotonic() - start
        raise SystemExit("the server streamed no token")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temp)")
    args = p.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-weights-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.update(TQDM_DISABLE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")  # before transformers
    from runtime.netcheck import Policy
    from runtime.serving.loading import resolve_model_dir
    from runtime.weights.registry import push_model

    folder = resolve_model_dir(PRESET, cache=work / "baked")
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    print(f"SmolLM2-135M-Instruct: {size / 2**20:.0f} MiB in {folder}", flush=True)
    results: dict[str, list[float]] = {}
    with running_hub() as hub, plain_registry(work / "registry") as registry:
        hub.add_repo(HF_ID, folder)
        ref = f"{registry}/models/{PRESET}:v1"
        push_model(folder, ref, credentials=None, plain_http=True,
                   policy=Policy(allow_loopback=True))  # the registry is on 127.0.0.1
        hub_env = {"HF_ENDPOINT": hub.endpoint}
        warm = work / "warm-cache"
        subprocess.run([sys.executable, "-m", "runtime.weights", "pull", HF_ID], cwd=REPO,
                       env=_env(warm, **hub_env), check=True, capture_output=True)

        def oci(i: int) -> float:
            cache = work / f"oci-{i}"
            env = _env(cache, KAITO_WEIGHTS_PLAIN_HTTP="1", KAITO_ALLOW_LOOPBACK="1")
            start = time.monotonic()
            subprocess.run([sys.executable, "-m", "runtime.weights", "pull", f"oci://{ref}"],
                           cwd=REPO, env=env, check=True, capture_output=True)
            pulled = time.monotonic() - start
            return pulled + server_first_token(f"oci://{ref}", env, args.threads,
                                               work / f"oci-{i}.log")

        routes: dict[str, Callable[[int], float]] = {
            "raw": lambda i: raw_first_token(folder, args.threads),
            "node-cache": lambda i: server_first_token(
                HF_ID, _env(warm, **hub_env), args.threads, work / f"warm-{i}.log"),
            "oci": oci,
            "hub": lambda i: server_first_token(
                HF_ID, _env(work / f"hub-{i}", **hub_env), args.threads, work / f"hub-{i}.log"),
        }
        for i in range(args.runs):  # interleaved: a busy moment hits every route alike
            for name, one in routes.items():
                results.setdefault(name, []).append(one(i))
                print(f"  run {i + 1} {name:<10} {results[name][-1]:6.2f} s", flush=True)
    raw = statistics.median(results["raw"])
    print(f"\npod start -> first token, SmolLM2-135M, {args.threads} threads, "
          f"median of {args.runs}:")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"  {name:<11} {median:6.2f} s   {median / raw:4.2f}x raw   "
              f"(runs: {', '.join(f'{v:.1f}' for v in values)})")
    load = os.getloadavg()[0]
    print(f"  load average at the end: {load:.1f} on {os.cpu_count()} CPUs")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
