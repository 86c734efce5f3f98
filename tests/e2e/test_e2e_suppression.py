"""End to end: a hard bounce suppresses the recipient for its tenant until removed through
REST; an asynchronous DSN days later is tied to the delivered message (OOB record with its
id, tenant and campaign); a complaint becomes a Feedback record and suppresses the recipient.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from petrel.correlation import parse_verp
from tests.support.messages import grpc_inject, make_message, smtp_send
from tests.support.net import wait_for
from tests.support.pipeline import Pipeline
from tests.support.reports import header_block, make_arf, make_dsn
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SENDER = "sender@petrel.test"
BOUNCES = "bounces.petrel.test"
FEEDBACK = "fbl@petrel.test"
PATH = "/api/suppression/v1"
CACHE_TTL = 0.3


def start(make_pipeline: Any, sink: SmtpSink) -> Pipeline:
    pipeline: Pipeline = make_pipeline({
        "PETREL_ROUTING__SMARTHOST": sink.address,
        "PETREL_INGRESS__SUPPRESSION_CACHE_TTL": str(CACHE_TTL),
        "PETREL_BOUNCE__DOMAIN": BOUNCES,
        "PETREL_BOUNCE__FEEDBACK_ADDRESSES": FEEDBACK,
    })
    pipeline.start_all()
    return pipeline


def tenant_mail(recipient: str, tenant: str = "acme", campaign: str = "spring") -> bytes:
    return make_message(SENDER, [recipient], extra_headers={"X-Tenant": tenant,
                                                            "X-Campaign": campaign})


def suppressions(pipeline: Pipeline, tenant: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{pipeline.http_url}{PATH}", params={"tenant": tenant}, timeout=10)
    assert reply.status_code == 200, reply.text
    return list(reply.json()["suppressions"])


def test_hard_bounce_suppresses_until_removed_through_rest(make_pipeline: Any,
                                                          sink: SmtpSink) -> None:
    pipeline = start(make_pipeline, sink)
    dead = "nouser-e2e@dest.test"
    code, text = smtp_send(pipeline.smtp_port, SENDER, [dead], tenant_mail(dead))
    assert code == 250, text
    original_id = text.decode().split()[1]

    bounce = wait_for(lambda: pipeline.events_of("Bounce"), timeout=30)[0]
    assert (bounce["id"], bounce["bounce_classification"]) == (original_id, "InvalidRecipient")
    [entry] = wait_for(lambda: suppressions(pipeline, "acme"), timeout=15,
                       message="the hard bounce on the list")
    assert (entry["address"], entry["tenant"], entry["source"], entry["reason"]) == (
        dead, "acme", "bounce", "InvalidRecipient")
    assert entry["message_id"] == original_id
    assert suppressions(pipeline, "") == []  # only that tenant's list
    # Ingress may hold an answer from before the bounce for up to the cache TTL.
    created = datetime.fromisoformat(entry["created"]).timestamp()
    wait_for(lambda: time.time() > created + CACHE_TTL, timeout=5, message="cache TTL")

    refusal = "550 5.7.1 Recipient suppressed (tenant acme: bounce InvalidRecipient)"
    code, text = smtp_send(pipeline.smtp_port, SENDER, [dead], tenant_mail(dead))
    assert f"{code} {text.decode()}" == refusal
    rest = httpx.post(f"{pipeline.http_url}/api/inject/v1", timeout=30, json={
        "envelope_sender": SENDER, "recipients": [{"email": dead}], "tenant": "acme",
        "content": "Subject: again\r\n\r\nbody\r\n"}).json()
    assert rest["fail_count"] == 1 and "FAILED_PRECONDITION" in rest["errors"][0]
    rejections = wait_for(lambda: [e for e in pipeline.events_of("Rejection")
                                   if e["recipient"] == dead], timeout=10)
    assert rejections[0]["tenant"] == "acme"
    assert rejections[0]["response"]["content"] == refusal.split(" ", 2)[2]
    other = smtp_send(pipeline.smtp_port, SENDER, [dead], tenant_mail(dead, tenant="beta"))
    assert other[0] == 250  # another tenant's mail is not affected

    removed = httpx.delete(f"{pipeline.http_url}{PATH}", params={
        "address": dead, "tenant": "acme"}, timeout=10)
    assert removed.status_code == 200 and removed.json() == {"removed": 1}
    assert httpx.delete(f"{pipeline.http_url}{PATH}", params={
        "address": dead, "tenant": "acme"}, timeout=10).status_code == 404

    def accepted() -> bool:
        return smtp_send(pipeline.smtp_port, SENDER, [dead], tenant_mail(dead))[0] == 250

    wait_for(accepted, timeout=10, interval=0.3, message="accepted again after the removal")


def _delivered(pipeline: Pipeline, sink: SmtpSink, recipient: str, via: str) -> tuple[str, Any]:
    """Send ``recipient`` a tenant message, wait until it is delivered and has left the
    spool; returns its id and what the sink received."""
    mail = tenant_mail(recipient)
    if via == "smtp":
        code, text = smtp_send(pipeline.smtp_port, SENDER, [recipient], mail)
        assert code == 250, text
        message_id = text.decode().split()[1]
    else:
        message_id = grpc_inject(pipeline.inject_address, SENDER, [recipient], mail).id
    [received] = wait_for(lambda: sink.received_for(recipient), timeout=30)
    wait_for(lambda: httpx.get(f"{pipeline.http_url}/api/admin/inspect-message/v1",
                               params={"id": message_id}, timeout=10).status_code == 404,
             timeout=15, message="the message gone from the spool")
    return message_id, received


def test_oob_dsn_and_complaint_days_later(make_pipeline: Any, sink: SmtpSink) -> None:
    pipeline = start(make_pipeline, sink)
    later = datetime.now(UTC) + timedelta(days=3)

    # An asynchronous bounce: accepted at delivery, bounced by the remote system later.
    message_id, received = _delivered(pipeline, sink, "moved@dest.test", "smtp")
    assert received.data.startswith(b"X-Petrel-Ref: ")
    assert parse_verp(received.sender, BOUNCES) is not None
    dsn = make_dsn(header_block(received.data), "moved@dest.test", to=received.sender,
                   when=later, status="5.1.1",
                   reply="550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown")
    code, text = smtp_send(pipeline.smtp_port, "", [received.sender], dsn)
    assert (code, text) == (250, b"2.0.0 Report received")
    [oob] = wait_for(lambda: pipeline.events_of("OOB"), timeout=10)
    assert (oob["id"], oob["sender"], oob["recipient"]) == (message_id, SENDER,
                                                            "moved@dest.test")
    assert (oob["tenant"], oob["campaign"], oob["queue"]) == (
        "acme", "spring", "spring:acme@dest.test")
    assert oob["bounce_classification"] == "InvalidRecipient"
    assert oob["response"]["code"] == 550

    # A complaint about a message injected over gRPC.
    complained_id, received = _delivered(pipeline, sink, "complainer@dest.test", "grpc")
    arf = make_arf(received.data, "complainer@dest.test", to=FEEDBACK, when=later)
    assert smtp_send(pipeline.smtp_port, "", [FEEDBACK], arf)[0] == 250
    [feedback] = wait_for(lambda: pipeline.events_of("Feedback"), timeout=10)
    assert (feedback["id"], feedback["tenant"], feedback["campaign"]) == (
        complained_id, "acme", "spring")
    assert feedback["feedback_report"]["feedback_type"] == "abuse"

    listed = {e["address"]: e for e in suppressions(pipeline, "acme")}
    assert (listed["moved@dest.test"]["source"], listed["moved@dest.test"]["message_id"]) == (
        "bounce", message_id)
    assert (listed["complainer@dest.test"]["source"], listed["complainer@dest.test"]["reason"]
            ) == ("complaint", "abuse")
    # Neither report was queued for delivery.
    assert not sink.received_for(received.sender) and not sink.received_for(FEEDBACK)
    code, _ = smtp_send(pipeline.smtp_port, SENDER, ["complainer@dest.test"],
                        tenant_mail("complainer@dest.test"))
    assert code == 550
