"""Hypothesis over the model server's request parsing: any JSON value in, a GenRequest or a
RequestError out, never another exception (which the server would answer with a 500).

The generators are wide on purpose: odd types in every field, huge and negative numbers,
floats where integers go, long strings, unhashable values where strings go, deep nesting.
The example count is printed (run with -s to see it), so `make test` reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.serving.protocol import (
    GenRequest,
    RequestError,
    parse_chat_completion,
    parse_completion,
    parse_kaito_chat,
)

EXAMPLES = 1000
scalars = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.text(max_size=40) | st.sampled_from([2**63, -(2**63) - 1, 10**400, 1e308]))
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
deep = st.integers(1, 1000).map(lambda n: [[]] if n < 2 else _nest(n))
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


def _nest(n: int) -> Any:
    out: Any = []
    for _ in range(n):
        out = [out]
    return out


PARSERS: list[Callable[[Any], GenRequest]] = [parse_chat_completion, parse_completion,
                                              parse_kaito_chat]
SEEN = {"examples": 0}


@pytest.fixture(scope="module", autouse=True)
def _report() -> Any:
    yield
    print(f"\nprotocol fuzz: {SEEN['examples']} generated bodies x {len(PARSERS)} parsers")


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=bodies)
def test_any_json_body_parses_or_is_a_request_error(body: Any) -> None:
    SEEN["examples"] += 1
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
