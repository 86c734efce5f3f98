"""Prometheus metrics of an egress worker (served on ``egress.metrics_listen``; see
``petrel.metrics``).

Labels stay bounded: outcomes, SMTP reply classes, route kinds and booleans, never sites,
hosts or addresses. A delivery attempt is one task: one message to the recipients of one
domain; its ``outcome`` is delivered, transient_failure or permanent_failure when every
recipient had that result, else mixed.
"""

from __future__ import annotations

from petrel import metrics as petrel_metrics
from petrel.metrics import FAST_BUCKETS, SMTP_BUCKETS, MetricsServer, ServiceMetrics
from petrel.routing import Route

METRICS = ServiceMetrics("egress")
RECIPIENT_OUTCOMES = ("delivered", "transient_failure", "permanent_failure")
ATTEMPT_OUTCOMES = (*RECIPIENT_OUTCOMES, "mixed")
# Route.kind values (petrel.routing).
ROUTE_KINDS = ("mx", "implicit", "null_mx", "nxdomain", "unresolved", "literal", "route",
               "smarthost")

DELIVERY_ATTEMPTS = METRICS.counter(
    "petrel_egress_delivery_attempts",
    "Delivery attempts (tasks) finished, by outcome: delivered, transient_failure, "
    "permanent_failure, mixed.",
    ["outcome"], initial=[(o,) for o in ATTEMPT_OUTCOMES])
ATTEMPT_SECONDS = METRICS.histogram(
    "petrel_egress_delivery_attempt_duration_seconds",
    "One delivery attempt from task receipt to result (routing, body read, SMTP, "
    "classification), by outcome.",
    ["outcome"], buckets=SMTP_BUCKETS, initial=[(o,) for o in ATTEMPT_OUTCOMES],
    exemplars=True)
RECIPIENTS = METRICS.counter(
    "petrel_egress_recipients",
    "Recipient results reported to the scheduler, by outcome: delivered, transient_failure, "
    "permanent_failure.",
    ["outcome"], initial=[(o,) for o in RECIPIENT_OUTCOMES])
IN_FLIGHT = METRICS.gauge("petrel_egress_tasks_in_flight", "Delivery tasks running now.")
CONNECTIONS = METRICS.counter(
    "petrel_egress_smtp_connections",
    "SMTP connections opened (greeted), by tls: true when STARTTLS was negotiated.",
    ["tls"], initial=[("true",), ("false",)])
CONNECTIONS_OPEN = METRICS.gauge("petrel_egress_smtp_connections_open",
                                 "SMTP connections open now (in use or idle in the pool).")
CONNECTION_FAILURES = METRICS.counter(
    "petrel_egress_smtp_connection_failures",
    "Hosts that could not take a message (no connection, refused greeting, EHLO or MAIL, "
    "TLS policy), by reply_class: 4xx, 5xx.",
    ["reply_class"], initial=[("4xx",), ("5xx",)])
REUSED = METRICS.counter("petrel_egress_smtp_sessions_reused",
                         "Deliveries made on a reused SMTP connection.")
MX_LOOKUPS = METRICS.counter(
    "petrel_egress_mx_lookups",
    "Route lookups that were not cached, by result (the route kind): mx, implicit, null_mx, "
    "nxdomain, unresolved (DNS failure), literal, route, smarthost.",
    ["result"], initial=[(k,) for k in ROUTE_KINDS])
MX_LOOKUP_SECONDS = METRICS.histogram(
    "petrel_egress_mx_lookup_duration_seconds",
    "Time to resolve a route that was not cached (MX, then A/AAAA of the hosts).",
    buckets=FAST_BUCKETS)


def describe() -> ServiceMetrics:
    return METRICS


def serve_metrics(listen: str) -> MetricsServer | None:
    """Serve this service's metrics on ``HOST:PORT`` (``""``: not at all)."""
    return petrel_metrics.serve_metrics(listen, METRICS)


def attempt_outcome(outcomes: list[str]) -> str:
    """The outcome label of an attempt whose recipients had ``outcomes``."""
    distinct = set(outcomes)
    if len(distinct) == 1:
        (only,) = distinct
        return only if only in RECIPIENT_OUTCOMES else "mixed"
    return "mixed"


def route_looked_up(route: Route, seconds: float) -> None:
    """``Router`` observer: one route resolved without the cache."""
    kind = route.kind if route.kind in ROUTE_KINDS else "unresolved"
    MX_LOOKUPS.labels(kind).inc()
    MX_LOOKUP_SECONDS.observe(seconds)
