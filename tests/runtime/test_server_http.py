"""The model server over a real loopback socket (werkzeug), driven by the openai client.

Covers /chat, both OpenAI endpoints with and without streaming, /v1/models, /health,
/metrics, stop strings, cancellation and every bad-request path.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from runtime.serving.app import create_app
from runtime.serving.engine import Engine
from runtime.serving.loading import LoadedModel, load_model
from runtime.serving.settings import ServerSettings
from tests.runtime.conftest import _serve

MSG: Any = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def base_url(tiny_model_dir: Path) -> Iterator[str]:
    engine = Engine(ServerSettings(model=str(tiny_model_dir), max_queue=4))
    engine.load()
    with _serve(create_app(engine)) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url + "/v1", api_key="none", max_retries=0,
                       timeout=60) as opened:  # closed: no pooled socket left to the GC
        yield opened


def _sse(resp: requests.Response) -> list[str]:
    return [line[len("data: "):] for line in resp.iter_lines(decode_unicode=True)
            if line.startswith("data: ")]


def test_health_answers_503_while_loading_and_200_once_loaded(tiny_model_dir: Path) -> None:
    gate = threading.Event()

    def gated(settings: ServerSettings, environ: MutableMapping[str, str]) -> LoadedModel:
        assert gate.wait(30)
        return load_model(settings, environ)

    engine = Engine(ServerSettings(model=str(tiny_model_dir)), loader=gated)
    engine.start_loading()
    with _serve(create_app(engine)) as url:
        first = requests.get(url + "/health", timeout=10)
        assert first.status_code == 503
        assert first.json() == {"status": "loading"}
        busy = requests.post(url + "/chat", json={"prompt": "hi"}, timeout=10)
        assert busy.status_code == 503
        assert busy.json()["error"]["code"] == "model_loading"
        gate.set()
        deadline = time.monotonic() + 30
        while requests.get(url + "/health", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "the model never became ready"
            time.sleep(0.05)


def test_health_reports_a_failed_load_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    engine = Engine(ServerSettings(model=str(tmp_path)))
    engine.start_loading().join(30)
    with _serve(create_app(engine)) as url:
        resp = requests.get(url + "/health", timeout=10)
    assert resp.status_code == 503
    assert resp.json()["status"] == "failed"
    assert resp.json()["error"]


def test_chat_answers_a_prompt_with_result(base_url: str) -> None:
    resp = requests.post(base_url + "/chat", json={
        "prompt": "What is the capital of France?",
        "generate_kwargs": {"max_new_tokens": 6, "do_sample": False}}, timeout=60)
    assert resp.status_code == 200
    assert set(resp.json()) == {"Result"}
    assert isinstance(resp.json()["Result"], str)


def test_chat_with_messages_matches_the_openai_chat_endpoint(base_url: str,
                                                             client: openai.OpenAI) -> None:
    kaito = requests.post(base_url + "/chat", json={
        "messages": MSG, "generate_kwargs": {"max_new_tokens": 8}}, timeout=60).json()
    oai = client.chat.completions.create(model="tiny", messages=MSG,
                                         max_tokens=8, temperature=0)
    assert kaito["Result"] == oai.choices[0].message.content


def test_chat_completion_reports_usage_and_length_finish(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model="tiny", messages=MSG,
                                         max_tokens=5, temperature=0)
    assert out.object == "chat.completion"
    assert out.model == "tiny"
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None
    assert out.usage.completion_tokens == 5
    assert out.usage.prompt_tokens > 0
    assert out.usage.total_tokens == out.usage.prompt_tokens + 5


def test_streamed_chat_completion_equals_the_non_streamed_one(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="tiny", messages=MSG,
                                           max_tokens=12, temperature=0)
    stream = client.chat.completions.create(
        model="tiny", messages=MSG, max_tokens=12, temperature=0,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12


def test_stream_ends_with_done_and_has_no_usage_unless_asked(base_url: str) -> None:
    resp = requests.post(base_url + "/v1/chat/completions", json={
        "messages": MSG, "max_tokens": 4, "stream": True}, stream=True, timeout=60)
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = _sse(resp)
    assert events[-1] == "[DONE]"
    assert all("usage" not in json.loads(e) for e in events[:-1])


def test_completions_with_and_without_stream(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="tiny", prompt="The capital of France",
                                      max_tokens=7, temperature=0, logprobs=2)
    assert whole.object == "text_completion"
    assert whole.usage is not None
    assert whole.usage.completion_tokens == 7
    logprobs = whole.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.token_logprobs is not None
    assert len(logprobs.token_logprobs) == 7
    assert all(lp <= 0 for lp in logprobs.token_logprobs)
    streamed = client.completions.create(model="tiny", prompt="The capital of France",
                                         max_tokens=7, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text


def test_models_lists_the_served_id(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_unknown_model_is_an_openai_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=MSG)
    body: Any = info.value.body
    assert body["code"] == "model_not_found"
    assert body["param"] == "model"


def test_a_prompt_longer_than_the_context_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="tiny", prompt="word " * 400, max_tokens=1)
    body: Any = info.value.body
    assert body["code"] == "context_length_exceeded"
    assert "maximum context length is 256 tokens" in body["message"]


def test_stop_strings_cut_the_answer_before_the_stop(client: openai.OpenAI) -> None:
    full = client.completions.create(model="tiny", prompt="hello", max_tokens=20,
                                     temperature=0).choices[0].text
    stop = full[4:6]
    assert len(stop) == 2, f"the greedy answer {full!r} is too short to pick a stop string"
    cut = client.completions.create(model="tiny", prompt="hello", max_tokens=20,
                                    temperature=0, stop=[stop])
    assert cut.choices[0].text == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="tiny", prompt="hello", max_tokens=20,
                                         temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == full[: full.index(stop)]


def test_a_client_that_goes_away_mid_stream_frees_the_model(base_url: str) -> None:
    resp = requests.post(base_url + "/v1/completions", json={
        "prompt": "hi", "max_tokens": 240, "stream": True}, stream=True, timeout=60)
    first = next(resp.iter_lines())
    assert first.startswith(b"data: ")
    resp.close()
    after = requests.post(base_url + "/chat", json={
        "prompt": "hi", "generate_kwargs": {"max_new_tokens": 2}}, timeout=60)
    assert after.status_code == 200
    # the server saw the client leave and cancelled the generation (status 499), rather
    # than running it to its 240 tokens (how fast that happens is a benchmark's business)
    aborted = 'kaito_request_duration_seconds_count{endpoint="/v1/completions",status="499"}'
    deadline = time.monotonic() + 60
    while aborted not in requests.get(base_url + "/metrics", timeout=30).text:
        assert time.monotonic() < deadline, "the abandoned stream was never cancelled"
        time.sleep(0.1)


def test_concurrent_requests_are_all_answered(base_url: str) -> None:
    def call(i: int) -> int:
        return requests.post(base_url + "/chat", json={
            "prompt": f"number {i}", "generate_kwargs": {"max_new_tokens": 4}},
            timeout=60).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(call, range(4))) == [200] * 4


BAD = [
    pytest.param("/chat", {}, "prompt", id="chat-without-prompt"),
    pytest.param("/chat", {"prompt": ""}, "prompt", id="chat-empty-prompt"),
    pytest.param("/chat", {"prompt": "x", "generate_kwargs": {"temperature": -1}},
                 "temperature", id="chat-negative-temperature"),
    pytest.param("/chat", {"prompt": "x", "generate_kwargs": {"top_p": 0}}, "top_p",
                 id="chat-top-p-zero"),
    pytest.param("/chat", {"prompt": "x", "generate_kwargs": {"num_beams": 4}},
                 "generate_kwargs", id="chat-unknown-kwarg"),
    pytest.param("/chat", {"prompt": "x", "generate_kwargs": {"max_new_tokens": 9999}},
                 "max_tokens", id="chat-too-many-tokens"),
    pytest.param("/chat", {"prompt": "x", "generate_kwargs": {"max_length": 1}},
                 "max_length", id="chat-max-length-below-prompt"),
    pytest.param("/chat", [1, 2], None, id="body-not-an-object"),
    pytest.param("/v1/chat/completions", {"messages": []}, "messages", id="no-messages"),
    pytest.param("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]},
                 "messages", id="bad-role"),
    pytest.param("/v1/chat/completions", {"messages": MSG, "temperature": 3}, "temperature",
                 id="temperature-above-2"),
    pytest.param("/v1/chat/completions", {"messages": MSG, "top_p": 1.5}, "top_p",
                 id="top-p-above-1"),
    pytest.param("/v1/chat/completions", {"messages": MSG, "max_tokens": 0}, "max_tokens",
                 id="max-tokens-zero"),
    pytest.param("/v1/chat/completions", {"messages": MSG, "max_tokens": "5"}, "max_tokens",
                 id="max-tokens-string"),
    pytest.param("/v1/chat/completions", {"messages": MSG, "n": 2}, "n", id="n-two"),
    pytest.param("/v1/chat/completions", {"messages": MSG, "stream": "yes"}, "stream",
                 id="stream-not-bool"),
    pytest.param("/v1/chat/completions", {"messages": MSG, "stream_options": {}},
                 "stream_options", id="stream-options-without-stream"),
    pytest.param("/v1/chat/completions", {"messages": MSG, "top_logprobs": 2},
                 "top_logprobs", id="top-logprobs-without-logprobs"),
    pytest.param("/v1/completions", {"prompt": ["a", "b"]}, "prompt", id="batched-prompt"),
    pytest.param("/v1/completions", {"prompt": "a", "stop": [""]}, "stop", id="empty-stop"),
    pytest.param("/v1/completions", {"prompt": "a", "logprobs": 9}, "logprobs",
                 id="too-many-logprobs"),
]


@pytest.mark.parametrize(("path", "body", "param"), BAD)
def test_bad_requests_get_an_openai_style_400(base_url: str, path: str, body: Any,
                                              param: str | None) -> None:
    resp = requests.post(base_url + path, json=body, timeout=30)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


def test_a_body_that_is_not_json_is_a_400(base_url: str) -> None:
    resp = requests.post(base_url + "/v1/completions", data=b"{oops",
                         headers={"content-type": "application/json"}, timeout=30)
    assert resp.status_code == 400
    assert "not valid JSON" in resp.json()["error"]["message"]


def test_unknown_paths_and_methods_answer_json_errors(base_url: str) -> None:
    missing = requests.get(base_url + "/v1/nothing", timeout=30)
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"
    wrong = requests.get(base_url + "/chat", timeout=30)
    assert wrong.status_code == 405


def test_metrics_count_tokens_ttft_and_latency_by_status(base_url: str) -> None:
    requests.post(base_url + "/chat", json={"prompt": "hi",
                                            "generate_kwargs": {"max_new_tokens": 3}}, timeout=60)
    requests.post(base_url + "/v1/completions", json={"prompt": ""}, timeout=60)
    text = requests.get(base_url + "/metrics", timeout=30).text
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in text.splitlines() if line and not line.startswith("#")}
    assert samples['kaito_generated_tokens_total{model="tiny"}'] >= 3
    assert samples['kaito_time_to_first_token_seconds_count{endpoint="/chat"}'] >= 1
    assert samples['kaito_request_duration_seconds_count{endpoint="/chat",status="200"}'] >= 1
    key = 'kaito_request_duration_seconds_count{endpoint="/v1/completions",status="400"}'
    assert samples[key] >= 1
    assert samples["kaito_model_loaded"] == 1
