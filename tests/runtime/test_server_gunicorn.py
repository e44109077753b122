"""The real entry point: `python -m runtime.serving.server` under gunicorn on a real port.

Also: an adapter served with strength 0 gives the base model's log-probabilities and
with strength 1.0 the trained adapter's, read from the server's logprobs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from tests.runtime.conftest import PROMPT, TARGET

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def run_server(args: Sequence[str], tmp: Path, *, ready_s: float = 120,
               cache: Path | None = None) -> Iterator[str]:
    """Start the server; yield its URL once /health is 200; stop it (and fail with its log)."""
    port = _free_port()
    log = tmp / f"server-{port}.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KAITO_MODEL_CACHE": str(cache or tmp / "cache")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.serving.server", "--host", "127.0.0.1",
             "--port", str(port), "--threads", "1", *args],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        statuses = _wait_ready(proc, url, ready_s, log)
        assert statuses[-1] == 200, statuses
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], url: str, ready_s: float, log: Path) -> list[int]:
    seen: list[int] = []
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            code = requests.get(url + "/health", timeout=5).status_code
        except requests.ConnectionError:
            time.sleep(0.1)
            continue
        if not seen or seen[-1] != code:
            seen.append(code)
        if code == 200:
            return seen
        time.sleep(0.1)
    pytest.fail(f"server not ready in {ready_s} s (health {seen}):\n{log.read_text()[-3000:]}")


def test_gunicorn_serves_chat_and_both_openai_endpoints(tiny_model_dir: Path,
                                                        tmp_path: Path) -> None:
    with run_server(["--model", str(tiny_model_dir)], tmp_path) as url, \
            openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0,
                          timeout=60) as client:
        chat = requests.post(url + "/chat", json={"prompt": "hi"}, timeout=60)
        assert chat.status_code == 200
        assert isinstance(chat.json()["Result"], str)
        whole = client.chat.completions.create(
            model="tiny", messages=PROMPT, max_tokens=6, temperature=0)
        streamed = client.chat.completions.create(
            model="tiny", messages=PROMPT, max_tokens=6, temperature=0,
            stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed) == \
            whole.choices[0].message.content
        text = client.completions.create(model="tiny", prompt="a", max_tokens=3)
        assert text.usage is not None
        assert text.usage.completion_tokens == 3
        assert "kaito_generated_tokens_total" in requests.get(url + "/metrics", timeout=10).text


def test_bad_command_lines_exit_2_with_every_reason(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.serving.server", "--model", str(tmp_path / "none"),
         "--port", "0", "--adapter", "x.y=/nowhere:abc", "--adapter", "base=/a"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "--port 0: must be in 1..65535" in proc.stderr
    assert "strength 'abc' is not a number" in proc.stderr
    assert "reserved for the base model" in proc.stderr


def test_a_missing_model_or_adapter_exits_2_before_starting(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.serving.server", "--model", "smollm2-360m-instruct",
         "--adapter", f"fr={tmp_path}:0.5"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "KAITO_MODEL_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 2
    assert "nor a preset shipped on PyPI" in proc.stderr
    assert "has no adapter_config.json" in proc.stderr


def test_a_model_that_fails_to_load_stops_gunicorn_with_code_3(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.serving.server", "--model", str(broken),
         "--host", "127.0.0.1", "--port", str(_free_port())],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "model failed to load" in proc.stderr


def _logprobs(client: openai.OpenAI, model: str) -> tuple[str, list[float]]:
    out = client.chat.completions.create(model=model, messages=PROMPT,
                                         max_tokens=16, temperature=0, logprobs=True)
    content = out.choices[0].logprobs
    assert content is not None
    assert content.content is not None
    return out.choices[0].message.content or "", [t.logprob for t in content.content]


def _reference_logprobs(model_dir: Path, adapter: Path) -> list[float]:
    """Teacher-forced log-probs of TARGET under the trained adapter at full strength."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(model_dir)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".is_gradient_checkpointing. is deprecated",
                                FutureWarning)
        model: Any = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(model_dir), str(adapter))
    prompt = list(tok.apply_chat_template(PROMPT, add_generation_prompt=True,
                                          return_dict=True)["input_ids"])
    answer = list(tok(TARGET, add_special_tokens=False)["input_ids"])
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([prompt + answer])).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    return [float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(answer)]


def test_adapter_strength_0_is_the_base_and_1_is_the_adapter(
        tiny_model_dir: Path, adapter_dir: Path, tmp_path: Path) -> None:
    args = ["--model", str(tiny_model_dir), "--adapter", f"off={adapter_dir}:0",
            "--adapter", f"fr.v1={adapter_dir}:1.0"]
    with run_server(args, tmp_path) as url, \
            openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0,
                          timeout=60) as client:
        ids = [m.id for m in client.models.list()]
        assert ids == ["tiny", "tiny:base", "tiny:off", "tiny:fr.v1"]
        base_text, base_lp = _logprobs(client, "tiny:base")
        off_text, off_lp = _logprobs(client, "tiny:off")
        on_text, on_lp = _logprobs(client, "tiny:fr.v1")
        combined_text, combined_lp = _logprobs(client, "tiny")
    assert off_text == base_text
    assert off_lp == pytest.approx(base_lp, abs=1e-4)
    reference = _reference_logprobs(tiny_model_dir, adapter_dir)
    assert on_text.startswith(TARGET)
    assert on_lp[: len(reference)] == pytest.approx(reference, abs=1e-3)
    assert sum(on_lp[: len(reference)]) > sum(base_lp[: len(reference)]) + 1.0
    # The default id combines every adapter at its strength: 0 + 1.0 is the adapter.
    assert combined_text == on_text
    assert combined_lp == pytest.approx(on_lp, abs=1e-4)
