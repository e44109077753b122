"""Turning examples into token ids and labels, with the loss masked on prompt tokens.

Why: a tuned adapter should learn the answers, not to repeat the questions. Each example is
rendered to text (with the tokenizer's chat template when it has one, so training sees the
same format the model server uses), and every token outside an assistant answer gets the
label -100, which the loss ignores. Character spans of the answers are mapped to tokens
through the fast tokenizer's offsets, so BPE merges across a boundary cannot shift them.

This module must not load models or touch files; it only needs a tokenizer object.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runtime.jobstep import DataError
from runtime.tuning.dataset import Example, Message

LOG = logging.getLogger("kaito.tune.encode")
IGNORE = -100


@dataclass(frozen=True, slots=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]


def _render(tokenizer: Any, messages: Sequence[Message], generation_prompt: bool) -> str:
    return str(
        tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            tokenize=False,
            add_generation_prompt=generation_prompt,
        )
    )


def _chat_spans(tokenizer: Any, messages: Sequence[Message]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of the assistant answers."""
    text = _render(tokenizer, messages, False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message.role != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True) if i else ""
        upto = _render(tokenizer, messages[: i + 1], False)
        if not (text.startswith(upto) and upto.startswith(before)):
            LOG.warning("the chat template does not render incrementally; no prompt masking")
            return text, [(0, len(text))]
        spans.append((len(before), len(upto)))
    return text, spans


def _plain_spans(tokenizer: Any, example: Example) -> tuple[str, list[tuple[int, int]]]:
    """Without a chat template: `role: content` lines, or prompt + completion + eos."""
    eos = str(tokenizer.eos_token or "")
    if not example.messages:
        text = example.prompt + example.completion + eos
        return text, [(len(example.prompt), len(text))]
    text, spans = "", []
    for m in example.messages:
        head = f"{m.role}: "
        line = m.content + (eos if m.role == "assistant" else "") + "\n"
        if m.role == "assistant":
            spans.append((len(text) + len(head), len(text) + len(head) + len(line)))
        text += head + line
    return text, spans


def as_messages(example: Example) -> tuple[Message, ...]:
    if example.messages:
        return example.messages
    prompt = (Message("user", example.prompt),) if example.prompt else ()
    return (*prompt, Message("assistant", example.completion))


def encode(example: Example, tokenizer: Any, max_length: int, truncation: bool) -> Encoded | None:
    """Token ids and labels; None when nothing to learn is left within max_length."""
    if getattr(tokenizer, "chat_template", None):
        text, spans = _chat_spans(tokenizer, as_messages(example))
    else:
        text, spans = _plain_spans(tokenizer, example)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = [int(t) for t in enc["input_ids"]]
    labels = [
        tok if any(lo <= start < hi for lo, hi in spans) else IGNORE
        for tok, (start, _end) in zip(ids, enc["offset_mapping"], strict=True)
    ]
    if len(ids) > max_length:
        if not truncation:
            return None
        ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE for label in labels):
        return None
    return Encoded(ids, labels)


def encode_all(
    examples: Sequence[Example], tokenizer: Any, max_length: int, truncation: bool
) -> list[Encoded]:
    out = [e for e in (encode(x, tokenizer, max_length, truncation) for x in examples) if e]
    skipped = len(examples) - len(out)
    if not out:
        raise DataError(
            f"none of the {len(examples)} examples has answer tokens within max_length "
            f"{max_length} (TokenizerParams.max_length)"
        )
    if skipped:
        LOG.warning(
            "skipped %d of %d examples: no answer tokens within %d tokens",
            skipped,
            len(examples),
            max_length,
        )
    return out
