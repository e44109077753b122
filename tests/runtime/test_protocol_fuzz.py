"""Hypothesis over the model server's request parsing: any JSON value in, a GenRequest or a
RequestError out, never another exception (which the server would answer with a 500); and
the same bodies, raw bytes and over-deep JSON text through the HTTP app (a tiny model
loaded): always an answer of the server's own, never a 500.

The generators are wide on purpose: odd types in every field, huge and negative numbers,
floats where integers go, long strings, unhashable values where strings go, deep nesting.
The examples run are in the run's "Hypothesis examples" summary, which `make test` prints.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.serving.app import create_app
from runtime.serving.engine import Engine
from runtime.serving.protocol import (
    GenRequest,
    RequestError,
    parse_chat_completion,
    parse_completion,
    parse_kaito_chat,
)
from runtime.serving.settings import ServerSettings
from tests.support.fuzzing import Long, repeated

EXAMPLES = 2000
scalars = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.text(max_size=40) | st.sampled_from([2**63, -(2**63) - 1, 10**400, 1e308])
           | st.sampled_from(["\ud800", "\x00", "NaN", "1e999", "-0"])
           # a prompt past the server's --max-prompt-chars default (200,000)
           | repeated(st.characters(), st.integers(1_000, 250_000)))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                      max_leaves=30)
KEYS = ["model", "messages", "prompt", "stream", "stream_options", "max_tokens",
        "max_completion_tokens", "temperature", "top_p", "top_k", "n", "echo", "stop", "seed",
        "logprobs", "top_logprobs", "repetition_penalty", "generate_kwargs", "include_usage"]
KWARGS = ["max_length", "max_new_tokens", "temperature", "top_p", "top_k", "do_sample",
          "repetition_penalty", "seed"]
message = st.dictionaries(st.sampled_from(["role", "content", "name"]),
                          values | st.sampled_from(["user", "system", "assistant"]), max_size=3)
deep = st.builds(lambda n, as_dict: [[]] if n < 2 else _nest(n, as_dict),
                 st.integers(1, 1000), st.booleans())
bodies = st.one_of(
    values,
    st.dictionaries(st.sampled_from(KEYS), values, max_size=8),
    st.fixed_dictionaries({"messages": st.lists(message | values, max_size=4)},
                          optional={k: values for k in KEYS if k != "messages"}),
    st.fixed_dictionaries({"prompt": st.text(max_size=200) | values},
                          optional={"generate_kwargs": st.dictionaries(
                              st.sampled_from(KWARGS), values, max_size=4) | values}),
    deep.map(lambda d: {"messages": d, "prompt": d, "generate_kwargs": {"seed": d}}),
)


def _nest(n: int, as_dict: bool = False) -> Any:
    out: Any = []
    for _ in range(n):
        out = {"content": out} if as_dict else [out]
    return out


PARSERS: list[Callable[[Any], GenRequest]] = [parse_chat_completion, parse_completion,
                                              parse_kaito_chat]


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=bodies)
def test_any_json_body_parses_or_is_a_request_error(body: Any) -> None:
    for parse in PARSERS:
        out = _outcome(parse, body)
        if isinstance(out, RequestError):
            assert 400 <= out.status < 500
            assert out.body()["error"]["message"]
        else:
            assert isinstance(out, GenRequest)


def _outcome(parse: Callable[[Any], GenRequest], body: Any) -> GenRequest | RequestError:
    """The parse result or its RequestError; any other exception fails the test."""
    try:
        return parse(body)
    except RequestError as exc:
        return exc


HTTP_EXAMPLES = 400
MAX_BODY = 64 * 1024
PATHS = ["/chat", "/v1/chat/completions", "/v1/completions"]


def _json_text(body: Any) -> Long | None:
    try:
        return Long(json.dumps(body))
    except (RecursionError, ValueError):  # deeper than Python's encoder goes: raw text below
        return None


small = (st.none() | st.booleans() | st.integers(-3, 10) | st.floats(-1, 3)
         | st.text(max_size=20))
sampling = {"max_tokens": small, "temperature": small, "top_p": small, "top_k": small,
            "stream": st.booleans() | small, "seed": small, "stop": small | st.lists(small),
            "n": small, "echo": small, "model": small}
plausible = st.one_of(  # nearly right requests, so that many are served (200)
    st.fixed_dictionaries({"prompt": st.text(max_size=60)}, optional=sampling),
    st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries({
        "role": st.sampled_from(["user", "system", "assistant", "tool", ""]),
        "content": st.text(max_size=60) | small}), max_size=3)}, optional=sampling),
    st.fixed_dictionaries({"prompt": st.text(max_size=60)}, optional={
        "generate_kwargs": st.dictionaries(st.sampled_from(KWARGS), small, max_size=4)}),
)
raw_bodies = st.one_of(  # bodies as sent: JSON text (short-printing Long) or raw bytes
    plausible.map(_json_text),
    plausible.map(_json_text),
    bodies.map(_json_text).filter(lambda raw: raw is not None),
    st.binary(max_size=300),
    st.integers(1, 100_000).map(lambda n: Long("[" * n + "]" * n)),
    st.integers(1, 100_000).map(lambda n: Long('{"prompt":' * n + "1" + "}" * n)),
    repeated(st.just("x"), st.integers(-64, 64).map(lambda d: MAX_BODY - 13 + d)).map(
        lambda text: Long(f'{{"prompt":"{text}"}}')),
)


@pytest.fixture(scope="module")
def tiny_client(tiny_model_dir: Path) -> Iterator[FlaskClient]:
    engine = Engine(ServerSettings(model=str(tiny_model_dir), max_body_bytes=MAX_BODY,
                                   max_prompt_chars=4000, max_tokens_limit=4,
                                   default_max_tokens=4))
    engine.load()
    with create_app(engine).test_client() as client:
        yield client


def test_any_body_over_http_gets_the_servers_own_answer_never_a_500(
    tiny_client: FlaskClient,
) -> None:
    @settings(max_examples=HTTP_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])
    @given(raw=raw_bodies | st.none(), path=st.sampled_from(PATHS))
    def check(raw: str | bytes | None, path: str) -> None:
        sent = raw.encode() if isinstance(raw, str) else raw or b""
        resp = tiny_client.post(path, data=sent, content_type="application/json")
        data = resp.get_data()  # a stream is read to its end
        if len(sent) > MAX_BODY:
            assert resp.status_code == 413, data[:300]
        # 200, or the client's error (400, 404 model_not_found, 413), in OpenAI's shape
        assert resp.status_code == 200 or 400 <= resp.status_code < 500, data[:300]
        if resp.status_code != 200:
            error = json.loads(data)["error"]
            assert error["message"], error
            assert error["type"] == "invalid_request_error", error

    check()
