"""Prometheus metrics of one server (its own registry, so two apps in one process do not mix)."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["ServeMetrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServeMetrics:
    """Requests by route and status, request latency, batch sizes, images served and queue depth."""

    def __init__(self, max_batch: int, queue_depth: Callable[[], float]) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("resnetlab_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("resnetlab_request_seconds", "request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        buckets = sorted({b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256) if b <= max_batch} | {max_batch})
        self.batch_size = Histogram("resnetlab_batch_size", "images per forward pass", buckets=buckets, registry=r)
        self.images = Counter("resnetlab_images", "images classified", registry=r)
        self.queue = Gauge("resnetlab_queue_depth", "images waiting for a batch", registry=r)
        self.queue.set_function(queue_depth)

    def observe(self, route: str, status: int, seconds: float | None) -> None:
        self.requests.labels(route, str(status)).inc()
        if seconds is not None:
            self.latency.labels(route).observe(seconds)

    def on_batch(self, n: int) -> None:
        self.batch_size.observe(n)
        self.images.inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
