"""The scheduler's spans, each in the trace of the message it concerns.

Every span is a child of the context stored with the message (``MessageMeta.trace_context``,
copied into ``DeliveryTask.trace_context``), never of whatever span happens to be active, so a
retry hours later or after a restart still lands in the message's trace:

* ``enqueue <domain>`` (CONSUMER): ingress handed the message over (``enqueue`` alone when its
  recipients span several domains);
* ``dispatch <site>`` (PRODUCER): a delivery task went to an egress worker;
* ``disposition``: a final outcome (Delivery, Bounce, Expiration) was recorded.

Names carry domains and sites only (bounded); ids, addresses and queue names (which include
tenants and campaigns) are attributes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.trace import Span, SpanKind

from petrel import telemetry
from petrel.v1 import common_pb2, scheduler_pb2
from scheduler.policy import queue_name, recipient_domain

_tracer = telemetry.tracer("petrel.scheduler")

MESSAGING_SYSTEM = telemetry.MESSAGING_SYSTEM
FINAL_OUTCOMES = {"Delivery": "delivered", "Bounce": "bounced", "Expiration": "expired",
                  "AdminBounce": "admin_bounced"}


@contextmanager
def enqueue_span(meta: common_pb2.MessageMeta) -> Iterator[Span]:
    if not telemetry.recording(_tracer):
        with telemetry.current_context_only(
                telemetry.context_from_carrier(meta.trace_context)) as span:
            yield span
        return
    domains = sorted({recipient_domain(r.address) for r in meta.recipients})
    attributes: dict[str, Any] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": "receive",
        "messaging.message.id": meta.id,
        "petrel.recipients": len(meta.recipients),
    }
    if len(domains) == 1:
        name = f"enqueue {domains[0]}"
        attributes["messaging.destination.name"] = queue_name(domains[0], meta.tenant,
                                                              meta.campaign)
    else:
        name = "enqueue"
        attributes["petrel.domains"] = len(domains)
    with _tracer.start_as_current_span(
            name, context=telemetry.context_from_carrier(meta.trace_context),
            kind=SpanKind.CONSUMER, attributes=attributes) as span:
        yield span


def dispatched(task: scheduler_pb2.DeliveryTask, worker_id: str) -> None:
    """Record that ``task`` was handed to ``worker_id`` (an instant span)."""
    if not telemetry.recording(_tracer):
        return
    _tracer.start_span(
        f"dispatch {task.site}", context=telemetry.context_from_carrier(task.trace_context),
        kind=SpanKind.PRODUCER,
        attributes={**telemetry.task_attributes(task, "send"), "petrel.worker": worker_id},
    ).end()


def dispositions(meta: common_pb2.MessageMeta, records: Sequence[dict[str, Any]]) -> None:
    """One ``disposition`` span per final outcome among ``records`` (one job's records)."""
    if not telemetry.recording(_tracer):
        return
    finals: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record["type"] in FINAL_OUTCOMES:
            finals.setdefault(record["type"], []).append(record)
    if not finals:
        return
    parent = telemetry.context_from_carrier(meta.trace_context)
    for record_type, group in finals.items():
        first = group[0]
        attributes: dict[str, Any] = {
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.type": "settle",
            "messaging.message.id": meta.id,
            "petrel.outcome": FINAL_OUTCOMES[record_type],
            "petrel.attempt": first["num_attempts"],
            "petrel.recipients": len(group),
            "petrel.queue": first["queue"],
            "petrel.site": first["site"],
            "petrel.smtp.reply_code": first["response"]["code"],
        }
        if record_type == "Bounce":
            attributes["petrel.bounce.classification"] = first["bounce_classification"]
        _tracer.start_span("disposition", context=parent, attributes=attributes).end()
