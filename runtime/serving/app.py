"""The model server's Flask application: /chat, the OpenAI endpoints, /health and /metrics.

Why: one application factory, `create_app(engine_or_settings)`, served by gunicorn in pods
and by werkzeug in fast tests. Views decode JSON, call protocol.py and the engine, and
encode; every failure becomes an OpenAI-style error object, never a crash.
What it must not do: load the model at import time or in the factory's caller thread
(loading runs in a background thread so /health answers 503 meanwhile), or import torch.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from runtime.serving import responses
from runtime.serving.engine import Delta, Engine, Finish, State, Ticket, health
from runtime.serving.metrics import Metrics
from runtime.serving.protocol import (
    GenRequest,
    Prepared,
    RequestError,
    parse_chat_completion,
    parse_completion,
    parse_kaito_chat,
)
from runtime.serving.settings import ServerSettings, read_api_key

log = logging.getLogger("kaito.runtime")
Parser = Callable[[Any], GenRequest]


def create_app(
    engine_or_settings: Engine | ServerSettings,
    *,
    on_load_failure: Callable[[], None] | None = None,
) -> Flask:
    """Build the app; given settings, start loading the model in a background thread."""
    if isinstance(engine_or_settings, Engine):
        engine = engine_or_settings
    else:
        engine = Engine(engine_or_settings)
        engine.start_loading(on_failure=on_load_failure)
    app = Flask("kaito_model_server")
    app.config["JSON_SORT_KEYS"] = False
    app.config["MAX_CONTENT_LENGTH"] = engine.settings.max_body_bytes
    metrics = Metrics()
    app.extensions["kaito_engine"] = engine
    app.extensions["kaito_metrics"] = metrics
    _register_errors(app)
    _register_auth(app, engine.settings)
    _register_views(app, engine, metrics)
    return app


OPEN_PATHS = frozenset({"/health", "/metrics"})  # probes and scraping need no key


def _register_auth(app: Flask, settings: ServerSettings) -> None:
    """With --api-key-file, every model API call needs `Authorization: Bearer <key>`."""
    if settings.api_key_file is None:
        return
    expected = f"Bearer {read_api_key(settings.api_key_file)}".encode()

    @app.before_request
    def require_key() -> Response | None:
        if request.path in OPEN_PATHS:
            return None
        given = request.headers.get("Authorization", "").encode()
        if hmac.compare_digest(given, expected):
            return None
        resp = _error(RequestError("a valid API key is required (Authorization: Bearer ...)",
                                   status=401, code="invalid_api_key"))
        resp.headers["WWW-Authenticate"] = "Bearer"
        return resp


def _error(exc: RequestError) -> Response:
    resp = jsonify(exc.body())
    resp.status_code = exc.status
    if exc.status == 429:
        resp.headers["Retry-After"] = "1"
    return resp


def _register_errors(app: Flask) -> None:
    @app.errorhandler(RequestError)
    def request_error(exc: RequestError) -> Response:
        return _error(exc)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        kind = "invalid_request_error" if code < 500 else "server_error"
        return _error(RequestError(f"{exc.name}: {exc.description}", status=code, type_=kind,
                                   code=str(code)))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error while serving %s", request.path)
        return _error(RequestError("internal error while generating; see the server log",
                                   status=500, type_="server_error", code="internal_error"))


def _json_body() -> Any:
    raw = request.get_data(cache=False)  # over MAX_CONTENT_LENGTH: 413 before any parsing
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python goes
        raise RequestError("the request body is not valid JSON") from None


def _register_views(app: Flask, engine: Engine, metrics: Metrics) -> None:
    @app.get("/health")
    def health_view() -> Response:
        status, body = health(engine)
        resp = jsonify(body)
        resp.status_code = status
        return resp

    @app.get("/metrics")
    def metrics_view() -> Response:
        metrics.loaded.set(1 if engine.state is State.READY else 0)
        return Response(generate_latest(metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    def models_view() -> Response:
        created = int(time.time())
        return jsonify({"object": "list", "data": [
            {"id": mid, "object": "model", "created": created, "owned_by": "kaito"}
            for mid in engine.model_ids()
        ]})

    def generation_view(endpoint: str, parse: Parser) -> Callable[[], Response]:
        def view() -> Response:
            started = time.monotonic()
            try:
                req = parse(_json_body())
                prep = engine.prepare(req)
                ticket = engine.admit()
            except RequestError as exc:
                metrics.latency.labels(endpoint, str(exc.status)).observe(
                    time.monotonic() - started)
                raise
            try:
                if req.stream:
                    resp = _stream(engine, metrics, endpoint, prep, started, ticket)
                else:
                    resp = _complete(engine, metrics, endpoint, prep, started, ticket)
            except BaseException:
                ticket.release()
                raise
            resp.call_on_close(ticket.release)  # a stream that never started frees its slot
            return resp

        view.__name__ = endpoint.strip("/").replace("/", "_")
        return view

    app.post("/chat")(generation_view("/chat", parse_kaito_chat))
    app.post("/v1/chat/completions")(generation_view("/v1/chat/completions",
                                                     parse_chat_completion))
    app.post("/v1/completions")(generation_view("/v1/completions", parse_completion))


def _served_name(engine: Engine, req: GenRequest) -> str:
    return req.model or engine.loaded.model_id


def _record(metrics: Metrics, endpoint: str, finish: Finish, model: str) -> None:
    metrics.prompt_tokens.labels(model).inc(finish.prompt_tokens)
    metrics.generated_tokens.labels(model).inc(finish.completion_tokens)
    if finish.ttft_s is not None:
        metrics.ttft.labels(endpoint).observe(finish.ttft_s)


def _complete(engine: Engine, metrics: Metrics, endpoint: str, prep: Prepared,
              started: float, ticket: Ticket) -> Response:
    pieces: list[str] = []
    finish: Finish | None = None
    status = "500"
    metrics.in_flight.inc()
    try:
        for event in engine.run(prep, ticket):
            if isinstance(event, Delta):
                pieces.append(event.text)
            else:
                finish = event
        assert finish is not None
        status = "200"
    finally:
        metrics.in_flight.dec()
        metrics.latency.labels(endpoint, status).observe(time.monotonic() - started)
    model = _served_name(engine, prep.request)
    _record(metrics, endpoint, finish, model)
    text = "".join(pieces)
    if endpoint == "/chat":
        return jsonify({"Result": text})
    if endpoint == "/v1/completions":
        return jsonify(responses.completion(responses.new_id("cmpl"), model, text, finish))
    return jsonify(responses.chat_completion(responses.new_id("chatcmpl"), model, text, finish))


def _stream(engine: Engine, metrics: Metrics, endpoint: str, prep: Prepared,
            started: float, ticket: Ticket) -> Response:
    model = _served_name(engine, prep.request)
    writer = responses.ChunkWriter(chat=endpoint == "/v1/chat/completions", model=model,
                                   include_usage=prep.request.include_usage)

    def events() -> Iterator[str]:
        status = "500"
        metrics.in_flight.inc()
        try:
            yield writer.start()
            with closing(engine.run(prep, ticket)) as run:
                for event in run:
                    if isinstance(event, Delta):
                        yield writer.delta(event.text)
                    else:
                        _record(metrics, endpoint, event, model)
                        yield writer.finish(event)
            status = "200"
        except GeneratorExit:  # the client went away; closing `run` cancelled generate
            status = "499"
            raise
        except Exception as exc:  # headers are sent: report in-band, then end the stream
            log.exception("stream failed")
            yield responses.sse(RequestError(f"generation failed: {exc}", status=500,
                                             type_="server_error").body())
            yield responses.sse("[DONE]")
        finally:
            metrics.in_flight.dec()
            metrics.latency.labels(endpoint, status).observe(time.monotonic() - started)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(events(), mimetype="text/event-stream", headers=headers)
