"""Protobuf messages -> JSON response models (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from gateway.models import (
    MessageView,
    QueueSummaryItem,
    QueueSummaryResponse,
    RecipientView,
    ScheduleView,
)
from petrel.v1 import common_pb2, scheduler_pb2

_QUEUE_KINDS: dict[int, Literal["scheduled", "ready"]] = {
    scheduler_pb2.QUEUE_KIND_SCHEDULED: "scheduled",
    scheduler_pb2.QUEUE_KIND_READY: "ready",
}
_STATE_PREFIX = "RECIPIENT_STATE_"


def rfc3339_ms(unix_ms: int) -> str:
    moment = datetime.fromtimestamp(unix_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def recipient_state(value: int) -> str:
    try:
        name = common_pb2.RecipientState.Name(common_pb2.RecipientState.ValueType(value))
    except ValueError:
        return "unspecified"
    return name.removeprefix(_STATE_PREFIX).lower()


def queue_summary(response: scheduler_pb2.GetQueueSummaryResponse) -> QueueSummaryResponse:
    return QueueSummaryResponse(
        queues=[QueueSummaryItem(name=q.name, kind=_QUEUE_KINDS.get(q.kind, "unspecified"),
                                 count=q.count, oldest_age_seconds=q.oldest_age_seconds,
                                 in_flight=q.in_flight)
                for q in response.queues],
        messages=response.messages)


def message_view(meta: common_pb2.MessageMeta, body: bytes | None) -> MessageView:
    return MessageView(
        sender=meta.sender,
        recipients=[RecipientView(address=r.address, state=recipient_state(r.state))
                    for r in meta.recipients],
        tenant=meta.tenant,
        campaign=meta.campaign,
        meta=dict(meta.meta),
        created=rfc3339_ms(meta.created_unix_ms),
        size=meta.size,
        schedules=[ScheduleView(domain=s.domain, attempts=s.attempts,
                                due=rfc3339_ms(s.due_unix_ms) if s.due_unix_ms else None)
                   for s in meta.schedules],
        reception_protocol=meta.reception_protocol,
        trace_context=dict(meta.trace_context),
        data=body.decode("utf-8", errors="replace") if body is not None else None,
    )
