"""The spans of a delivery attempt.

``deliver_span(task)`` is one attempt: ``deliver <domain>`` (CONSUMER), a child of the context
stored with the message (``task.trace_context``), so every attempt — the first one, a retry
hours later, one after a restart — is in the message's trace. ``annotate(span, result)``
records what the attempt produced: the MX host, peer address and port, TLS, the first reply
(code, enhanced code), the bounce classification and the outcome. ``classify_span`` wraps the
call to the bounce service (the gRPC interceptor carries the context on to it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from petrel import telemetry
from petrel.v1 import scheduler_pb2

_tracer = telemetry.tracer("petrel.egress")

OUTCOMES = {
    scheduler_pb2.DELIVERY_OUTCOME_UNSPECIFIED: "unspecified",
    scheduler_pb2.DELIVERY_OUTCOME_DELIVERED: "delivered",
    scheduler_pb2.DELIVERY_OUTCOME_TRANSIENT_FAILURE: "transient_failure",
    scheduler_pb2.DELIVERY_OUTCOME_PERMANENT_FAILURE: "permanent_failure",
}
MAX_TEXT = 256
# ``egress.session.Peer`` as text: "mx.example.com [192.0.2.1]:25"
_PEER = re.compile(r"^(?P<host>.*) \[(?P<address>[^\]]*)\]:(?P<port>\d+)$")


def span_name(task: scheduler_pb2.DeliveryTask) -> str:
    return f"deliver {task.domain or task.site or 'unknown'}"


@contextmanager
def deliver_span(task: scheduler_pb2.DeliveryTask) -> Iterator[Span]:
    if not telemetry.recording(_tracer):
        with telemetry.current_context_only(
                telemetry.context_from_carrier(task.trace_context)) as current:
            yield current
        return
    with _tracer.start_as_current_span(
            span_name(task), context=telemetry.context_from_carrier(task.trace_context),
            kind=SpanKind.CONSUMER,
            attributes=telemetry.task_attributes(task, "process")) as span:
        yield span


def peer_attributes(peer: str) -> dict[str, Any]:
    match = _PEER.match(peer)
    if match is None:
        return {"server.address": peer} if peer else {}
    return {"petrel.mx.host": match["host"], "server.address": match["host"],
            "network.peer.address": match["address"], "network.peer.port": int(match["port"])}


def outcome_of(result: scheduler_pb2.DeliveryResult) -> str:
    outcomes = {OUTCOMES.get(r.outcome, "unspecified") for r in result.recipients}
    if not outcomes:
        return "none"
    return outcomes.pop() if len(outcomes) == 1 else "mixed"


def result_attributes(result: scheduler_pb2.DeliveryResult) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "petrel.site": result.site,
        "petrel.tls": result.tls,
        "petrel.outcome": outcome_of(result),
        **peer_attributes(result.peer),
    }
    if result.recipients:
        failed = [r for r in result.recipients
                  if r.outcome != scheduler_pb2.DELIVERY_OUTCOME_DELIVERED]
        first = (failed or list(result.recipients))[0]
        attributes["petrel.smtp.reply_code"] = first.reply.code
        attributes["petrel.smtp.enhanced_code"] = first.reply.enhanced_code
        attributes["petrel.smtp.reply_text"] = first.reply.text[:MAX_TEXT]
        if first.bounce_classification:
            attributes["petrel.bounce.classification"] = first.bounce_classification
        attributes["petrel.recipients.failed"] = len(failed)
    return attributes


def annotate(span: Span, result: scheduler_pb2.DeliveryResult) -> None:
    if not span.is_recording():
        return
    span.set_attributes(result_attributes(result))
    if any(r.outcome == scheduler_pb2.DELIVERY_OUTCOME_PERMANENT_FAILURE
           for r in result.recipients):
        # Deferrals are an expected outcome; a bounce is the attempt failing.
        span.set_status(Status(StatusCode.ERROR, "permanent failure"))


@contextmanager
def classify_span(replies: int) -> Iterator[Span]:
    with _tracer.start_as_current_span("classify", attributes={"petrel.replies": replies}
                                       ) as span:
        yield span
