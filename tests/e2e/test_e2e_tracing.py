"""End to end: one trace per message across every stage and every attempt (design invariant 5).

A real OTLP receiver collects what every service process exports. One message injected over
gRPC with a caller's ``traceparent`` is deferred once by the sink, the scheduler is restarted,
and the retry delivers it: spans from ingress, spool, scheduler, egress and bounce all belong
to, or link to, the caller's trace; both attempts hang below the reception span; events and
log lines carry the trace id; span names are low-cardinality. A REST injection continues the
caller's trace through the gateway.
"""

from __future__ import annotations

import json
import re

import grpc
import httpx
import pytest

from petrel.v1 import ingress_pb2, ingress_pb2_grpc
from tests.support.messages import make_message
from tests.support.net import wait_for
from tests.support.otlp import CollectedSpan, OtlpReceiver
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SENDER = "sender@petrel.test"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
REST_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
REST_TRACEPARENT = f"00-{REST_TRACE_ID}-b7ad6b7169203331-01"
STAGES = {"petrel-ingress", "petrel-spool", "petrel-scheduler", "petrel-egress", "petrel-bounce"}
ID_LIKE = re.compile(r"[0-9a-f]{16,}")


def _env(receiver: OtlpReceiver, sink: SmtpSink) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "PETREL_ROUTING__SMARTHOST": sink.address,
        # Long enough to restart the scheduler between the two attempts.
        "PETREL_SCHEDULER__RETRY_INTERVAL": "4s",
        "PETREL_SCHEDULER__MAX_RETRY_INTERVAL": "8s",
    }


def _inject(address: str, recipient: str) -> str:
    with grpc.insecure_channel(address) as channel:
        response = ingress_pb2_grpc.InjectServiceStub(channel).InjectMessage(
            ingress_pb2.InjectMessageRequest(sender=SENDER, recipients=[recipient],
                                             content=make_message(SENDER, [recipient])),
            metadata=(("traceparent", TRACEPARENT),), timeout=30)
    return response.id


def _in_trace(spans: list[CollectedSpan], trace_id: str) -> list[CollectedSpan]:
    return [s for s in spans if s.trace_id == trace_id or trace_id in s.linked_traces()]


def _named(spans: list[CollectedSpan], name: str) -> list[CollectedSpan]:
    return [s for s in spans if s.name == name]


def _ancestors(span: CollectedSpan, spans: list[CollectedSpan]) -> list[str]:
    by_id = {s.span_id: s for s in spans}
    chain = []
    while span.parent_span_id:
        chain.append(span.parent_span_id)
        if span.parent_span_id not in by_id:
            break
        span = by_id[span.parent_span_id]
    return chain


def test_one_trace_per_message_across_stages_retry_and_restart(make_pipeline,
                                                               sink: SmtpSink) -> None:
    with OtlpReceiver() as receiver:
        pipeline = make_pipeline(_env(receiver, sink))
        pipeline.start_all()
        recipient = "flaky-trace@dest.test"
        message_id = _inject(pipeline.inject_address, recipient)
        wait_for(lambda: [e for e in pipeline.events_of("TransientFailure")
                          if e["id"] == message_id], timeout=30, message="first attempt deferred")
        pipeline.restart("scheduler")
        delivery = wait_for(lambda: [e for e in pipeline.events_of("Delivery")
                                     if e["id"] == message_id], timeout=30,
                            message="delivered on retry")[0]
        assert sink.received_for(recipient)

        rest_message = make_message(SENDER, ["rest@dest.test"]).decode()
        reply = httpx.post(f"{pipeline.http_url}/api/inject/v1", timeout=30,
                           headers={"traceparent": REST_TRACEPARENT},
                           json={"envelope_sender": SENDER, "content": rest_message,
                                 "recipients": [{"email": "rest@dest.test"}]})
        assert reply.status_code == 200, reply.text

        def complete() -> list[CollectedSpan] | None:
            spans = receiver.spans()
            ours = _in_trace(spans, TRACE_ID)
            rest = _in_trace(spans, REST_TRACE_ID)
            if (len(_named(ours, "deliver dest.test")) == 2 and _named(ours, "disposition")
                    and {s.service for s in ours} >= STAGES and _named(rest, "inject grpc")
                    and _named(rest, "POST /api/inject/v1")):
                return spans
            return None

        spans = wait_for(complete, timeout=30, message="spans of every stage exported")
        pipeline.stop_all()  # while the receiver still takes what they flush on the way out

    ours = _in_trace(spans, TRACE_ID)
    assert {s.service for s in ours} >= STAGES

    # ingress: the gRPC server span continues the caller's span; the reception span (whose
    # context is stored with the message) is below it, with spool write and enqueue below that.
    server = [s for s in ours if s.name == "/petrel.v1.InjectService/InjectMessage"]
    assert len(server) == 1 and server[0].parent_span_id == CALLER_SPAN
    (reception,) = _named(ours, "inject grpc")
    assert reception.service == "petrel-ingress" and reception.kind == "CONSUMER"
    assert reception.parent_span_id == server[0].span_id
    assert reception.attributes["messaging.message.id"] == message_id
    for step in ("spool write", "enqueue"):
        assert _named(ours, step)[0].parent_span_id == reception.span_id

    # spool: its commit spans start their own traces and link to the message's.
    commits = [s for s in _named(ours, "spool commit") if s.service == "petrel-spool"]
    assert commits and all(s.trace_id != TRACE_ID for s in commits)
    assert all(s.attributes["messaging.batch.message_count"] >= 1 for s in commits)

    # scheduler: enqueue, one dispatch per attempt (the second from the restarted process),
    # one disposition.
    assert _named(ours, "enqueue dest.test")[0].parent_span_id == reception.span_id
    dispatches = sorted((s for s in ours if s.name.startswith("dispatch ")),
                        key=lambda s: s.attributes["petrel.attempt"])
    assert [s.attributes["petrel.attempt"] for s in dispatches] == [1, 2]
    assert dispatches[0].instance != dispatches[1].instance
    (disposition,) = _named(ours, "disposition")
    assert disposition.service == "petrel-scheduler"
    assert disposition.attributes["petrel.outcome"] == "delivered"
    assert disposition.attributes["petrel.attempt"] == 2
    assert disposition.attributes["messaging.message.id"] == message_id

    # egress: both attempts are parented in the stored context, whatever happened between.
    attempts = sorted(_named(ours, "deliver dest.test"),
                      key=lambda s: s.attributes["petrel.attempt"])
    assert [s.parent_span_id for s in attempts] == [reception.span_id] * 2
    assert all(s.trace_id == TRACE_ID and s.kind == "CONSUMER" for s in attempts)
    first, second = (s.attributes for s in attempts)
    assert (first["petrel.outcome"], first["petrel.smtp.reply_code"]) == ("transient_failure", 451)
    assert first["petrel.smtp.enhanced_code"] == "4.3.0"
    assert first["petrel.bounce.classification"]
    assert (second["petrel.outcome"], second["petrel.smtp.reply_code"]) == ("delivered", 250)
    for attempt in (first, second):
        assert attempt["network.peer.address"] == "127.0.0.1"
        assert attempt["network.peer.port"] == sink.port
        assert attempt["petrel.tls"] is False

    # bounce: the classification call of the deferred attempt, propagated over gRPC.
    (classify_call,) = [s for s in ours if s.service == "petrel-egress" and s.name == "classify"]
    assert classify_call.parent_span_id == attempts[0].span_id
    bounce_server = [s for s in ours if s.service == "petrel-bounce"
                     and s.name == "/petrel.v1.BounceService/ClassifyReplies"]
    assert len(bounce_server) == 1 and bounce_server[0].kind == "SERVER"
    assert [s for s in ours if s.service == "petrel-bounce" and s.name == "classify"
            and s.parent_span_id == bounce_server[0].span_id]

    # REST: the gateway's request span continues the caller's trace and ingress continues it.
    rest = [s for s in spans if s.trace_id == REST_TRACE_ID]
    requests = [s for s in rest if s.service == "petrel-gateway"
                and s.name == "POST /api/inject/v1"]
    assert len(requests) == 1
    assert requests[0].kind == "SERVER" and requests[0].parent_span_id == "b7ad6b7169203331"
    (rest_reception,) = _named(rest, "inject grpc")
    assert requests[0].span_id in _ancestors(rest_reception, rest)

    # Events and logs carry the trace id.
    assert delivery["trace_id"] == TRACE_ID
    for record in pipeline.events():
        if record["id"] == message_id:
            assert record["trace_id"] == TRACE_ID, record["type"]
    logged = [json.loads(line) for line in pipeline.log_tail("egress", 400).splitlines()
              if line.startswith("{") and message_id in line]
    assert logged and all(entry.get("trace_id") == TRACE_ID for entry in logged)

    # Low-cardinality names: no ids, no addresses, on any span of any service.
    for span in spans:
        assert "@" not in span.name and not ID_LIKE.search(span.name), span.name
