"""The wire formats of the model server: request parsing/validation and OpenAI error objects.

Why: /chat (Kaito's dialect) and the OpenAI endpoints accept different JSON but mean the
same generation; this module turns any JSON body into one typed `GenRequest` or a
`RequestError` carrying an OpenAI-style error object, and checks every sampling value.
It also holds the records the engine and the token plumbing (streaming.py) share: a
`Prepared` request and a `TokenLogprob`, so neither of those two modules imports the other.
What it must not do: import torch/transformers, tokenize, or know about Flask.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
# generate_kwargs that /chat accepts (Kaito's documented knobs plus two harmless extras).
CHAT_GENERATE_KWARGS = (
    "max_length", "max_new_tokens", "temperature", "top_p", "top_k", "do_sample",
    "repetition_penalty", "seed",
)


class RequestError(Exception):
    """A request the server will not run; `body()` is the OpenAI error object."""

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None,
        status: int = 400, type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status, self.type = (
            message, param, code, status, type_,
        )

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}


@dataclass(frozen=True, slots=True, kw_only=True)
class Sampling:
    max_new_tokens: int | None = None
    max_length: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    do_sample: bool = True
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class GenRequest:
    """One generation: either chat `messages` or a raw `prompt`, and how to sample."""

    model: str | None
    messages: tuple[Mapping[str, str], ...] | None
    prompt: str | None
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False
    logprobs: int | None = None  # None: none; n: chosen token plus n alternatives
    # /chat's bare prompt goes through the chat template (as one user message) when the
    # model has one: instruct models answer the seed's question only that way.
    templated: bool = False


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request that passed every check: token ids, token budget and the adapter to use."""

    input_ids: list[int]
    max_new_tokens: int
    adapter: str | None  # peft key, "" for the bare base model, None for a plain model
    request: GenRequest


def _number(body: Mapping[str, Any], key: str, lo: float, hi: float, *, lo_open: bool = False
            ) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"{key} must be a number, got {value!r}", param=key)
    too_low = value <= lo if lo_open else value < lo
    if too_low or value > hi or value != value:
        left = "(" if lo_open else "["
        raise RequestError(f"{key} must be in {left}{lo}, {hi}], got {value!r}", param=key)
    return float(value)


def _integer(body: Mapping[str, Any], key: str, lo: int, hi: int = 2**31) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{key} must be an integer, got {value!r}", param=key)
    if not lo <= value <= hi:
        raise RequestError(f"{key} must be between {lo} and {hi}, got {value}", param=key)
    return value


def _flag(body: Mapping[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f"{key} must be a boolean, got {value!r}", param=key)
    return value


def _stop(body: Mapping[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if (not isinstance(items, list) or len(items) > 4
            or not all(isinstance(s, str) and s for s in items)):
        raise RequestError("stop must be a non-empty string or a list of up to 4", param="stop")
    return tuple(items)


def _openai_sampling(body: Mapping[str, Any], max_key: str) -> Sampling:
    if body.get("n") not in (None, 1):
        raise RequestError("only n=1 is supported", param="n")
    if body.get("echo"):
        raise RequestError("echo is not supported", param="echo")
    temperature = _number(body, "temperature", 0.0, 2.0)
    max_tokens = _integer(body, max_key, 1)
    if max_tokens is None and max_key != "max_tokens":
        max_tokens = _integer(body, "max_tokens", 1)
    t = 1.0 if temperature is None else temperature
    return Sampling(
        max_new_tokens=max_tokens,
        temperature=t,
        top_p=_number(body, "top_p", 0.0, 1.0, lo_open=True) or 1.0,
        top_k=max(_integer(body, "top_k", -1, 1_000_000) or 0, 0),
        do_sample=t > 0,
        repetition_penalty=_number(body, "repetition_penalty", 0.0, 10.0, lo_open=True),
        seed=_integer(body, "seed", -(2**63), 2**63 - 1),
        stop=_stop(body),
    )


def _stream_options(body: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = _flag(body, "stream", False)
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise RequestError("stream_options is only allowed with stream=true",
                           param="stream_options")
    if not isinstance(options, Mapping):
        raise RequestError("stream_options must be an object", param="stream_options")
    return stream, _flag(options, "include_usage", False)


def _message_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, Mapping) and part.get("type") == "text"
                    and isinstance(part.get("text"), str)):
                raise RequestError(f"{where}: only text content parts are supported",
                                   param="messages")
            parts.append(part["text"])
        return "".join(parts)
    raise RequestError(f"{where}: content must be a string or a list of text parts",
                       param="messages")


def parse_messages(value: Any) -> tuple[Mapping[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise RequestError("messages must be a non-empty list", param="messages")
    out = []
    for i, msg in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(msg, Mapping):
            raise RequestError(f"{where} must be an object", param="messages")
        role = msg.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise RequestError(f"{where}.role must be one of {sorted(ROLES)}, got {role!r}",
                               param="messages")
        out.append({"role": str(role), "content": _message_text(msg.get("content"), where)})
    return tuple(out)


def _model(body: Mapping[str, Any]) -> str | None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError("model must be a string", param="model")
    return model


def parse_chat_completion(body: Any) -> GenRequest:
    body = _object(body)
    stream, usage = _stream_options(body)
    logprobs = _flag(body, "logprobs", False)
    top = _integer(body, "top_logprobs", 0, 20)
    if top is not None and not logprobs:
        raise RequestError("top_logprobs requires logprobs=true", param="top_logprobs")
    return GenRequest(
        model=_model(body), messages=parse_messages(body.get("messages")), prompt=None,
        sampling=_openai_sampling(body, "max_completion_tokens"), stream=stream,
        include_usage=usage, logprobs=(top or 0) if logprobs else None,
    )


def parse_completion(body: Any) -> GenRequest:
    body = _object(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise RequestError("prompt must be a non-empty string (batches are not supported)",
                           param="prompt")
    stream, usage = _stream_options(body)
    return GenRequest(
        model=_model(body), messages=None, prompt=prompt,
        sampling=_openai_sampling(body, "max_tokens"), stream=stream, include_usage=usage,
        logprobs=_integer(body, "logprobs", 0, 5),
    )


def parse_kaito_chat(body: Any) -> GenRequest:
    """Kaito's `/chat`: {"prompt": str} or {"messages": [...]}, optional generate_kwargs."""
    body = _object(body)
    kwargs = body.get("generate_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise RequestError("generate_kwargs must be an object", param="generate_kwargs")
    unknown = sorted(set(kwargs) - set(CHAT_GENERATE_KWARGS))
    if unknown:
        raise RequestError(f"generate_kwargs: unsupported keys {unknown}; allowed: "
                           f"{list(CHAT_GENERATE_KWARGS)}", param="generate_kwargs")
    messages, prompt = None, body.get("prompt")
    if body.get("messages") is not None:
        messages = parse_messages(body["messages"])
    elif not isinstance(prompt, str) or not prompt:
        raise RequestError("give a non-empty string 'prompt' or a 'messages' list",
                           param="prompt")
    temperature = _number(kwargs, "temperature", 0.0, 100.0)
    do_sample = _flag(kwargs, "do_sample", bool(temperature))
    sampling = Sampling(
        max_new_tokens=_integer(kwargs, "max_new_tokens", 1),
        max_length=_integer(kwargs, "max_length", 1),
        temperature=temperature or 1.0,
        top_p=_number(kwargs, "top_p", 0.0, 1.0, lo_open=True) or 1.0,
        top_k=_integer(kwargs, "top_k", 0, 1_000_000) or 0,
        do_sample=do_sample,
        repetition_penalty=_number(kwargs, "repetition_penalty", 0.0, 10.0, lo_open=True),
        seed=_integer(kwargs, "seed", -(2**63), 2**63 - 1),
    )
    return GenRequest(model=_model(body), messages=messages,
                      prompt=None if messages else prompt, sampling=sampling,
                      templated=messages is None)


def _object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise RequestError("the request body must be a JSON object")
    return body
