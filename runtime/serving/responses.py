"""OpenAI response bodies and server-sent-event chunks built from engine events.

Why: the shapes the official `openai` client parses (chat.completion, text_completion,
their chunk forms, usage, logprobs) live in one place, apart from the HTTP plumbing.
What it must not do: run generation or import torch; it only formats values it is given.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from runtime.serving.engine import Finish
from runtime.serving.protocol import TokenLogprob


def new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


def usage(finish: Finish) -> dict[str, int]:
    return {
        "prompt_tokens": finish.prompt_tokens,
        "completion_tokens": finish.completion_tokens,
        "total_tokens": finish.prompt_tokens + finish.completion_tokens,
    }


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


def _chat_logprobs(items: tuple[TokenLogprob, ...] | None) -> dict[str, Any] | None:
    if items is None:
        return None
    return {"content": [
        {"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode()),
         "top_logprobs": [{"token": a, "logprob": v, "bytes": list(a.encode())}
                          for a, v in t.top]}
        for t in items
    ]}


def _completion_logprobs(items: tuple[TokenLogprob, ...] | None) -> dict[str, Any] | None:
    if items is None:
        return None
    offsets, pos = [], 0
    for t in items:
        offsets.append(pos)
        pos += len(t.token)
    return {
        "tokens": [t.token for t in items],
        "token_logprobs": [t.logprob for t in items],
        "top_logprobs": [dict(t.top) for t in items],
        "text_offset": offsets,
    }


def chat_completion(rid: str, model: str, text: str, finish: Finish) -> dict[str, Any]:
    return {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": _chat_logprobs(finish.logprobs),
            "finish_reason": finish.finish_reason,
        }],
        "usage": usage(finish),
    }


def completion(rid: str, model: str, text: str, finish: Finish) -> dict[str, Any]:
    return {
        "id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{
            "index": 0, "text": text, "logprobs": _completion_logprobs(finish.logprobs),
            "finish_reason": finish.finish_reason,
        }],
        "usage": usage(finish),
    }


class ChunkWriter:
    """Formats the SSE chunks of one streamed chat or text completion."""

    def __init__(self, *, chat: bool, model: str, include_usage: bool) -> None:
        self.chat, self.model, self.include_usage = chat, model, include_usage
        self.rid = new_id("chatcmpl" if chat else "cmpl")
        self.created = int(time.time())

    def _chunk(self, choice: dict[str, Any], **extra: Any) -> str:
        body: dict[str, Any] = {
            "id": self.rid,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created, "model": self.model, "choices": [choice], **extra,
        }
        if self.include_usage and "usage" not in extra:
            body["usage"] = None
        return sse(body)

    def start(self) -> str:
        if not self.chat:
            return ""
        return self._chunk({"index": 0, "delta": {"role": "assistant", "content": ""},
                            "logprobs": None, "finish_reason": None})

    def delta(self, text: str) -> str:
        if self.chat:
            return self._chunk({"index": 0, "delta": {"content": text}, "logprobs": None,
                                "finish_reason": None})
        return self._chunk({"index": 0, "text": text, "logprobs": None, "finish_reason": None})

    def finish(self, finish: Finish) -> str:
        if self.chat:
            last = {"index": 0, "delta": {}, "logprobs": None,
                    "finish_reason": finish.finish_reason}
        else:
            last = {"index": 0, "text": "", "logprobs": None,
                    "finish_reason": finish.finish_reason}
        out = self._chunk(last)
        if self.include_usage:
            body: dict[str, Any] = {"id": self.rid, "object": "chat.completion.chunk" if self.chat
                    else "text_completion", "created": self.created, "model": self.model,
                    "choices": [], "usage": usage(finish)}
            out += sse(body)
        return out + sse("[DONE]")
