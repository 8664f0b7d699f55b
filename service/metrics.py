"""Prometheus metrics, in a registry per app (several apps in one process, as in tests, do not collide)."""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self, inference_routes: frozenset[str] = frozenset()) -> None:
        """``inference_routes``: the route paths whose requests the live summary (``recent``) follows."""
        self.inference_routes = inference_routes
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("resnet_serve_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram(
            "resnet_serve_request_latency_seconds", "request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "resnet_serve_queue_wait_seconds", "time queued before inference", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "resnet_serve_batch_size", "images per inference call", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.inference = Histogram(
            "resnet_serve_inference_seconds", "seconds per inference call", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.inflight = Gauge(
            "resnet_serve_inflight_requests",
            "classification requests admitted and not answered yet (waiting for a slot, decoding, queued or running)",
            registry=r,
        )
        self.queue_depth = Gauge("resnet_serve_queue_depth", "requests waiting for a batch", ["model"], registry=r)
        self.model_loads = Counter("resnet_serve_model_loads", "model version loads by result", ["model", "result"], registry=r)
        self.reload_failures = Counter("resnet_serve_reload_failures", "new versions refused", ["model"], registry=r)
        self.rejected = Counter("resnet_serve_rejected_requests", "requests refused, by reason", ["reason"], registry=r)
        self.loaded_version = Gauge("resnet_serve_model_version", "version being served", ["model"], registry=r)
        self.promotions = Counter(
            "resnet_serve_promotions",
            "rollout decisions on new versions: promoted, refused (accuracy gate), held (pinned), canary, rolled_back",
            ["model", "outcome"],
            registry=r,
        )
        self.version_requests = Counter(
            "resnet_serve_version_requests",
            "images answered by model version and outcome",
            ["model", "version", "outcome"],
            registry=r,
        )
        self.version_latency = Histogram(
            "resnet_serve_version_latency_seconds",
            "seconds from a request's start to an image's answer, by model version",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._by_route: dict = {}  # (route, status) -> (its counter, its latency histogram): labels() takes a lock
        self.recent = RecentRequests()

    def count_request(self, route: str, status: int, seconds: float) -> None:
        children = self._by_route.get((route, status))
        if children is None:
            children = self._by_route[route, status] = (self.requests.labels(route, str(status)), self.latency.labels(route))
        children[0].inc()
        children[1].observe(seconds)
        if route in self.inference_routes:
            self.recent.requests.append((time.monotonic(), seconds, status))
            self.recent.answered += 1

    def count_rejection(self, code: str) -> None:
        """A request refused with a typed error (``errors.response_for`` calls it)."""
        self.rejected.labels(code).inc()


class RecentRequests:
    """The last few thousand inference requests and batches, for the live summary (``GET /v1/stats``, read by the
    web page): Prometheus histograms give rates and quantiles only to a scraper that keeps their history."""

    def __init__(self, size: int = 4096) -> None:
        self.requests: deque[tuple[float, float, int]] = deque(maxlen=size)  # (monotonic time, seconds, status)
        self.batches: deque[tuple[float, int]] = deque(maxlen=size)  # (monotonic time, images)
        self.answered = 0  # inference requests answered since start, whatever their status

    def summary(self, window_s: float = 10.0) -> dict:
        since = time.monotonic() - window_s
        latencies = sorted(s for t, s, _ in self.requests if t >= since)
        sizes = [n for t, n in self.batches if t >= since]

        def quantile(q: float) -> float | None:
            return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None

        return {
            "window_s": window_s,
            "requests": len(latencies),
            "requests_per_s": len(latencies) / window_s,
            "errors": sum(1 for t, _, status in self.requests if t >= since and status >= 400),
            "p50_ms": quantile(0.5),
            "p99_ms": quantile(0.99),
            "mean_batch_size": sum(sizes) / len(sizes) if sizes else None,
            "answered": self.answered,
        }
