"""Prometheus metrics of the model server, in a registry owned by one Flask app.

Why: /metrics must report tokens generated, time to first token and request latency by
endpoint and status; a per-app registry lets tests build many apps in one process.
What it must not do: use the global default registry or import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.prompt_tokens = Counter(
            "kaito_prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.generated_tokens = Counter(
            "kaito_generated_tokens", "Completion tokens generated", ["model"], registry=r)
        self.ttft = Histogram(
            "kaito_time_to_first_token_seconds", "Seconds from request to first token",
            ["endpoint"], buckets=_TTFT_BUCKETS, registry=r)
        self.latency = Histogram(
            "kaito_request_duration_seconds", "Request latency by endpoint and status",
            ["endpoint", "status"], buckets=_LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge(
            "kaito_requests_in_flight", "Generation requests being served", registry=r)
        self.loaded = Gauge(
            "kaito_model_loaded", "1 once the model is loaded and serving", registry=r)
