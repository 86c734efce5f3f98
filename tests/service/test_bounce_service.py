"""bounce service in-process: ClassifyReplies over a real gRPC server on a free port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bounce.classifier import ReplyClassifier
from bounce.main import serve
from bounce.server import MAX_REPLIES, SERVICE_NAME, BounceServicer
from petrel.config import load_config
from petrel.rpc import create_channel, create_server, set_serving
from petrel.v1 import bounce_pb2, bounce_pb2_grpc, common_pb2
from tests.support.net import async_wait_for, free_port, port_open

DEADLINE = 5.0


@pytest.fixture
async def stub() -> AsyncIterator[bounce_pb2_grpc.BounceServiceStub]:
    classifier = ReplyClassifier.from_files()
    server, health_servicer, port = create_server("127.0.0.1:0", [
        (bounce_pb2_grpc.add_BounceServiceServicer_to_server, BounceServicer(classifier),
         SERVICE_NAME)])
    await server.start()
    await set_serving(health_servicer, [SERVICE_NAME], True)
    channel = create_channel(f"127.0.0.1:{port}")
    try:
        yield bounce_pb2_grpc.BounceServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(None)


def _reply(code: int, enhanced: str, text: str) -> common_pb2.SmtpReply:
    return common_pb2.SmtpReply(code=code, enhanced_code=enhanced, text=text)


async def test_classify_replies_in_request_order(
        stub: bounce_pb2_grpc.BounceServiceStub) -> None:
    request = bounce_pb2.ClassifyRepliesRequest(replies=[
        _reply(550, "5.1.1", "No such user"),
        _reply(452, "4.2.2", "Mailbox full"),
        _reply(451, "4.3.0", "try later"),
        _reply(554, "5.9.9", "Frobnication refused"),
        _reply(550, "", "Requested action not taken: mailbox unavailable"),
    ])
    response = await stub.ClassifyReplies(request, timeout=DEADLINE)
    assert [c.category for c in response.classifications] == [
        "InvalidRecipient", "QuotaIssues", "TransientFailure", "Uncategorized",
        "InvalidRecipient"]
    assert [c.status for c in response.classifications] == [
        "5.1.1", "4.2.2", "4.3.0", "5.9.9", "5.1.1"]
    assert response.classifications[0].rule.startswith("petrel.toml: rules.InvalidRecipient[")
    assert response.classifications[3].rule == ""


async def test_large_batches_are_classified(stub: bounce_pb2_grpc.BounceServiceStub) -> None:
    replies = [_reply(550, "5.1.1", f"user{i} unknown") for i in range(500)]
    response = await stub.ClassifyReplies(bounce_pb2.ClassifyRepliesRequest(replies=replies),
                                          timeout=DEADLINE)
    assert len(response.classifications) == 500
    assert {c.category for c in response.classifications} == {"InvalidRecipient"}


async def test_too_many_replies_is_invalid_argument(
        stub: bounce_pb2_grpc.BounceServiceStub) -> None:
    replies = [_reply(550, "", "x")] * (MAX_REPLIES + 1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ClassifyReplies(bounce_pb2.ClassifyRepliesRequest(replies=replies),
                                   timeout=DEADLINE)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "replies" in (info.value.details() or "")


async def test_serve_uses_configured_rules_and_reports_health(tmp_path: Path) -> None:
    rules = tmp_path / "mine.toml"
    rules.write_text('[rules]\nOurOwn = ["^550 .*frobnicat"]\n')
    port = free_port()
    config = load_config(env={}, overrides={"data_dir": str(tmp_path), "bounce": {
        "listen": f"127.0.0.1:{port}", "rules_files": [str(rules)]}})
    stop = asyncio.Event()
    task = asyncio.create_task(serve(config, stop))
    await async_wait_for(lambda: port_open(port), message="bounce listening")
    channel = create_channel(f"127.0.0.1:{port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        status = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                                    timeout=DEADLINE)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        stub = bounce_pb2_grpc.BounceServiceStub(channel)
        response = await stub.ClassifyReplies(bounce_pb2.ClassifyRepliesRequest(
            replies=[_reply(550, "5.1.1", "frobnication of user unknown")]), timeout=DEADLINE)
        assert response.classifications[0].category == "OurOwn"
    finally:
        await channel.close()
        stop.set()
        await asyncio.wait_for(task, 10)


KUMOMTA = Path(__file__).parents[1] / "data" / "bounces" / "kumomta"


async def test_classify_message_dsn(stub: bounce_pb2_grpc.BounceServiceStub) -> None:
    raw = (KUMOMTA / "dsn_2.eml").read_bytes()
    response = await stub.ClassifyMessage(bounce_pb2.ClassifyMessageRequest(message=raw),
                                          timeout=DEADLINE)
    assert response.kind == bounce_pb2.MESSAGE_KIND_DSN
    assert [(r.address, r.status, r.action) for r in response.recipients] == [
        ("arathib@vnet.ibm.com", "5.0.0", "failed"),
        ("johnh@hpnjld.njd.hp.com", "4.0.0", "delayed"),
        ("wsnell@sdcc13.ucsd.edu", "5.0.0", "failed")]
    assert response.recipients[2].category == "InvalidRecipient"
    assert response.reporting_mta == "cs.utk.edu"


async def test_classify_message_feedback_report(
        stub: bounce_pb2_grpc.BounceServiceStub) -> None:
    raw = (KUMOMTA / "arf_4.eml").read_bytes()
    response = await stub.ClassifyMessage(bounce_pb2.ClassifyMessageRequest(message=raw),
                                          timeout=DEADLINE)
    assert response.kind == bounce_pb2.MESSAGE_KIND_ARF
    assert response.category == "FeedbackReport"
    assert response.feedback.feedback_type == "abuse"
    assert list(response.feedback.original_rcpt_to) == [
        "cb4a01a48251d4765f489076aa81e2a4@comcast.net"]
    assert response.feedback.original_mail_from == "foo@bounce.example.com"


async def test_classify_message_not_a_bounce(stub: bounce_pb2_grpc.BounceServiceStub) -> None:
    raw = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: lunch?\r\n\r\nNoon?\r\n"
    response = await stub.ClassifyMessage(bounce_pb2.ClassifyMessageRequest(message=raw),
                                          timeout=DEADLINE)
    assert (response.kind, response.category, len(response.recipients)) == (
        bounce_pb2.MESSAGE_KIND_NOT_BOUNCE, "NotBounce", 0)


async def test_classify_message_empty_is_invalid_argument(
        stub: bounce_pb2_grpc.BounceServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ClassifyMessage(bounce_pb2.ClassifyMessageRequest(), timeout=DEADLINE)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
