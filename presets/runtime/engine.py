"""The generation engine: loads the model in the background and streams one generation at a time.

Why: every endpoint (/chat, the OpenAI ones) is the same token loop; this module owns it,
with a lock so one `generate` runs at a time, a bounded wait queue, cancellation when a
client goes away, stop strings, incremental detokenization and usage/TTFT figures.
What it must not do: speak HTTP or JSON (see protocol.py and app.py), or load the model at
import time. Requests are checked here only for what needs the tokenizer (context length,
model ids); everything else was validated by protocol.py.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from presets.runtime.loading import LoadedModel, load_model
from presets.runtime.protocol import GenRequest, RequestError, Sampling
from presets.runtime.settings import ServerSettings

log = logging.getLogger("kaito.runtime")
BASE_SUFFIX = ":base"


class State(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Finish:
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    ttft_s: float | None
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request that passed every check: token ids, token budget and the adapter to use."""

    input_ids: list[int]
    max_new_tokens: int
    adapter: str | None  # peft key, "" for the bare base model, None for a plain model
    request: GenRequest


@dataclass(slots=True)
class _Queue:
    waiting: int = 0
    guard: threading.Lock = field(default_factory=threading.Lock)


class Engine:
    """Owns the loaded model; thread-safe. `start_loading()` returns at once."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        environ: MutableMapping[str, str] | None = None,
        loader: Callable[[ServerSettings, MutableMapping[str, str]], LoadedModel] = load_model,
    ) -> None:
        self.settings = settings
        self._environ = os.environ if environ is None else environ
        self._loader = loader
        self._loaded: LoadedModel | None = None
        self.state = State.LOADING
        self.error: str | None = None
        self._lock = threading.Lock()
        self._queue = _Queue()

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> None:
        """Load synchronously; on failure record the reason (state FAILED) and re-raise."""
        started = time.monotonic()
        try:
            self._loaded = self._loader(self.settings, self._environ)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.state = State.FAILED
            log.error("model failed to load: %s", self.error)
            raise
        self.state = State.READY
        log.info("model %s loaded in %.1f s", self._loaded.model_id, time.monotonic() - started)

    def start_loading(self, on_failure: Callable[[], None] | None = None) -> threading.Thread:
        def run() -> None:
            try:
                self.load()
            except Exception:  # recorded in self.error; /health reports it
                if on_failure is not None:
                    on_failure()

        thread = threading.Thread(target=run, name="model-loader", daemon=True)
        thread.start()
        return thread

    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            raise RequestError("the model is still loading", status=503,
                               type_="server_error", code="model_loading")
        return self._loaded

    # -- model ids -------------------------------------------------------------------------
    def model_ids(self) -> list[str]:
        m = self.loaded
        if not m.adapter_keys:
            return [m.model_id]
        return [m.model_id, m.model_id + BASE_SUFFIX] + [
            f"{m.model_id}:{name}" for name in m.adapter_keys
        ]

    def _adapter_for(self, model: str | None) -> str | None:
        m = self.loaded
        if model is None or model == m.model_id:
            return m.combined_key
        if m.adapter_keys and model == m.model_id + BASE_SUFFIX:
            return ""
        prefix = m.model_id + ":"
        if model.startswith(prefix) and model[len(prefix):] in m.adapter_keys:
            return m.adapter_keys[model[len(prefix):]]
        raise RequestError(f"The model `{model}` does not exist; served: {self.model_ids()}",
                           param="model", code="model_not_found", status=404)

    # -- checks that need the tokenizer ------------------------------------------------------
    def encode(self, request: GenRequest) -> list[int]:
        tok = self.loaded.tokenizer
        templated = request.templated and bool(getattr(tok, "chat_template", None))
        if request.messages is None and not templated:
            return list(tok(request.prompt or "", add_special_tokens=False)["input_ids"])
        messages = [dict(m) for m in request.messages or ()] or [
            {"role": "user", "content": request.prompt or ""}]
        if not getattr(tok, "chat_template", None):
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
            return list(tok(text, add_special_tokens=False)["input_ids"])
        try:
            enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
        except Exception as exc:  # a template may reject a role order: the caller's fault
            raise RequestError(f"messages do not fit the model's chat template: {exc}",
                               param="messages") from exc
        return list(enc["input_ids"])

    def prepare(self, request: GenRequest) -> Prepared:
        adapter = self._adapter_for(request.model)
        ids = self.encode(request)
        limit = self.loaded.max_model_len
        if not ids:
            raise RequestError("the prompt is empty after tokenization", param="prompt")
        if len(ids) >= limit:
            raise RequestError(
                f"This model's maximum context length is {limit} tokens, but the prompt has "
                f"{len(ids)} tokens. Shorten the prompt.",
                param="messages" if request.messages else "prompt",
                code="context_length_exceeded",
            )
        return Prepared(ids, _budget(request.sampling, len(ids), limit,
                                     self.settings.default_max_tokens), adapter, request)

    def admit(self) -> None:
        """Fail fast with 503 when the wait queue is full."""
        if self._queue.waiting >= self.settings.max_queue:
            raise RequestError("the server is busy; retry later", status=503,
                               type_="server_error", code="server_busy")

    # -- generation ----------------------------------------------------------------------------
    def run(self, prep: Prepared) -> Generator[Delta | Finish, None, None]:
        """Yield text deltas, then one Finish. Closing the iterator cancels the generation."""
        started = time.monotonic()
        with self._queue.guard:
            self._queue.waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._queue.guard:
                self._queue.waiting -= 1
        try:
            yield from self._run_locked(prep, started)
        finally:
            self._lock.release()

    def _run_locked(self, prep: Prepared, started: float
                    ) -> Generator[Delta | Finish, None, None]:
        from presets.runtime.streaming import TokenDecoder, generation_thread

        m = self.loaded
        stops = prep.request.sampling.stop
        decoder = TokenDecoder(m.tokenizer, stops)
        worker = generation_thread(m.model, prep, m.tokenizer)
        ttft: float | None = None
        reason = "stop"
        try:
            for token in worker.tokens():
                if ttft is None:
                    ttft = time.monotonic() - started
                text = decoder.add(token)
                if text:
                    yield Delta(text)
                if decoder.stopped:
                    worker.cancel()
                    break
            else:
                if len(decoder.ids) >= prep.max_new_tokens:
                    reason = "length"
            tail = decoder.flush()
            if tail:
                yield Delta(tail)
            logprobs = None
            if prep.request.logprobs is not None:
                logprobs = worker.logprobs(len(decoder.ids), prep.request.logprobs)
            yield Finish(len(prep.input_ids), len(decoder.ids), reason, ttft, logprobs)
        finally:
            worker.cancel()
            worker.join()


def _budget(s: Sampling, prompt_len: int, limit: int, default: int) -> int:
    room = limit - prompt_len
    if s.max_new_tokens is not None:
        wanted = s.max_new_tokens
    elif s.max_length is not None:
        wanted = s.max_length - prompt_len
        if wanted < 1:
            raise RequestError(f"max_length {s.max_length} leaves no room after the "
                               f"{prompt_len}-token prompt", param="max_length")
    else:
        return min(default, room)
    if wanted > room:
        raise RequestError(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_len + wanted} tokens ({prompt_len} in the prompt, {wanted} for the "
            "completion). Reduce the prompt or the completion length.",
            param="max_tokens", code="context_length_exceeded",
        )
    return wanted


def health(engine: Engine) -> tuple[int, Mapping[str, Any]]:
    if engine.state is State.READY:
        return 200, {"status": "ok", "model": engine.loaded.model_id}
    if engine.state is State.FAILED:
        return 503, {"status": "failed", "error": engine.error}
    return 503, {"status": "loading"}
