"""Prometheus metrics of the admission webhook, owned by one app instance.

Why: operators need request counts, latency and denial reasons per endpoint. Each app gets
its own registry (no module-level singleton), so tests can build many apps in one process.
Under gunicorn with several workers, `PROMETHEUS_MULTIPROC_DIR` (set by `kaito webhook
serve`) makes `/metrics` add up every worker.
Must not: decide anything about admission, or read the environment except that variable.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Counters and a histogram labelled by endpoint and result."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "kaito_webhook_requests_total",
            "Admission and probe requests answered, by endpoint and result.",
            ["endpoint", "result"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kaito_webhook_request_duration_seconds",
            "Time to answer a request inside the app, by endpoint and result.",
            ["endpoint", "result"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.denials = Counter(
            "kaito_webhook_denials_total",
            "Denied admission requests by endpoint and reason (field error type or InternalError).",
            ["endpoint", "reason"],
            registry=self.registry,
        )

    def observe(self, endpoint: str, result: str, seconds: float, reasons: tuple[str, ...]) -> None:
        """Record one answered request."""
        self.requests.labels(endpoint, result).inc()
        self.latency.labels(endpoint, result).observe(seconds)
        for reason in reasons:
            self.denials.labels(endpoint, reason).inc()

    def exposition(self) -> bytes:
        """The text format for `/metrics`, across all workers in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
