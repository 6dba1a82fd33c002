"""Prometheus metrics of one app instance (own registry, so several apps can coexist in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["APIMetrics"]


class APIMetrics:
    """Counters and the encrypted-predict latency histogram."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions_created = Counter(
            "hushtype_sessions_created", "sessions created", registry=self.registry
        )
        self.sessions_rate_limited = Counter(
            "hushtype_sessions_rate_limited",
            "session creations refused by the per-client rate limit (429)",
            registry=self.registry,
        )
        self.predictions = Counter(
            "hushtype_predictions", "encrypted predictions served", registry=self.registry
        )
        self.predict_rejected = Counter(
            "hushtype_predict_rejected", "queries rejected as malformed", registry=self.registry
        )
        self.worker_restarts = Counter(
            "hushtype_worker_restarts",
            "HE worker processes replaced after dying or hanging",
            registry=self.registry,
        )
        self.worker_lost = Counter(
            "hushtype_worker_lost_requests",
            "requests answered 503 because their HE worker died or missed its deadline",
            registry=self.registry,
        )
        self.predict_seconds = Histogram(
            "hushtype_predict_seconds",
            "server-side encrypted predict latency",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
