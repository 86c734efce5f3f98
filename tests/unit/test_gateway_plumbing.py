"""Gateway helpers without sockets: error field paths, trace context, proto views."""

from __future__ import annotations

import grpc

from gateway.errors import field_path
from gateway.inject import RecipientResult, all_retryable
from gateway.tracecontext import valid_traceparent, valid_tracestate
from gateway.views import message_view, queue_summary, recipient_state, rfc3339_ms
from petrel.v1 import common_pb2, scheduler_pb2

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_field_paths() -> None:
    assert field_path(("body", "recipients", 0, "email")) == "recipients[0].email"
    assert field_path(("body", "content", "builder", "attachments", 2, "data")) == \
        "content.attachments[2].data"
    assert field_path(("body", "content", "rfc5322")) == "content"
    assert field_path(("body", "meta", "x-y", "[key]")) == 'meta["x-y"]'
    assert field_path(("query", "id")) == "id"
    assert field_path(("body",)) is None


def test_traceparent_validation() -> None:
    assert valid_traceparent(TRACEPARENT) == TRACEPARENT
    assert valid_traceparent(f" {TRACEPARENT} ") == TRACEPARENT
    assert valid_traceparent(None) == ""
    assert valid_traceparent("garbage") == ""
    assert valid_traceparent("00-" + "0" * 32 + "-00f067aa0ba902b7-01") == ""
    assert valid_traceparent("ff" + TRACEPARENT[2:]) == ""
    assert valid_traceparent(TRACEPARENT + "-extra") == ""
    assert valid_traceparent("01" + TRACEPARENT[2:] + "-future") != ""
    assert valid_tracestate("congo=t61rcWkgMzE") == "congo=t61rcWkgMzE"
    assert valid_tracestate("x" * 600) == ""


def test_all_retryable_means_nothing_accepted_and_only_unavailable() -> None:
    down = RecipientResult("a@x", None, grpc.StatusCode.UNAVAILABLE, "down")
    late = RecipientResult("b@x", None, grpc.StatusCode.DEADLINE_EXCEEDED, "late")
    bad = RecipientResult("c@x", None, grpc.StatusCode.INVALID_ARGUMENT, "bad")
    ok = RecipientResult("d@x", "0" * 32)
    assert all_retryable([down, late])
    assert not all_retryable([down, bad])
    assert not all_retryable([down, ok])
    assert not all_retryable([])


def test_views() -> None:
    assert rfc3339_ms(0) == "1970-01-01T00:00:00.000Z"
    assert recipient_state(common_pb2.RECIPIENT_STATE_DELIVERED) == "delivered"
    assert recipient_state(999) == "unspecified"
    summary = queue_summary(scheduler_pb2.GetQueueSummaryResponse(messages=3, queues=[
        scheduler_pb2.QueueSummary(name="example.com", kind=scheduler_pb2.QUEUE_KIND_SCHEDULED,
                                   count=2, oldest_age_seconds=1.5, in_flight=1)]))
    assert summary.model_dump() == {"messages": 3, "queues": [
        {"name": "example.com", "kind": "scheduled", "count": 2, "oldest_age_seconds": 1.5,
         "in_flight": 1}]}
    meta = common_pb2.MessageMeta(
        id="a" * 32, sender="s@x", created_unix_ms=1_700_000_000_123, size=10,
        recipients=[common_pb2.Recipient(address="r@y",
                                         state=common_pb2.RECIPIENT_STATE_PENDING)],
        schedules=[common_pb2.DomainSchedule(domain="y", attempts=1, due_unix_ms=0)])
    view = message_view(meta, b"Subject: x\r\n\r\n\xff")
    assert view.created == "2023-11-14T22:13:20.123Z"
    assert view.recipients[0].state == "pending"
    assert view.schedules[0].due is None
    assert view.data == "Subject: x\r\n\r\n\ufffd"
    assert message_view(meta, None).data is None
