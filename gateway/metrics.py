"""The gateway's own Prometheus metrics, in a registry per application (so several apps can
live in one process, as in tests).

* ``petrel_gateway_requests_total{route,method,status}``
* ``petrel_gateway_request_duration_seconds{route,method}`` (histogram)
* ``petrel_gateway_injected_recipients_total{outcome}`` (``accepted`` / ``failed``)
* the standard ``process_*`` and ``python_*`` collectors.

``route`` is the route's path template, or ``other`` for paths that match no route, so label
values stay bounded whatever clients request.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.requests = Counter("petrel_gateway_requests", "HTTP requests answered.",
                                ["route", "method", "status"], registry=self.registry)
        self.duration = Histogram("petrel_gateway_request_duration_seconds",
                                  "Time to answer an HTTP request.", ["route", "method"],
                                  buckets=_BUCKETS, registry=self.registry)
        self.recipients = Counter("petrel_gateway_injected_recipients",
                                  "Recipients of inject requests, by outcome.", ["outcome"],
                                  registry=self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request, including those refused before routing."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics, routes: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            path = scope.get("path", "")
            route = path if path in self.routes else "other"
            method = scope.get("method", "")
            method = method if method in _METHODS else "OTHER"
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.duration.labels(route, method).observe(time.perf_counter() - started)
