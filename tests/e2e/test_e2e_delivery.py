"""End to end: every way in (SMTP, gRPC unary and streaming, REST) reaches a real SMTP sink,
with retries, bounces and expiry recorded as events."""

from __future__ import annotations

import httpx
import pytest

from petrel.v1 import ingress_pb2
from tests.support.messages import grpc_inject, grpc_inject_stream, make_message, smtp_send
from tests.support.net import wait_for
from tests.support.pipeline import final_dispositions
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SENDER = "sender@petrel.test"


def _strip_field(data: bytes, name: bytes) -> bytes:
    assert data.startswith(name + b": "), data[:200]
    end = data.index(b"\r\n", 0)
    while data[end + 2:end + 3] in (b" ", b"\t"):  # folded continuation lines
        end = data.index(b"\r\n", end + 2)
    return data[end + 2:]


def _strip_added_headers(data: bytes) -> bytes:
    """The message as sent by the client: drop the ref header egress prepends and the
    Received header ingress prepends."""
    return _strip_field(_strip_field(data, b"X-Petrel-Ref"), b"Received")


def test_every_inject_path_delivers_exact_body_once(make_pipeline, sink: SmtpSink) -> None:
    pipeline = make_pipeline({"PETREL_ROUTING__SMARTHOST": sink.address})
    pipeline.start_all()

    smtp_msg = make_message(SENDER, ["smtp@dest.test"], subject="via smtp")
    code, _ = smtp_send(pipeline.smtp_port, SENDER, ["smtp@dest.test"], smtp_msg)
    assert code == 250

    unary_msg = make_message(SENDER, ["unary@dest.test"], subject="via grpc")
    unary = grpc_inject(pipeline.inject_address, SENDER, ["unary@dest.test"], unary_msg)
    assert len(unary.id) == 32

    stream_msgs = [make_message(SENDER, [f"stream{i}@dest.test"]) for i in range(3)]
    responses = grpc_inject_stream(pipeline.inject_address, [
        ingress_pb2.InjectMessageRequest(sender=SENDER, recipients=[f"stream{i}@dest.test"],
                                         content=m) for i, m in enumerate(stream_msgs)])
    assert [r.status.code for r in responses] == [0, 0, 0]

    rest_msg = make_message(SENDER, ["rest@dest.test"], subject="via rest")
    reply = httpx.post(f"{pipeline.http_url}/api/inject/v1", timeout=30, json={
        "envelope_sender": SENDER, "recipients": [{"email": "rest@dest.test"}],
        "content": rest_msg.decode(), "template_dialect": "Static"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["success_count"] == 1

    expected = {"smtp@dest.test": smtp_msg, "unary@dest.test": unary_msg,
                "rest@dest.test": rest_msg,
                **{f"stream{i}@dest.test": m for i, m in enumerate(stream_msgs)}}
    wait_for(lambda: all(sink.received_for(r) for r in expected), timeout=30,
             message="every message at the sink")
    for rcpt, original in expected.items():
        received = sink.received_for(rcpt)
        assert len(received) == 1, rcpt
        assert _strip_added_headers(received[0].data) == original, rcpt
    wait_for(lambda: len(pipeline.events_of("Delivery")) == len(expected), timeout=15)
    assert len(pipeline.events_of("Reception")) == len(expected)


def test_message_id_added_when_missing_and_tenant_headers_removed(make_pipeline,
                                                                  sink: SmtpSink) -> None:
    pipeline = make_pipeline({"PETREL_ROUTING__SMARTHOST": sink.address})
    pipeline.start_all(skip=("gateway", "bounce"))
    msg = make_message(SENDER, ["t@dest.test"], message_id=False,
                       extra_headers={"X-Tenant": "acme", "X-Campaign": "spring"})
    assert smtp_send(pipeline.smtp_port, SENDER, ["t@dest.test"], msg)[0] == 250
    received = wait_for(lambda: sink.received_for("t@dest.test"), timeout=30)[0].data
    head = received.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nMessage-ID: <" in head or head.startswith(b"Message-ID: <")
    assert b"X-Tenant" not in head and b"X-Campaign" not in head
    delivery = wait_for(lambda: pipeline.events_of("Delivery"), timeout=15)[0]
    assert delivery["tenant"] == "acme" and delivery["campaign"] == "spring"
    assert delivery["queue"] == "spring:acme@dest.test"


def test_multi_recipient_multi_domain_splits_by_site(make_pipeline) -> None:
    with SmtpSink() as sink_a, SmtpSink() as sink_b:
        routes = f'{{"a.test": "{sink_a.address}", "b.test": "{sink_b.address}"}}'
        pipeline = make_pipeline({"PETREL_ROUTING__ROUTES": routes})
        pipeline.start_all(skip=("gateway",))
        rcpts = ["one@a.test", "two@a.test", "three@b.test", "four@b.test", "five@b.test"]
        assert smtp_send(pipeline.smtp_port, SENDER, rcpts, make_message(SENDER, rcpts))[0] == 250
        deliveries = wait_for(lambda: (d := pipeline.events_of("Delivery")) and len(d) >= 5 and d,
                              timeout=30, message="five deliveries")
        assert sorted(d["recipient"] for d in deliveries) == sorted(rcpts)
        assert sink_a.count() == 1 and sorted(sink_a.messages[0].recipients) == rcpts[:2]
        assert sink_b.count() == 1 and sorted(sink_b.messages[0].recipients) == sorted(rcpts[2:])
        sites = {d["recipient"].split("@")[1]: d["site"] for d in deliveries}
        assert sites["a.test"] != sites["b.test"]


def test_transient_then_delivered_and_permanent_bounce(make_pipeline, sink: SmtpSink) -> None:
    pipeline = make_pipeline({"PETREL_ROUTING__SMARTHOST": sink.address})
    pipeline.start_all(skip=("gateway",))
    for rcpt in ("flaky@dest.test", "nouser@dest.test"):
        assert smtp_send(pipeline.smtp_port, SENDER, [rcpt], make_message(SENDER, [rcpt]))[0] == 250

    wait_for(lambda: pipeline.events_of("Delivery") and pipeline.events_of("Bounce"), timeout=30,
             message="delivery after retry and a bounce")
    transient = [e for e in pipeline.events_of("TransientFailure")
                 if e["recipient"] == "flaky@dest.test"]
    assert len(transient) == 1 and transient[0]["response"]["code"] == 451
    delivery = pipeline.events_of("Delivery")[0]
    assert delivery["recipient"] == "flaky@dest.test" and delivery["num_attempts"] == 2
    bounce = pipeline.events_of("Bounce")[0]
    assert bounce["recipient"] == "nouser@dest.test"
    assert bounce["response"]["code"] == 550
    assert bounce["bounce_classification"] == "InvalidRecipient"
    assert len(sink.received_for("flaky@dest.test")) == 1


def test_message_older_than_max_age_expires(make_pipeline, sink: SmtpSink) -> None:
    pipeline = make_pipeline({"PETREL_ROUTING__SMARTHOST": sink.address,
                              "PETREL_SCHEDULER__MAX_AGE": "3s"})
    pipeline.start_all(skip=("gateway",))
    rcpt = "tempfail@dest.test"
    assert smtp_send(pipeline.smtp_port, SENDER, [rcpt], make_message(SENDER, [rcpt]))[0] == 250
    expiration = wait_for(lambda: pipeline.events_of("Expiration"), timeout=30)[0]
    assert expiration["recipient"] == rcpt
    assert pipeline.events_of("TransientFailure")
    finals = final_dispositions(pipeline.events())
    assert list(finals.values()) == [["Expiration"]]
