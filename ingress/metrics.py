"""Prometheus metrics of ingress (served on ``ingress.metrics_listen``; see ``petrel.metrics``).

Labels stay bounded: ``protocol`` is esmtp, grpc, http (a front end such as the REST gateway
that says so) or other; ``reason`` is one of ``REASONS``; ``code_class`` is 4xx or 5xx.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable

from aiosmtpd.smtp import Envelope

from petrel import metrics as petrel_metrics
from petrel import smtp_replies
from petrel.metrics import FAST_BUCKETS, SMTP_BUCKETS, MetricsServer, ServiceMetrics, observe

METRICS = ServiceMetrics("ingress")
PROTOCOLS = ("esmtp", "grpc", "http")

# Canonical replies (petrel.smtp_replies) and what they are counted as.
_REPLY_REASONS = {
    smtp_replies.RELAY_DENIED: "relay_denied",
    smtp_replies.TOO_BIG: "too_big",
    smtp_replies.TOO_MANY_RECIPIENTS: "too_many_recipients",
    smtp_replies.BARE_LINE_ENDING: "bare_line_ending",
    smtp_replies.SPOOL_UNAVAILABLE: "spool_unavailable",
    smtp_replies.SPOOL_FULL: "spool_full",
    smtp_replies.BAD_SENDER_SYNTAX: "bad_sender",
    smtp_replies.BAD_RECIPIENT_SYNTAX: "bad_recipient",
    smtp_replies.NO_RECIPIENTS: "no_recipients",
    smtp_replies.AUTH_REQUIRED: "auth_required",
    smtp_replies.SHUTTING_DOWN: "shutting_down",
    smtp_replies.LOCAL_ERROR: "local_error",
    smtp_replies.INVALID_CONTENT: "invalid_content",
    smtp_replies.LINE_TOO_LONG: "line_too_long",
    smtp_replies.SUPPRESSED: "suppressed",
    smtp_replies.MIXED_REPORT_RECIPIENTS: "mixed_report_recipients",
    smtp_replies.REPORT_UNAVAILABLE: "report_unavailable",
}
REASONS = (*sorted(set(_REPLY_REASONS.values())), "auth_failed", "invalid_request",
           "protocol")

MESSAGES_RECEIVED = METRICS.counter(
    "petrel_ingress_messages_received",
    "Messages accepted (durable in the spool), by protocol: esmtp, grpc, http.",
    ["protocol"], initial=[(p,) for p in PROTOCOLS])
RECIPIENTS_RECEIVED = METRICS.counter(
    "petrel_ingress_recipients_received", "Recipients of the accepted messages, by protocol.",
    ["protocol"], initial=[(p,) for p in PROTOCOLS])
REJECTIONS = METRICS.counter(
    "petrel_ingress_rejections",
    "SMTP commands and inject requests refused, by protocol, reason (relay_denied, too_big, "
    "spool_unavailable, spool_full, invalid_request, protocol, ...) and code_class (4xx: "
    "try again later, 5xx: permanent; gRPC failures count as their SMTP equivalent).",
    ["protocol", "reason", "code_class"])
SMTP_SESSIONS = METRICS.gauge("petrel_ingress_smtp_sessions", "SMTP sessions open now.")
SMTP_CONNECTIONS = METRICS.counter("petrel_ingress_smtp_connections",
                                   "SMTP connections accepted.")
TRANSACTION_SECONDS = METRICS.histogram(
    "petrel_ingress_transaction_duration_seconds",
    "One accepted message, by protocol: SMTP from MAIL FROM to the reply to DATA, gRPC from "
    "request to response.",
    ["protocol"], buckets=SMTP_BUCKETS, initial=[(p,) for p in PROTOCOLS], exemplars=True)
SPOOL_WRITE_SECONDS = METRICS.histogram(
    "petrel_ingress_spool_write_duration_seconds",
    "Time until the spool acknowledged a message's durable write.",
    buckets=FAST_BUCKETS, exemplars=True)
SUPPRESSION_CHECK_FAILURES = METRICS.counter(
    "petrel_ingress_suppression_check_failures",
    "Recipients let through unchecked because the suppression list did not answer (fail "
    "open), by reason: unavailable (the call failed), skipped (backing off after a failure).",
    ["reason"], initial=[("unavailable",), ("skipped",)])
REPORT_KINDS = ("dsn", "text-bounce", "arf", "autoreply", "not-bounce")
REPORTS = METRICS.counter(
    "petrel_ingress_reports",
    "Inbound reports (mail to the bounce domain or a feedback address), by kind ("
    + ", ".join(REPORT_KINDS) + ") and whether they were tied to a message we sent.",
    ["kind", "correlated"],
    initial=[(k, c) for k in REPORT_KINDS for c in ("true", "false")])
ENQUEUE_BACKLOG = METRICS.gauge(
    "petrel_ingress_enqueue_backlog_messages",
    "Durable messages waiting to be handed to the scheduler (it was unreachable).")


def describe() -> ServiceMetrics:
    return METRICS


def serve_metrics(listen: str) -> MetricsServer | None:
    """Serve this service's metrics on ``HOST:PORT`` (``""``: not at all)."""
    return petrel_metrics.serve_metrics(listen, METRICS)


def protocol_label(protocol: str) -> str:
    """``"ESMTP"``/``"ESMTPA"`` → esmtp, ``"GRPC"`` → grpc, ``"HTTP"`` → http, else other."""
    value = protocol.lower()
    if value.startswith("esmtp") or value == "smtp":
        return "esmtp"
    return value if value in PROTOCOLS else "other"


def received(protocol: str, recipients: int) -> None:
    label = protocol_label(protocol)
    MESSAGES_RECEIVED.labels(label).inc()
    RECIPIENTS_RECEIVED.labels(label).inc(recipients)


def rejected(protocol: str, reason: str, permanent: bool) -> None:
    REJECTIONS.labels(protocol_label(protocol), reason, "5xx" if permanent else "4xx").inc()


def smtp_reply(reply: str) -> None:
    """Count ``reply`` (as sent) when it refuses something."""
    if reply[:1] not in ("4", "5"):
        return
    reason = next((r for canonical, r in _REPLY_REASONS.items() if reply.startswith(canonical)),
                  "auth_failed" if reply.startswith("535") else "protocol")
    rejected("esmtp", reason, reply.startswith("5"))


class TransactionClock:
    """When each SMTP transaction (envelope) began; entries vanish with their envelope."""

    def __init__(self) -> None:
        self._started: weakref.WeakKeyDictionary[Envelope, float] = weakref.WeakKeyDictionary()

    def start(self, envelope: Envelope) -> None:
        self._started[envelope] = time.monotonic()

    def finish(self, envelope: Envelope, trace_id: str) -> None:
        started = self._started.pop(envelope, None)
        if started is not None:
            observe(TRANSACTION_SECONDS.labels("esmtp"), time.monotonic() - started, trace_id)


def bind(smtp_sessions: Callable[[], int], enqueue_backlog: Callable[[], int]) -> None:
    """Read the live gauges from the running service (called once at start)."""
    SMTP_SESSIONS.set_function(smtp_sessions)
    ENQUEUE_BACKLOG.set_function(enqueue_backlog)
