"""Resource limits against a running ingress and a real spool, one test per limit; each
asserts the reply and that a new client is still greeted afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ingress.main import Ingress
from petrel import smtp_replies
from petrel.smtp_replies import parse_reply
from tests.service.test_ingress_hardening_harness import (
    assert_closed,
    assert_greets,
    make_certificate,
)
from tests.service.test_ingress_harness import (
    RawSmtp,
    SpoolProcess,
    ingress_config,
    running_ingress,
    smtp_port,
    spool_count,
)
from tests.support.net import async_wait_for

OK = "250 2.0.0 OK"
MESSAGE = b"Subject: limits\r\n\r\nbody\r\n.\r\n"


@contextlib.asynccontextmanager
async def ingress_with(tmp_path: Path, spool: SpoolProcess, **settings: Any
                       ) -> AsyncIterator[Ingress]:
    config = ingress_config(tmp_path, spool.address, relay_networks=["127.0.0.1/32"],
                            greeting_pause=0, **settings)
    async with running_ingress(config) as running:
        yield running


async def greeted(port: int, source: str = "127.0.0.1") -> RawSmtp:
    client = await RawSmtp.connect(port, source=source)
    assert (await client.reply()).startswith("220 ")
    return client


async def send_message(client: RawSmtp) -> None:
    assert await client.command("MAIL FROM:<a@example.com>") == smtp_replies.SENDER_OK
    assert await client.command("RCPT TO:<b@example.net>") == smtp_replies.RECIPIENT_OK
    assert (await client.command("DATA")).startswith("354")
    await client.send(MESSAGE)
    assert parse_reply(await client.reply()).code == 250


async def test_total_connection_limit(tmp_path: Path, spool: SpoolProcess) -> None:
    async with ingress_with(tmp_path, spool, max_connections=3) as ingress:
        port = smtp_port(ingress)
        clients = [await greeted(port) for _ in range(3)]
        extra = await RawSmtp.connect(port)
        assert await extra.reply() == smtp_replies.TOO_MANY_CONNECTIONS
        await assert_closed(extra)
        await extra.close()
        await clients.pop().close()
        await async_wait_for(lambda: ingress.smtp.limiter.active < 3, timeout=5)
        await assert_greets(port)
        for client in clients:
            await client.close()


async def test_per_address_connection_limit(tmp_path: Path, spool: SpoolProcess) -> None:
    async with ingress_with(tmp_path, spool, max_connections_per_ip=2) as ingress:
        port = smtp_port(ingress)
        outside = [await greeted(port, "127.0.0.2") for _ in range(2)]
        extra = await RawSmtp.connect(port, source="127.0.0.2")
        assert await extra.reply() == smtp_replies.TOO_MANY_CONNECTIONS_FROM_IP
        await assert_closed(extra)
        await extra.close()
        # Another address, and the relay networks (exempt, as Postfix exempts $mynetworks).
        await assert_greets(port, source="127.0.0.3")
        inside = [await greeted(port) for _ in range(3)]
        for client in outside + inside:
            await client.close()
        await async_wait_for(lambda: ingress.smtp.limiter.active == 0, timeout=5)
        await assert_greets(port, source="127.0.0.2")


async def test_error_limit_closes_the_session(tmp_path: Path, spool: SpoolProcess) -> None:
    async with ingress_with(tmp_path, spool, max_errors=3) as ingress:
        port = smtp_port(ingress)
        client = await greeted(port)
        assert (await client.command("EHLO client.test")).startswith("250")
        # An accepted message starts the count again.
        assert await client.command("MAIL FROM:<bad>") == smtp_replies.BAD_SENDER_SYNTAX
        assert await client.command("MAIL FROM:<bad>") == smtp_replies.BAD_SENDER_SYNTAX
        await send_message(client)
        assert await client.command("MAIL FROM:<bad>") == smtp_replies.BAD_SENDER_SYNTAX
        assert await client.command("BOGUS") == smtp_replies.UNKNOWN_COMMAND
        assert await client.command("RCPT TO:<>") == "503 5.5.1 Error: need MAIL command"
        assert await client.reply() == smtp_replies.TOO_MANY_ERRORS
        await assert_closed(client)
        await client.close()
        await assert_greets(port)


async def test_junk_command_limit_closes_the_session(tmp_path: Path,
                                                     spool: SpoolProcess) -> None:
    async with ingress_with(tmp_path, spool, max_junk_commands=3) as ingress:
        port = smtp_port(ingress)
        client = await greeted(port)
        assert (await client.command("EHLO client.test")).startswith("250")
        for command in ("NOOP", "RSET", "HELP"):
            assert (await client.command(command)).startswith("250")
        await send_message(client)
        for command in ("NOOP", "NOOP", "RSET"):
            assert (await client.command(command)).startswith("250")
        assert await client.command("NOOP") == smtp_replies.TOO_MANY_JUNK_COMMANDS
        await assert_closed(client)
        await client.close()
        await assert_greets(port)


async def test_command_deadline_cuts_off_a_trickling_client(tmp_path: Path,
                                                            spool: SpoolProcess) -> None:
    async with ingress_with(tmp_path, spool, command_timeout=0.6) as ingress:
        port = smtp_port(ingress)
        slow = await greeted(port)
        started = time.monotonic()
        reply: str | None = None
        # One byte every 0.1 s: each byte is progress, but the line never completes in time.
        with contextlib.suppress(ConnectionError):
            for byte in b"EHLO slow.client.test":
                await slow.send(bytes([byte]))
                with contextlib.suppress(TimeoutError):
                    reply = await slow.reply(timeout=0.1)
                    break
        assert reply == smtp_replies.TIMEOUT
        assert 0.5 < time.monotonic() - started < 2.0
        await assert_closed(slow)
        await slow.close()
        await assert_greets(port)


async def test_stalled_tls_handshake_is_cut_off_and_its_slot_freed(
        tmp_path: Path, spool: SpoolProcess) -> None:
    cert, key = make_certificate(tmp_path)
    async with ingress_with(tmp_path, spool, command_timeout=0.5, max_connections=2,
                            tls_certificate=cert, tls_private_key=key) as ingress:
        port = smtp_port(ingress)
        stalled = []
        for _ in range(2):
            client = await greeted(port)
            assert (await client.command("EHLO client.test")).startswith("250")
            assert (await client.command("STARTTLS")).startswith("220 ")
            stalled.append(client)  # and never sends a ClientHello
        extra = await RawSmtp.connect(port)
        assert await extra.reply() == smtp_replies.TOO_MANY_CONNECTIONS
        await extra.close()
        for client in stalled:
            await assert_closed(client, timeout=3)
            await client.close()
        await async_wait_for(lambda: ingress.smtp.limiter.active == 0
                             and not ingress.smtp.connections, timeout=3,
                             message="slots freed")
        await assert_greets(port)


async def test_minimum_data_rate_cuts_off_slowloris_while_others_are_served(
        tmp_path: Path, spool: SpoolProcess) -> None:
    async with ingress_with(tmp_path, spool, command_timeout=1.0, min_data_rate=1000) as ingress:
        port = smtp_port(ingress)
        before = await spool_count(spool.address)
        slow = await greeted(port)
        assert (await slow.command("EHLO slow.test")).startswith("250")
        assert await slow.command("MAIL FROM:<a@example.com>") == smtp_replies.SENDER_OK
        assert await slow.command("RCPT TO:<b@example.net>") == smtp_replies.RECIPIENT_OK
        assert (await slow.command("DATA")).startswith("354")

        async def trickle() -> str:
            # 20 octets every 0.1 s = 200 octets/s, below the 1000 octets/s minimum.
            with contextlib.suppress(ConnectionError):
                while True:
                    await slow.send(b"x" * 18 + b"\r\n")
                    with contextlib.suppress(TimeoutError):
                        return await slow.reply(timeout=0.1)
            return "closed without a reply"

        started = time.monotonic()
        slow_task = asyncio.create_task(trickle())
        # Meanwhile another client is served normally, more than once.
        for _ in range(3):
            other = await greeted(port)
            assert (await other.command("EHLO fast.test")).startswith("250")
            await send_message(other)
            await other.close()
            assert not slow_task.done()
        assert await slow_task == smtp_replies.TIMEOUT
        assert 1.0 < time.monotonic() - started < 3.0
        await slow.close()
        assert await spool_count(spool.address) == before + 3

        # A client above the minimum rate is not cut off even past the timeout.
        steady = await greeted(port)
        assert (await steady.command("EHLO steady.test")).startswith("250")
        assert await steady.command("MAIL FROM:<a@example.com>") == smtp_replies.SENDER_OK
        assert await steady.command("RCPT TO:<b@example.net>") == smtp_replies.RECIPIENT_OK
        assert (await steady.command("DATA")).startswith("354")
        await steady.send(b"Subject: steady\r\n\r\n")
        started = time.monotonic()
        while time.monotonic() - started < 1.6:
            await steady.send(b"y" * 298 + b"\r\n")  # 3000 octets/s
            await asyncio.sleep(0.1)
        await steady.send(b".\r\n")
        assert parse_reply(await steady.reply()).code == 250
        await steady.close()
        await assert_greets(port)


async def test_size_and_recipient_limits(tmp_path: Path, spool: SpoolProcess) -> None:
    async with ingress_with(tmp_path, spool, max_message_size=2048, max_recipients=2) as ingress:
        port = smtp_port(ingress)
        before = await spool_count(spool.address)
        client = await greeted(port)
        assert (await client.command("EHLO client.test")).startswith("250-")
        assert await client.command("MAIL FROM:<a@example.com> SIZE=2049") == \
            smtp_replies.TOO_BIG
        assert await client.command("MAIL FROM:<a@example.com>") == smtp_replies.SENDER_OK
        for n in range(2):
            assert await client.command(f"RCPT TO:<r{n}@example.net>") == \
                smtp_replies.RECIPIENT_OK
        assert await client.command("RCPT TO:<r2@example.net>") == \
            smtp_replies.TOO_MANY_RECIPIENTS
        assert (await client.command("DATA")).startswith("354")
        await client.send(b"Subject: big\r\n\r\n" + b"z" * 98 + b"\r\n" + (b"z" * 98 + b"\r\n") * 25
                          + b".\r\n")
        assert await client.reply() == smtp_replies.TOO_BIG
        assert await client.command("NOOP") == OK
        await client.close()
        assert await spool_count(spool.address) == before
        await assert_greets(port)
