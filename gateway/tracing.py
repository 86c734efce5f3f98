"""The gateway's request span (a small ASGI middleware; no FastAPI instrumentation needed).

Each HTTP request to a known route gets a SERVER span named ``<METHOD> <route>`` (unknown paths
are named by the method alone, so names stay bounded), continuing the caller's W3C
``traceparent``/``tracestate`` headers when they are valid, else starting a new trace. The
span is the active context while the route runs, so the injection it makes carries it on to
ingress. Health probes and ``/metrics`` are not traced.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.tracecontext import valid_traceparent, valid_tracestate
from petrel import telemetry

_tracer = telemetry.tracer("petrel.gateway")

UNTRACED_PATHS = frozenset({"/metrics", "/healthz", "/api/check-liveness/v1"})


def header(scope: Scope, name: bytes) -> str:
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers") or ()
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def caller_context(scope: Scope) -> Context:
    """The caller's trace context from the request headers; empty when absent or invalid."""
    traceparent = valid_traceparent(header(scope, b"traceparent"))
    if not traceparent:
        return Context()
    carrier = {"traceparent": traceparent}
    tracestate = valid_tracestate(header(scope, b"tracestate"))
    if tracestate:
        carrier["tracestate"] = tracestate
    return telemetry.context_from_carrier(carrier)


class TracingMiddleware:
    def __init__(self, app: ASGIApp, routes: frozenset[str]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "")
        route = path if path in self.routes else ""
        attributes = {"http.request.method": method, "url.path": path}
        if route:
            attributes["http.route"] = route
        client = scope.get("client")
        if client:
            attributes["client.address"] = client[0]
        name = f"{method} {route}" if route else method
        with _tracer.start_as_current_span(name, context=caller_context(scope),
                                           kind=SpanKind.SERVER, attributes=attributes) as span:

            async def send_and_record(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, send_and_record)
