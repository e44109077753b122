"""Token plumbing between `model.generate` (in its own thread) and the HTTP response.

Why: streaming needs generated token ids one by one (for usage counts and time to first
token), a way to stop generate early (client gone, stop string hit), and detokenization
that never emits half a UTF-8 character or text past a stop string.
What it must not do: take the engine's lock (the caller holds it), or know about HTTP.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from runtime.serving.protocol import Prepared, TokenLogprob

_END = object()


class TokenDecoder:
    """Incremental detokenizer with stop strings (a prefix window, as vLLM does)."""

    def __init__(self, tokenizer: Any, stops: Sequence[str]) -> None:
        self._tok = tokenizer
        self._stops = tuple(stops)
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0
        self._text = ""
        self._sent = 0
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True))

    def add(self, token: int) -> str:
        self.ids.append(token)
        before = self._decode(self.ids[self._prefix:self._read])
        after = self._decode(self.ids[self._prefix:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self._text += after[len(before):]
        self._prefix, self._read = self._read, len(self.ids)
        return self._emit(final=False)

    def _emit(self, *, final: bool) -> str:
        if self._stops:
            start = max(0, self._sent - self._hold)
            hits = [i for s in self._stops if (i := self._text.find(s, start)) >= 0]
            if hits:
                self.stopped = True
                end = min(hits)
                piece = self._text[self._sent:end]
                self._sent = len(self._text)
                return piece
        end = len(self._text) if final else len(self._text) - self._hold
        if end <= self._sent:
            return ""
        piece = self._text[self._sent:end]
        self._sent = end
        return piece

    def flush(self) -> str:
        if self.stopped:
            return ""
        return self._emit(final=True)


class _QueueStreamer(BaseStreamer):
    """Receives token tensors from generate; the first call carries the prompt (skipped)."""

    def __init__(self) -> None:
        self.items: queue.Queue[object] = queue.Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.items.put(int(token))

    def end(self) -> None:
        self.items.put(_END)


class _Cancel(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any
                 ) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


class GenerationWorker:
    """One `generate` call running in a thread; read `tokens()` until it ends."""

    def __init__(self, model: Any, prep: Prepared, tokenizer: Any) -> None:
        self._tok = tokenizer
        self._streamer = _QueueStreamer()
        self._cancel = threading.Event()
        self._output: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(model, prep), name="generate", daemon=True
        )

    def start(self) -> GenerationWorker:
        self._thread.start()
        return self

    def _run(self, model: Any, prep: Prepared) -> None:
        try:
            ids = torch.tensor([prep.input_ids], dtype=torch.long)
            kwargs: dict[str, Any] = {
                "input_ids": ids,
                "attention_mask": torch.ones_like(ids),
                "streamer": self._streamer,
                "stopping_criteria": StoppingCriteriaList([_Cancel(self._cancel)]),
                "generation_config": _config(model, prep),
            }
            seed = prep.request.sampling.seed
            with torch.inference_mode(), _adapter(model, prep.adapter):
                if seed is not None:
                    torch.manual_seed(seed)
                self._output = model.generate(**kwargs)
        except Exception as exc:
            self._error = exc
            self._streamer.end()

    def tokens(self) -> Iterator[int]:
        while True:
            item = self._streamer.items.get()
            if item is _END:
                break
            assert isinstance(item, int)
            yield item
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"generation failed: {self._error}") from self._error

    def cancel(self) -> None:
        self._cancel.set()

    def join(self) -> None:
        self._thread.join()

    def logprobs(self, count: int, top: int) -> tuple[TokenLogprob, ...]:
        out: list[TokenLogprob] = []
        steps = getattr(self._output, "logits", None) or ()
        for step, token in zip(steps[:count], self._output.sequences[0, -len(steps):].tolist(),
                               strict=False):
            logp = torch.log_softmax(step[0].float(), dim=-1)
            alts: tuple[tuple[str, float], ...] = ()
            if top:
                values, idx = torch.topk(logp, top)
                alts = tuple((self._tok.decode([int(i)]), float(v))
                             for v, i in zip(values.tolist(), idx.tolist(), strict=True))
            out.append(TokenLogprob(self._tok.decode([token]), float(logp[token]), alts))
        return tuple(out)


def _config(model: Any, prep: Prepared) -> GenerationConfig:
    base = model.generation_config
    s = prep.request.sampling
    kwargs: dict[str, Any] = {
        "max_new_tokens": prep.max_new_tokens,
        "do_sample": s.do_sample,
        "eos_token_id": base.eos_token_id,
        "pad_token_id": base.pad_token_id if base.pad_token_id is not None else base.eos_token_id,
        "bos_token_id": base.bos_token_id,
    }
    if s.do_sample:
        kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
    if s.repetition_penalty is not None:
        kwargs["repetition_penalty"] = s.repetition_penalty
    if prep.request.logprobs is not None:
        kwargs.update(output_logits=True, return_dict_in_generate=True)
    config_class: Any = GenerationConfig
    return config_class(**kwargs)  # type: ignore[no-any-return]


class _adapter:
    """Selects the peft adapter for one generate: key, "" for base, None for a plain model."""

    def __init__(self, model: Any, key: str | None) -> None:
        self.model, self.key = model, key
        self._ctx: Any = None

    def __enter__(self) -> None:
        if self.key == "":
            self._ctx = self.model.disable_adapter()
            self._ctx.__enter__()
        elif self.key is not None:
            self.model.set_adapter(self.key)

    def __exit__(self, *exc: object) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)


def generation_thread(model: Any, prep: Prepared, tokenizer: Any) -> GenerationWorker:
    return GenerationWorker(model, prep, tokenizer).start()
