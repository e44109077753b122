"""The Flask application factory that gunicorn serves: `webhook.app:create_app()`.

Why: a thin codec between HTTP and `webhook.admission`: it checks the request envelope
(content type, size, JSON), times the answer for the metrics, and turns an unexpected
exception into the generic 500 denial with the traceback in the log.
Must not: run anything at import time, hold admission rules, or put internals (paths,
tracebacks, exception text) into a response.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from typing import Any

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.exceptions import RequestEntityTooLarge

from presets.catalog import Catalog, load_catalog
from presets.validate import ValidationOptions
from webhook import admission
from webhook.certs import CertificateError, KeyPair
from webhook.metrics import Metrics
from webhook.settings import Settings

log = logging.getLogger("kaito.webhook")
MAX_DEPTH = 100
DRAIN_LIMIT = 16 * 1024 * 1024


def create_app(settings: Settings | None = None, *, catalog: Catalog | None = None) -> Flask:
    """Build the app; settings come from the environment and the catalog from the shipped files."""
    settings = settings if settings is not None else Settings.from_env(os.environ)
    logging.getLogger("kaito").setLevel(settings.log_level)
    if catalog is None:
        catalog = load_catalog(settings.models_path, settings.instance_types_path)
    app = Flask("webhook")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    metrics = Metrics()
    loaded = catalog

    def admit(endpoint: admission.Endpoint) -> Response:
        start = time.perf_counter()
        outcome = _decide(endpoint, loaded, settings)
        metrics.observe(endpoint, outcome.result, time.perf_counter() - start, outcome.reasons)
        return Response(
            json.dumps(outcome.body), status=outcome.http_status, mimetype="application/json"
        )

    app.add_url_rule("/mutate", "mutate", lambda: admit("mutate"), methods=["POST"])
    app.add_url_rule("/validate", "validate", lambda: admit("validate"), methods=["POST"])
    app.add_url_rule("/healthz", "healthz", lambda: _plain(200, "ok"))
    app.add_url_rule("/readyz", "readyz", lambda: _readyz(settings, loaded))
    app.add_url_rule(
        "/metrics", "metrics", lambda: Response(metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)
    )
    return app


def _decide(
    endpoint: admission.Endpoint, catalog: Catalog, settings: Settings
) -> admission.Outcome:
    try:
        review = admission.parse_review(_read_json())
    except admission.MalformedReview as exc:
        return admission.malformed(str(exc))
    except RequestEntityTooLarge:
        _drain(max(DRAIN_LIMIT, 4 * settings.max_body_bytes))
        return admission.Outcome(
            http_status=413,
            body={"error": "request body too large", "limit_bytes": settings.max_body_bytes},
            result="too_large",
        )
    try:
        if endpoint == "mutate":
            return admission.mutate(review, catalog)
        return admission.validate(
            review,
            catalog,
            deprecated_versions=settings.deprecated_versions,
            options=ValidationOptions.for_provisioner(settings.provisioner),
        )
    except Exception:
        log.exception("admission %s failed for uid %s", endpoint, review.uid)
        return admission.internal_error(review)


def _read_json() -> Any:
    """The decoded body, or `MalformedReview` saying why it is not acceptable JSON."""
    if request.mimetype != "application/json":
        raise admission.MalformedReview(
            f"Content-Type must be application/json, got {request.mimetype or 'nothing'}"
        )
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise admission.MalformedReview(f"body is not valid JSON: {_short(exc)}") from None
    if _depth(body) > MAX_DEPTH:
        raise admission.MalformedReview(f"body nests deeper than {MAX_DEPTH} levels")
    return body


def _drain(limit: int) -> None:
    """Read and drop a refused body (up to `limit`), so the client sees our 413, not a reset."""
    length = request.content_length
    if length is None or length > limit:
        return
    stream = request.environ["wsgi.input"]
    while length > 0:
        chunk = stream.read(min(length, 65536))
        if not chunk:
            return
        length -= len(chunk)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _short(exc: BaseException) -> str:
    text = str(exc) if not isinstance(exc, RecursionError) else "nested too deeply"
    return text[:200]


def _readyz(settings: Settings, catalog: Catalog) -> Response:
    """Ready once the catalog is loaded (it is, or the app would not exist) and the certs read."""
    if settings.cert_dir is not None:
        try:
            pair = KeyPair(
                (settings.cert_dir / "tls.crt").read_bytes(),
                (settings.cert_dir / "tls.key").read_bytes(),
            )
            expires = pair.cert.not_valid_after_utc
        except (OSError, CertificateError):
            return _plain(503, "serving certificate not readable yet")
        if expires <= dt.datetime.now(dt.UTC):
            return _plain(503, "serving certificate expired at " + expires.isoformat())
    return _plain(200, "ready: catalog " + catalog.revision)


def _plain(status: int, text: str) -> Response:
    return Response(text + "\n", status=status, mimetype="text/plain")
