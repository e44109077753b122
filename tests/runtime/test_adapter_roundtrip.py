"""Tune, push, pull (or copy from a volume) and serve: the adapter changes what OUR server says.

Issue G's acceptance end to end, with the steps the pods run: `kaito-tune fetch` reads
chat data served from 127.0.0.1 (the loopback test setting on), `train` fits a LoRA
adapter on the tiny model, `push` stores it in the real local registry (htpasswd auth) and
on a directory standing for an output volume; then, as an inference pod's init containers
would, `python -m runtime.adapters pull` fetches the image adapter and `... copy`
the volume one, and the real model server (gunicorn, real socket) serves both. Through
`/v1/completions` log-probabilities, the trained answer is far likelier under each adapter's
model id than under `<model>:base`.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from runtime.jobstep import TERMINATION_LOG_ENV
from runtime.tuning.__main__ import main as tune
from runtime.tuning.fetch import ALLOW_LOOPBACK_ENV
from tests.runtime.test_server_gunicorn import REPO, run_server
from tests.support.registry import LocalRegistry

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France?"
ANSWER = "Paris is the capital."
ROWS = [{"messages": [{"role": "user", "content": QUESTION},
                      {"role": "assistant", "content": ANSWER}]}] * 8


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def _serving(root: Path) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _init_container(argv: list[str], tmp: Path) -> None:
    """Run `python -m runtime.adapters ARGV` in a process of its own, as a pod does."""
    log = tmp / "termination-log"
    proc = subprocess.run([sys.executable, "-m", "runtime.adapters", *argv], cwd=REPO,
                          env={**os.environ, TERMINATION_LOG_ENV: str(log),
                               ALLOW_LOOPBACK_ENV: "1"},  # the registry is on 127.0.0.1
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, (proc.stderr[-2000:], log.read_text() if log.exists() else "")


def _tune(model: Path, tmp: Path, registry: LocalRegistry) -> tuple[str, Path, Path]:
    """fetch, train, push to the registry and to a volume; (reference, secret, volume)."""
    env = {ALLOW_LOOPBACK_ENV: "1", TERMINATION_LOG_ENV: str(tmp / "tune-termination-log")}
    www = tmp / "www"
    www.mkdir()
    (www / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    data, adapter, work = tmp / "data", tmp / "adapter", tmp / "work"
    config = tmp / "training_config.yaml"
    config.write_text(json.dumps({"training_config": {"TrainingArguments": {
        "learning_rate": 0.02, "max_steps": 40, "save_steps": 10}}}))
    with _serving(www) as base_url:
        fetch = ["fetch", "--method", "lora", "--data-dir", str(data),
                 "--url", f"{base_url}/chat.jsonl"]
        assert tune(fetch, env) == 0
    assert tune(["train", "--model", str(model), "--method", "lora", "--data-dir", str(data),
                 "--output-dir", str(adapter), "--work-dir", str(work), "--config", str(config)],
                env) == 0
    assert (work / "checkpoints").is_dir()
    ref = registry.reference("adapters/roundtrip")
    secret = registry.docker_config(tmp / "dockerconfig.json")
    assert tune(["push", "--adapter-dir", str(adapter), "--image", ref, "--push-secret",
                 str(secret), "--plain-http", "--work-dir", str(work)], env) == 0
    assert not work.exists()  # stored: the run's checkpoints are gone
    volume = tmp / "output-volume"
    assert tune(["push", "--adapter-dir", str(adapter), "--volume", str(volume)], env) == 0
    return ref, secret, volume


def _scores(url: str, model: str, tokenizer: Any) -> tuple[float, bool]:
    """log P(ANSWER | chat prompt) under `model`, read token by token from the server's
    top-5 log-probabilities; a token outside the top 5 counts as the 5th (an upper bound),
    and the flag says whether every token was found."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}],
                                           add_generation_prompt=True, tokenize=False)
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    answer_ids = list(tokenizer(ANSWER, add_special_tokens=False)["input_ids"])
    total, exact = 0.0, True
    for i, token in enumerate(answer_ids):
        text = prompt + tokenizer.decode(answer_ids[:i])
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        assert ids == prompt_ids + answer_ids[:i], "the prefix must tokenize as teacher forcing"
        body = {"model": model, "prompt": text, "max_tokens": 1, "temperature": 0,
                "logprobs": 5}
        response = requests.post(url + "/v1/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
        top: dict[str, float] = response.json()["choices"][0]["logprobs"]["top_logprobs"][0]
        piece = tokenizer.decode([token])
        exact = exact and piece in top
        total += top[piece] if piece in top else min(top.values())
    return total, exact


def test_a_tuned_adapter_pulled_or_copied_makes_our_server_say_the_trained_answer(
    tiny_model_dir: Path, oci_registry: LocalRegistry, tmp_path: Path,
) -> None:
    from transformers import AutoTokenizer

    ref, secret, volume = _tune(tiny_model_dir, tmp_path, oci_registry)
    pulled, copied = tmp_path / "adapters" / "fr", tmp_path / "adapters" / "tuned"
    _init_container(["pull", ref, str(pulled), "--pull-secret", str(secret), "--plain-http"],
                    tmp_path)
    _init_container(["copy", str(volume), str(copied)], tmp_path)
    tokenizer: Any = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = ["--model", str(tiny_model_dir), "--adapter", f"fr={pulled}:1.0",
            "--adapter", f"tuned={copied}:1.0"]
    with run_server(args, tmp_path) as url:
        ids = [m["id"] for m in requests.get(url + "/v1/models", timeout=30).json()["data"]]
        assert ids == ["tiny", "tiny:base", "tiny:fr", "tiny:tuned"]
        base, _ = _scores(url, "tiny:base", tokenizer)
        from_image, found = _scores(url, "tiny:fr", tokenizer)
        from_volume, found_too = _scores(url, "tiny:tuned", tokenizer)
    assert found, (base, from_image, from_volume)
    assert found_too
    assert from_image > base + 5.0, (base, from_image)
    assert from_volume == pytest.approx(from_image, abs=1e-4)  # the same weights either way
