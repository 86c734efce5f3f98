"""Suppression at reception, against a real spool process and a real in-process bounce
service (SuppressionService over RocksDB): refusals at RCPT, after DATA and on inject, with
Rejection records; removals honoured after the cache TTL; fail open without the service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ingress import metrics
from ingress.main import Ingress
from petrel import smtp_replies
from petrel.config import Config
from petrel.events import read_events
from petrel.rpc import create_channel
from petrel.v1 import ingress_pb2, ingress_pb2_grpc, suppression_pb2
from tests.service.test_ingress_harness import (
    RawSmtp,
    SpoolProcess,
    SuppressionPeer,
    ingress_config,
    running_ingress,
    smtp_port,
    spool_message,
)
from tests.support.net import async_wait_for, free_port

DEADLINE = 5.0
SENDER = "sender@example.com"


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[SuppressionPeer]:
    running = await SuppressionPeer(tmp_path / "suppression").start()
    yield running
    await running.stop()


def config_for(tmp_path: Path, spool: SpoolProcess, bounce_address: str,
               **ingress: Any) -> Config:
    config = ingress_config(tmp_path, spool.address, relay_networks=["127.0.0.1/32"],
                            suppression_cache_ttl=0.3, **ingress)
    return config.model_copy(update={"bounce": config.bounce.model_copy(
        update={"address": bounce_address})})


@pytest.fixture
async def ingress(tmp_path: Path, spool: SpoolProcess,
                  service: SuppressionPeer) -> AsyncIterator[Ingress]:
    async with running_ingress(config_for(tmp_path, spool, service.address)) as running:
        yield running


async def session(ingress: Ingress) -> RawSmtp:
    client = await RawSmtp.connect(smtp_port(ingress))
    assert (await client.reply()).startswith("220")
    assert (await client.command("EHLO client.test")).startswith("250")
    return client


async def send_data(client: RawSmtp, content: bytes) -> str:
    assert (await client.command("DATA")).startswith("354")
    await client.send(content + b".\r\n")
    return await client.reply()


def rejections(ingress: Ingress) -> list[dict[str, Any]]:
    return [e for e in read_events(ingress.config.events_dir) if e["type"] == "Rejection"]


async def test_global_entry_refused_at_rcpt_with_a_rejection(ingress: Ingress,
                                                             service: SuppressionPeer) -> None:
    await service.add("Dead@Example.net", reason="do not mail",
                      source=suppression_pb2.SUPPRESSION_SOURCE_MANUAL)
    client = await session(ingress)
    try:
        assert await client.command(f"MAIL FROM:<{SENDER}>") == smtp_replies.SENDER_OK
        reply = await client.command("RCPT TO:<dead@example.net>")
        assert reply == "550 5.7.1 Recipient suppressed (global: manual do not mail)"
        assert await client.command("RCPT TO:<alive@example.net>") == smtp_replies.RECIPIENT_OK
        assert (await send_data(client, b"Subject: s\r\n\r\nb\r\n")).startswith("250 2.0.0")
    finally:
        await client.close()
    [rejection] = rejections(ingress)
    assert rejection["recipient"] == "dead@example.net" and rejection["id"] == ""
    assert rejection["sender"] == SENDER and rejection["tenant"] is None
    assert rejection["response"]["code"] == 550
    assert rejection["response"]["content"] == "Recipient suppressed (global: manual do not mail)"
    assert rejection["suppression"]["source"] == "manual"


async def test_tenant_entry_checked_after_data(ingress: Ingress, service: SuppressionPeer,
                                               spool: SpoolProcess) -> None:
    await service.add("gone@example.net", tenant="acme")
    client = await session(ingress)
    try:
        # Alone: the whole message is refused once X-Tenant is known.
        assert await client.command(f"MAIL FROM:<{SENDER}>") == smtp_replies.SENDER_OK
        assert await client.command("RCPT TO:<gone@example.net>") == smtp_replies.RECIPIENT_OK
        content = b"X-Tenant: acme\r\nX-Campaign: c1\r\nSubject: s\r\n\r\nb\r\n"
        assert await send_data(client, content) == \
            "550 5.7.1 Recipient suppressed (tenant acme: bounce InvalidRecipient)"
        # With another recipient: the others are accepted.
        assert await client.command(f"MAIL FROM:<{SENDER}>") == smtp_replies.SENDER_OK
        assert await client.command("RCPT TO:<gone@example.net>") == smtp_replies.RECIPIENT_OK
        assert await client.command("RCPT TO:<ok@example.net>") == smtp_replies.RECIPIENT_OK
        reply = await send_data(client, content)
        # Another tenant's mail to the same address goes through.
        assert await client.command(f"MAIL FROM:<{SENDER}>") == smtp_replies.SENDER_OK
        assert await client.command("RCPT TO:<gone@example.net>") == smtp_replies.RECIPIENT_OK
        other = await send_data(client, content.replace(b"acme", b"beta"))
    finally:
        await client.close()
    assert reply.startswith("250 2.0.0") and other.startswith("250 2.0.0")
    stored = await spool_message(spool.address, reply.split()[2])
    assert stored is not None
    assert [r.address for r in stored.meta.recipients] == ["ok@example.net"]
    found = rejections(ingress)
    assert [(e["recipient"], e["tenant"], e["campaign"], e["queue"]) for e in found] == [
        ("gone@example.net", "acme", "c1", "c1:acme@example.net")] * 2


async def test_inject_fails_precondition_and_removal_is_honoured(
        ingress: Ingress, service: SuppressionPeer) -> None:
    await service.add("gone@example.net", tenant="acme")
    request = ingress_pb2.InjectMessageRequest(
        sender=SENDER, recipients=["ok@example.net", "GONE@example.net"], tenant="acme",
        content=b"Subject: s\r\n\r\nb\r\n")
    async with create_channel(ingress.grpc_address) as channel:
        stub = ingress_pb2_grpc.InjectServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.InjectMessage(request, timeout=DEADLINE)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert info.value.details() == ("recipients[1]: GONE@example.net suppressed "
                                        "(tenant acme: bounce InvalidRecipient)")
        assert ("petrel-field", "recipients[1]") in tuple(info.value.trailing_metadata() or ())
        request.seq = 7
        [streamed] = [r async for r in stub.InjectMessages(iter([request]), timeout=DEADLINE)]
        assert streamed.status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert streamed.status.field == "recipients[1]" and not streamed.id

        await service.remove("gone@example.net", tenant="acme")

        async def accepted() -> bool:
            try:
                await stub.InjectMessage(request, timeout=DEADLINE)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
                return False
            return True

        await async_wait_for(accepted, timeout=5, message="accepted after the removal")
    assert rejections(ingress)[0]["reception_protocol"] == "GRPC"


async def test_fails_open_without_the_list(tmp_path: Path, spool: SpoolProcess) -> None:
    before = metrics.SUPPRESSION_CHECK_FAILURES.labels("unavailable")._value.get()
    config = config_for(tmp_path, spool, f"127.0.0.1:{free_port()}")
    async with running_ingress(config) as running:
        client = await session(running)
        try:
            assert await client.command(f"MAIL FROM:<{SENDER}>") == smtp_replies.SENDER_OK
            assert await client.command("RCPT TO:<a@example.net>") == smtp_replies.RECIPIENT_OK
            assert (await send_data(client, b"Subject: s\r\n\r\nb\r\n")).startswith("250")
        finally:
            await client.close()
    assert metrics.SUPPRESSION_CHECK_FAILURES.labels("unavailable")._value.get() > before
