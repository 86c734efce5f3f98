"""The gateway's own Prometheus metrics, in a registry per application (so several apps can
live in one process, as in tests), served on the HTTP port at ``/metrics``.

* ``petrel_gateway_requests_total{route,method,status}``
* ``petrel_gateway_request_duration_seconds{route,method}`` (histogram; exemplar: the active
  span's trace, when tracing is on)
* ``petrel_gateway_injected_recipients_total{outcome}`` (``accepted`` / ``failed``)
* ``petrel_build_info{version,service}`` and the standard ``process_*`` and ``python_*``
  collectors (see ``petrel.metrics``).

``route`` is the route's path template, or ``other`` for paths that match no route, so label
values stay bounded whatever clients request.
"""

from __future__ import annotations

import time

from prometheus_client.exposition import choose_encoder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from petrel.metrics import ServiceMetrics, observe

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.metrics = ServiceMetrics("gateway")
        self.registry = self.metrics.registry
        self.requests = self.metrics.counter(
            "petrel_gateway_requests",
            "HTTP requests answered, by route (path template or other), method and status.",
            ["route", "method", "status"])
        self.duration = self.metrics.histogram(
            "petrel_gateway_request_duration_seconds",
            "Time to answer an HTTP request, by route and method.", ["route", "method"],
            buckets=_BUCKETS, exemplars=True)
        self.recipients = self.metrics.counter(
            "petrel_gateway_injected_recipients",
            "Recipients of inject requests, by outcome: accepted, failed.", ["outcome"],
            initial=[("accepted",), ("failed",)])

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The metrics as the scraper asked (``Accept``): OpenMetrics (with exemplars) or
        the Prometheus text format; returns the body and its content type."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


def describe() -> ServiceMetrics:
    return GatewayMetrics().metrics


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
            observe(self.metrics.duration.labels(route, method), time.perf_counter() - started)
