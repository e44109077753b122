"""The generation engine: loads the model in the background and streams one generation at a time.

Why: every endpoint (/chat, the OpenAI ones) is the same token loop; this module owns it,
with a lock so one `generate` runs at a time, a bounded number of admitted requests (one
running plus `max_queue` waiting; beyond that 429 at once), cancellation when a client goes
away, stop strings, incremental detokenization and usage/TTFT figures. The generation runs
in its own thread and buffers its events, so the lock is never held while a response is
written to a slow client; a heartbeat lets /health fail when a generation is stuck.
What it must not do: speak HTTP or JSON (see protocol.py and app.py), or load the model at
import time. Requests are checked here only for what needs the tokenizer (context length,
model ids); everything else was validated by protocol.py.
"""

from __future__ import annotations

import enum
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Mapping, MutableMapping
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from runtime.serving.loading import LoadedModel, load_model
from runtime.serving.protocol import GenRequest, Prepared, RequestError, Sampling, TokenLogprob
from runtime.serving.settings import ServerSettings

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
class Finish:
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    ttft_s: float | None
    logprobs: tuple[TokenLogprob, ...] | None = None


_END = object()


class Ticket:
    """One admitted request's slot; `release()` is idempotent (generation over, or the
    response closed before it started)."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release
        self._guard = threading.Lock()

    def release(self) -> None:
        with self._guard:
            release, self._release = self._release, None
        if release is not None:
            release()


class Engine:
    """Owns the loaded model; thread-safe. `start_loading()` returns at once."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        environ: MutableMapping[str, str] | None = None,
        loader: Callable[[ServerSettings, MutableMapping[str, str]], LoadedModel] = load_model,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._environ = os.environ if environ is None else environ
        self._loader = loader
        self._loaded: LoadedModel | None = None
        self.state = State.LOADING
        self.error: str | None = None
        self._lock = threading.Lock()
        self._slots = threading.Lock()
        self.active = 0  # admitted requests: the running one and those waiting for it
        self._monotonic = monotonic
        self._busy_since: float | None = None
        self._progress = 0.0

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
        _check_prompt_size(request, self.settings.max_prompt_chars)
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
        ceiling = self.settings.max_tokens_limit
        budget = _budget(request.sampling, len(ids), limit,
                         min(self.settings.default_max_tokens, ceiling))
        if budget > ceiling:
            raise RequestError(f"max_tokens {budget} is above this server's limit of {ceiling}",
                               param="max_tokens", code="max_tokens_too_large")
        return Prepared(ids, budget, adapter, request)

    def admit(self) -> Ticket:
        """Take a slot (one running, `max_queue` waiting) or fail at once with 429."""
        with self._slots:
            if self.active >= 1 + self.settings.max_queue:
                raise RequestError("the server is busy; retry later", status=429,
                                   type_="server_error", code="server_busy")
            self.active += 1
        return Ticket(self._free_slot)

    def _free_slot(self) -> None:
        with self._slots:
            self.active -= 1

    def stalled_s(self) -> float | None:
        """Seconds the running generation has produced nothing; None when none runs."""
        busy = self._busy_since
        return None if busy is None else self._monotonic() - max(busy, self._progress)

    # -- generation ----------------------------------------------------------------------------
    def run(self, prep: Prepared, ticket: Ticket | None = None
            ) -> Generator[Delta | Finish, None, None]:
        """Yield text deltas, then one Finish. Closing the iterator cancels the generation.

        The generation runs in a thread of its own that holds the engine lock only while the
        model generates; its events are buffered (at most max_new_tokens), so a client that
        reads slowly, or not at all, never keeps the next request waiting.
        """
        events: queue.Queue[object] = queue.Queue()
        cancel = threading.Event()
        threading.Thread(target=self._produce, args=(prep, events, cancel, ticket),
                         name="generation", daemon=True).start()
        try:
            while True:
                item = events.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, Delta | Finish)
                yield item
        finally:
            cancel.set()  # the client went away (or we are done): stop generating

    def _produce(self, prep: Prepared, events: queue.Queue[object], cancel: threading.Event,
                 ticket: Ticket | None) -> None:
        started = time.monotonic()
        try:
            with self._lock:
                if cancel.is_set():
                    return
                self._busy_since = self._monotonic()
                try:
                    with closing(self._run_locked(prep, started)) as run:
                        for event in run:
                            self._progress = self._monotonic()
                            events.put(event)
                            if cancel.is_set():
                                break
                finally:
                    self._busy_since = None
        except Exception as exc:  # handed to the reader, which raises it in the request
            events.put(exc)
        finally:
            events.put(_END)
            if ticket is not None:
                ticket.release()

    def _run_locked(self, prep: Prepared, started: float
                    ) -> Generator[Delta | Finish, None, None]:
        from runtime.serving.streaming import TokenDecoder, generation_thread  # torch: lazily

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


def _check_prompt_size(request: GenRequest, limit: int) -> None:
    """Refuse a prompt over `limit` characters before it costs a tokenizer pass."""
    if request.messages is not None:
        size = sum(len(str(m.get("content") or "")) for m in request.messages)
        param = "messages"
    else:
        size, param = len(request.prompt or ""), "prompt"
    if size > limit:
        raise RequestError(f"the prompt has {size} characters; this server accepts at most "
                           f"{limit}", param=param, code="prompt_too_long")


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
        stalled = engine.stalled_s()
        if stalled is not None and stalled > engine.settings.stuck_after_s:
            return 503, {"status": "stuck", "stalled_s": round(stalled, 1),
                         "limit_s": engine.settings.stuck_after_s}
        return 200, {"status": "ok", "model": engine.loaded.model_id}
    if engine.state is State.FAILED:
        return 503, {"status": "failed", "error": engine.error}
    return 503, {"status": "loading"}
