"""The model server's limits: body and prompt sizes, a max_tokens ceiling, bounded
concurrency (429, never a pile-up), no engine lock held for a slow reader, and a /health
that fails when a generation is stuck. Each test fails on the server before issue L.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from runtime.serving.app import create_app
from runtime.serving.engine import Delta, Engine
from runtime.serving.loading import LoadedModel, load_model
from runtime.serving.protocol import parse_completion
from runtime.serving.settings import ServerSettings, SettingsError, parse_settings
from tests.runtime.conftest import _serve


class Gated:
    """The tiny model, except that `generate` waits for `gate` (a wedged engine on demand)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def generate(self, **kwargs: Any) -> Any:
        self.entered.set()
        assert self.gate.wait(120), "test never opened the gate"
        return self._model.generate(**kwargs)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _gated_engine(model_dir: Path, clock: Clock | None = None, **settings: Any
                  ) -> tuple[Engine, Gated]:
    holder: list[Gated] = []

    def loader(s: ServerSettings, environ: MutableMapping[str, str]) -> LoadedModel:
        loaded = load_model(s, environ)
        holder.append(Gated(loaded.model))
        return dataclasses.replace(loaded, model=holder[0])

    kwargs: dict[str, Any] = {"loader": loader}
    if clock is not None:
        kwargs["monotonic"] = clock
    engine = Engine(ServerSettings(model=str(model_dir), **settings), **kwargs)
    engine.load()
    return engine, holder[0]


@pytest.fixture(scope="module")
def small(tiny_model_dir: Path) -> Iterator[str]:
    engine = Engine(ServerSettings(model=str(tiny_model_dir), max_body_bytes=4096,
                                   max_prompt_chars=200, max_tokens_limit=16))
    engine.load()
    with _serve(create_app(engine)) as url:
        yield url


def test_a_body_over_the_limit_is_a_413_before_it_is_parsed(small: str) -> None:
    resp = requests.post(small + "/v1/completions", json={"prompt": "x" * 10_000}, timeout=30)
    assert resp.status_code == 413
    assert resp.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/chat", {"prompt": "y" * 300}, "prompt"),
    ("/v1/completions", {"prompt": "y" * 300}, "prompt"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "y" * 150},
                                           {"role": "user", "content": "z" * 150}]}, "messages"),
])
def test_a_prompt_over_the_character_limit_is_refused_before_tokenizing(
    small: str, path: str, body: dict[str, Any], param: str,
) -> None:
    resp = requests.post(small + path, json=body, timeout=30)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "prompt_too_long"
    assert resp.json()["error"]["param"] == param


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/completions", {"prompt": "hi", "max_tokens": 17}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                              "max_completion_tokens": 17}),
    ("/chat", {"prompt": "hi", "generate_kwargs": {"max_new_tokens": 17}}),
])
def test_max_tokens_above_the_ceiling_is_a_400(small: str, path: str, body: dict[str, Any]
                                               ) -> None:
    resp = requests.post(small + path, json=body, timeout=30)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "max_tokens"


def test_the_default_budget_never_exceeds_the_ceiling(small: str) -> None:
    resp = requests.post(small + "/v1/completions", json={"prompt": "hi"}, timeout=60)
    assert resp.status_code == 200
    assert resp.json()["usage"]["completion_tokens"] <= 16


def test_json_nested_beyond_reason_is_a_400_not_a_500(small: str) -> None:
    body = "[" * 2000 + "]" * 2000
    resp = requests.post(small + "/v1/completions", data=body,
                         headers={"Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 400


def test_the_settings_refuse_limits_that_make_no_sense() -> None:
    with pytest.raises(SettingsError) as err:
        parse_settings(["--model", "m", "--max-body-bytes", "0", "--max-prompt-chars", "0",
                        "--max-tokens-limit", "0", "--max-queue", "-1", "--stuck-after", "0"])
    assert len(err.value.problems) == 5


def test_requests_beyond_the_running_one_and_the_queue_get_429_not_a_pile_up(
    tiny_model_dir: Path,
) -> None:
    engine, model = _gated_engine(tiny_model_dir, max_queue=1)
    body = {"prompt": "hi", "generate_kwargs": {"max_new_tokens": 2}}
    with _serve(create_app(engine)) as url, ThreadPoolExecutor(2) as pool:
        running = pool.submit(requests.post, url + "/chat", json=body, timeout=120)
        assert model.entered.wait(60)
        waiting = pool.submit(requests.post, url + "/chat", json=body, timeout=120)
        while engine.active < 2:
            assert not waiting.done(), waiting.result().text
            threading.Event().wait(0.01)
        refused = requests.post(url + "/chat", json=body, timeout=30)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "server_busy"
        assert refused.headers["Retry-After"]
        model.gate.set()
        assert running.result().status_code == 200
        assert waiting.result().status_code == 200
    assert engine.active == 0


def test_a_stream_nobody_reads_does_not_hold_the_engine(tiny_model_dir: Path) -> None:
    engine = Engine(ServerSettings(model=str(tiny_model_dir), max_queue=2))
    engine.load()
    # greedy, on a prompt the tiny model (seed 0) continues for all 8 tokens: a sampled
    # first token may end the text, and then there is no stream left to hold
    first = engine.run(engine.prepare(parse_completion(
        {"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0})))
    assert isinstance(next(first), Delta)  # the writer now blocks on a slow client
    second = engine.prepare(parse_completion({"prompt": "hello", "max_tokens": 2}))
    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(lambda: list(engine.run(second)))
        events = done.result(timeout=120)  # before issue L: waits for `first` forever
    assert events
    first.close()


def test_health_fails_while_a_generation_makes_no_progress(tiny_model_dir: Path) -> None:
    clock = Clock()
    engine, model = _gated_engine(tiny_model_dir, clock=clock, stuck_after_s=300)
    with _serve(create_app(engine)) as url, ThreadPoolExecutor(1) as pool:
        assert requests.get(url + "/health", timeout=10).status_code == 200
        call = pool.submit(requests.post, url + "/chat", json={"prompt": "hi"}, timeout=120)
        assert model.entered.wait(60)
        clock.now += 299
        assert requests.get(url + "/health", timeout=10).status_code == 200
        clock.now += 2
        stuck = requests.get(url + "/health", timeout=10)
        assert stuck.status_code == 503
        assert stuck.json()["status"] == "stuck"
        model.gate.set()
        assert call.result().status_code == 200
        assert requests.get(url + "/health", timeout=10).status_code == 200


def test_with_an_api_key_file_every_model_call_needs_the_bearer_token(
    tiny_model_dir: Path, tmp_path: Path,
) -> None:
    key = tmp_path / "api-key"
    key.write_text("s3cret-key\n")
    engine = Engine(ServerSettings(model=str(tiny_model_dir), api_key_file=key))
    engine.load()
    body = {"prompt": "hi", "max_tokens": 2}
    with _serve(create_app(engine)) as url:
        assert requests.get(url + "/health", timeout=10).status_code == 200  # probes stay open
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"}):
            refused = requests.post(url + "/v1/completions", json=body, headers=headers,
                                    timeout=30)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "invalid_api_key"
        assert requests.get(url + "/v1/models", timeout=10).status_code == 401
        ok = requests.post(url + "/v1/completions", json=body,
                           headers={"Authorization": "Bearer s3cret-key"}, timeout=60)
        assert ok.status_code == 200


def test_without_an_api_key_file_the_api_is_open_as_before(small: str) -> None:
    assert requests.get(small + "/v1/models", timeout=10).status_code == 200
