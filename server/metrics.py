"""Prometheus metrics, one registry per app, and the ASGI middleware that counts requests.

All names start with `codec_server_`. In a multi-process deployment each
process exposes its own numbers; scrape every worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CONTENT_TYPE = CONTENT_TYPE_LATEST
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "codec_server_requests", "HTTP requests answered", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "codec_server_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_progress = Gauge("codec_server_requests_in_progress", "HTTP requests being answered", registry=r)
        self.queue_depth = Gauge("codec_server_model_queue_depth", "model jobs waiting for a worker", registry=r)
        self.jobs_running = Gauge("codec_server_model_jobs_running", "model jobs running", registry=r)
        self.rejected = Counter("codec_server_model_rejected", "model jobs refused (429)", registry=r)
        self.stage_seconds = Histogram(
            "codec_server_stage_seconds",
            "seconds per stage of model work",
            ["operation", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.layers_decoded = Counter(
            "codec_server_layers_decoded", "RNN iterations run to answer picture requests", registry=r
        )
        self.cache = Counter("codec_server_cache", "cache lookups", ["cache", "result"], registry=r)
        self.images_encoded = Counter("codec_server_images_encoded", "images stored", registry=r)
        self.ws_streams = Gauge("codec_server_ws_streams", "open WebSocket streams", registry=r)
        self.ws_bytes = Counter("codec_server_ws_sent_bytes", "bytes sent in WebSocket messages", registry=r)
        self.ws_send_timeouts = Counter(
            "codec_server_ws_send_timeouts", "streams dropped because the client stopped reading", registry=r
        )
        self.ws_rejected = Counter("codec_server_ws_rejected", "streams refused (4429)", registry=r)

    @contextmanager
    def stage(self, operation: str, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds.labels(operation, stage).observe(time.perf_counter() - started)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _route_name(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Counts every HTTP request by route template (never the raw path: ids would explode the labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.in_progress.dec()
            route = _route_name(scope)
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
