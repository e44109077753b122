"""The GPU pods' front (/chat, /health, /metrics, /v1/* proxy) against a fake upstream.

vLLM cannot run here; a tiny Flask app on loopback stands in for its OpenAI server, so
these tests check OUR translation and proxying (streaming included), not vLLM.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import requests
from flask import Flask, Response, jsonify, request

from presets.runtime.vllm_front import create_front_app
from tests.runtime.conftest import _serve


def fake_vllm(seen: list[dict[str, Any]]) -> Flask:
    app = Flask("fake_vllm")

    @app.get("/health")
    def health() -> Response:
        return jsonify({})

    @app.get("/metrics")
    def metrics() -> Response:
        return Response("vllm_fake_requests_total 3.0\n", mimetype="text/plain")

    @app.get("/v1/models")
    def models() -> Response:
        return jsonify({"object": "list", "data": [
            {"id": "phi-4", "object": "model", "created": 0, "owned_by": "vllm"}]})

    @app.post("/v1/<path:kind>")
    def complete(kind: str) -> Response:
        body = request.get_json()
        seen.append({"path": kind, **body})
        if body.get("model") not in (None, "phi-4"):
            return Response(json.dumps({"error": {"message": "no such model", "type":
                            "NotFoundError", "param": None, "code": 404}}), status=404,
                            mimetype="application/json")
        chat = kind == "chat/completions"
        if body.get("stream"):
            def gen() -> Iterator[str]:
                for word in ["Pa", "ris"]:
                    delta = {"delta": {"content": word}} if chat else {"text": word}
                    yield "data: " + json.dumps({"id": "x", "object": "chunk", "created": 0,
                                                 "model": "phi-4", "choices": [
                                                     {"index": 0, "finish_reason": None,
                                                      **delta}]}) + "\n\n"
                yield "data: [DONE]\n\n"
            return Response(gen(), mimetype="text/event-stream")
        choice = ({"message": {"role": "assistant", "content": "Paris"}} if chat
                  else {"text": "Paris"})
        return jsonify({"id": "x", "object": "chat.completion" if chat else "text_completion",
                        "created": 0, "model": "phi-4", "choices": [
                            {"index": 0, "finish_reason": "stop", **choice}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 1,
                                  "total_tokens": 4}})

    return app


@pytest.fixture(scope="module")
def front() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    with _serve(fake_vllm(seen)) as upstream, _serve(create_front_app(upstream)) as url:
        yield url, seen


def test_chat_prompt_becomes_a_completion_call(front: tuple[str, list[dict[str, Any]]]
                                               ) -> None:
    url, seen = front
    resp = requests.post(url + "/chat", json={
        "prompt": "capital of France?",
        "generate_kwargs": {"max_new_tokens": 9, "top_k": 5, "do_sample": False}}, timeout=30)
    assert resp.json() == {"Result": "Paris"}
    assert seen[-1] == {"path": "completions", "prompt": "capital of France?",
                        "max_tokens": 9, "top_k": 5, "temperature": 0.0, "top_p": 1.0}


def test_chat_messages_become_a_chat_completion_call(front: tuple[str, list[dict[str, Any]]]
                                                     ) -> None:
    url, seen = front
    msgs = [{"role": "user", "content": "hi"}]
    resp = requests.post(url + "/chat", json={"messages": msgs}, timeout=30)
    assert resp.json() == {"Result": "Paris"}
    assert seen[-1]["path"] == "chat/completions"
    assert seen[-1]["messages"] == msgs


def test_chat_validates_before_calling_vllm(front: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = front
    count = len(seen)
    resp = requests.post(url + "/chat", json={"prompt": "x",
                                              "generate_kwargs": {"top_p": 2}}, timeout=30)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "top_p"
    assert len(seen) == count


def test_openai_client_goes_through_the_proxy_streaming_and_not(
        front: tuple[str, list[dict[str, Any]]]) -> None:
    url, _ = front
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=30)
    assert [m.id for m in client.models.list()] == ["phi-4"]
    msgs: Any = [{"role": "user", "content": "hi"}]
    whole = client.chat.completions.create(model="phi-4", messages=msgs)
    assert whole.choices[0].message.content == "Paris"
    stream = client.chat.completions.create(model="phi-4", messages=msgs, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "Paris"
    text = client.completions.create(model="phi-4", prompt="a", stream=True)
    assert "".join(c.choices[0].text for c in text) == "Paris"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=msgs)


def test_health_and_metrics_include_the_upstream(front: tuple[str, list[dict[str, Any]]]
                                                 ) -> None:
    url, _ = front
    assert requests.get(url + "/health", timeout=30).status_code == 200
    metrics = requests.get(url + "/metrics", timeout=30).text
    assert "vllm_fake_requests_total 3.0" in metrics
    assert "kaito_front_request_duration_seconds" in metrics


def test_an_unreachable_or_dead_upstream_is_a_503() -> None:
    with _serve(create_front_app("http://127.0.0.1:9")) as url:
        assert requests.get(url + "/health", timeout=30).status_code == 503
        resp = requests.post(url + "/v1/completions", json={"prompt": "a"}, timeout=30)
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "upstream_unavailable"
    with _serve(create_front_app("http://127.0.0.1:9", alive=lambda: False)) as url:
        assert requests.get(url + "/health", timeout=30).status_code == 503
