"""ESMTP reception against a real spool process: policy replies, strict DATA, byte-exact
storage with our stamps, Reception events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from ingress.main import Ingress
from ingress.message import split_headers
from petrel import smtp_replies
from petrel.events import read_events
from petrel.smtp_replies import parse_reply
from petrel.v1 import common_pb2
from tests.service.test_ingress_harness import (
    RawSmtp,
    SpoolProcess,
    ingress_config,
    running_ingress,
    smtp_port,
    spool_count,
    spool_message,
)

MAX_SIZE = 4096
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
async def ingress(tmp_path: Path, spool: SpoolProcess) -> AsyncIterator[Ingress]:
    config = ingress_config(tmp_path, spool.address, relay_networks=["127.0.0.1/32"],
                            max_message_size=MAX_SIZE, max_recipients=3)
    async with running_ingress(config) as running:
        yield running


async def test_ehlo_advertises_extensions(ingress: Ingress) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port(ingress),
                               start_tls=False) as client:
        await client.ehlo()
        extensions = client.esmtp_extensions
    assert extensions["size"] == str(MAX_SIZE)
    for name in ("8bitmime", "pipelining", "enhancedstatuscodes", "smtputf8"):
        assert name in extensions
    assert "starttls" not in extensions
    assert "auth" not in extensions


async def test_accepted_message_is_stored_byte_exact_with_our_headers(
        ingress: Ingress, spool: SpoolProcess) -> None:
    original = (b"From: Sender <sender@example.com>\r\nTo: rcpt@example.net\r\n"
                b"X-Tenant: acme\r\nSubject: hello\r\nX-Campaign: spring\r\n"
                b"Traceparent: " + PARENT.encode() + b"\r\n\r\n"
                b"caf\xc3\xa9 8-bit body\r\n..leading dot\r\n")
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port(ingress),
                               start_tls=False) as client:
        _, message = await client.sendmail("sender@example.com",
                                           ["rcpt@example.net", "two@example.org"], original)
    reply = parse_reply(f"250 {message}")
    assert reply.enhanced_code == "2.0.0"
    message_id = reply.text.split()[0]
    assert f"250 {message}" == smtp_replies.queued(message_id)

    stored = await spool_message(spool.address, message_id)
    assert stored is not None
    fields, _ = split_headers(stored.body)
    assert fields[0].key == "received"
    assert f"with ESMTP id {message_id}" in fields[0].value
    assert fields[1].raw == f"Message-ID: <{message_id}@ingress.petrel.test>\r\n".encode()
    rest = stored.body[len(fields[0].raw) + len(fields[1].raw):]
    expected = original.replace(b"X-Tenant: acme\r\n", b"").replace(b"X-Campaign: spring\r\n",
                                                                    b"")
    # aiosmtplib dot-stuffs ".." to "...", the server unstuffs it: the stored body is exact.
    assert rest == expected

    meta = stored.meta
    assert (meta.id, meta.sender, meta.tenant, meta.campaign) == (
        message_id, "sender@example.com", "acme", "spring")
    assert [(r.address, r.state) for r in meta.recipients] == [
        ("rcpt@example.net", common_pb2.RECIPIENT_STATE_PENDING),
        ("two@example.org", common_pb2.RECIPIENT_STATE_PENDING)]
    assert meta.size == len(stored.body)
    assert meta.reception_protocol == "ESMTP"
    assert meta.peer_address == "127.0.0.1"
    assert meta.trace_context["traceparent"] == PARENT
    assert meta.created_unix_ms > 0

    events = [e for e in read_events(spool.data_dir / "events") if e["id"] == message_id]
    assert sorted(e["recipient"] for e in events) == ["rcpt@example.net", "two@example.org"]
    assert {e["type"] for e in events} == {"Reception"}
    assert events[0]["trace_id"] == PARENT.split("-")[1]
    assert events[0]["tenant"] == "acme"
    assert {e["queue"] for e in events} == {"spring:acme@example.net", "spring:acme@example.org"}


async def test_relay_denied_outside_relay_networks(ingress: Ingress, spool: SpoolProcess) -> None:
    client = await RawSmtp.connect(smtp_port(ingress), source="127.0.0.2")
    try:
        assert (await client.reply()).startswith("220 ")
        assert (await client.command("EHLO outside.test")).startswith("250")
        assert await client.command("MAIL FROM:<a@example.com>") == smtp_replies.SENDER_OK
        assert await client.command("RCPT TO:<b@example.net>") == smtp_replies.RELAY_DENIED
        assert (await client.command("DATA")).startswith("503 5.5.1")
    finally:
        await client.close()


async def test_null_sender_and_malformed_addresses(raw: RawSmtp) -> None:
    assert await raw.command("MAIL FROM:<nodomain>") == smtp_replies.BAD_SENDER_SYNTAX
    assert await raw.command("MAIL FROM:<a@@b>") == smtp_replies.BAD_SENDER_SYNTAX
    assert await raw.command("MAIL FROM:<>") == smtp_replies.SENDER_OK
    assert await raw.command("RCPT TO:<a..b@example.com>") == smtp_replies.BAD_RECIPIENT_SYNTAX
    assert await raw.command("RCPT TO:<x@[999.1.1.1]>") == smtp_replies.BAD_RECIPIENT_SYNTAX
    assert await raw.command("RCPT TO:<ok@example.com>") == smtp_replies.RECIPIENT_OK
    assert (await raw.command("MAIL FROM:<a@example.com>")).startswith("503 5.5.1")
    assert (await raw.command("BOGUS")).startswith("500 5.5.2")
    assert (await raw.command("MAIL TO:<x@y.z>")).startswith("501 5.5.4")
    assert await raw.command("NOOP") == "250 2.0.0 OK"


async def test_size_refused_at_mail_and_at_data(raw: RawSmtp, spool: SpoolProcess) -> None:
    before = await spool_count(spool.address)
    assert await raw.command(f"MAIL FROM:<a@example.com> SIZE={MAX_SIZE + 1}") == \
        smtp_replies.TOO_BIG
    assert await raw.command("MAIL FROM:<a@example.com> SIZE=100") == smtp_replies.SENDER_OK
    assert await raw.command("RCPT TO:<b@example.net>") == smtp_replies.RECIPIENT_OK
    assert (await raw.command("DATA")).startswith("354")
    body = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * (MAX_SIZE // 70 + 1)
    await raw.send(body + b".\r\n")
    assert await raw.reply() == smtp_replies.TOO_BIG
    assert await raw.command("NOOP") == "250 2.0.0 OK"
    assert await spool_count(spool.address) == before


async def test_recipient_limit(raw: RawSmtp) -> None:
    assert await raw.command("MAIL FROM:<a@example.com>") == smtp_replies.SENDER_OK
    for n in range(3):
        assert await raw.command(f"RCPT TO:<r{n}@example.net>") == smtp_replies.RECIPIENT_OK
    assert await raw.command("RCPT TO:<r3@example.net>") == smtp_replies.TOO_MANY_RECIPIENTS


async def test_bare_lf_dot_does_not_end_data_and_bare_line_endings_are_refused(
        ingress: Ingress, raw: RawSmtp, spool: SpoolProcess) -> None:
    before = await spool_count(spool.address)
    assert await raw.command("MAIL FROM:<a@example.com>") == smtp_replies.SENDER_OK
    assert await raw.command("RCPT TO:<b@example.net>") == smtp_replies.RECIPIENT_OK
    assert (await raw.command("DATA")).startswith("354")
    # Were "\n.\n" an end of data, MAIL would be a command answered "250 2.1.0" before the
    # reply to the real end of data.
    await raw.send(b"Subject: smuggle\r\n\r\nline\n.\nMAIL FROM:<evil@example.com>\r\n.\r\n")
    assert await raw.reply() == smtp_replies.BARE_LINE_ENDING
    assert await raw.command("NOOP") == "250 2.0.0 OK"

    for data in (b"Subject: cr\r\n\r\nbare\rcr\r\n", b"Subject: lf\nX: y\r\n\r\nbody\r\n"):
        assert await raw.command("MAIL FROM:<a@example.com>") == smtp_replies.SENDER_OK
        assert await raw.command("RCPT TO:<b@example.net>") == smtp_replies.RECIPIENT_OK
        assert (await raw.command("DATA")).startswith("354")
        await raw.send(data + b".\r\n")
        assert await raw.reply() == smtp_replies.BARE_LINE_ENDING
    assert await spool_count(spool.address) == before

    fresh = await RawSmtp.connect(smtp_port(ingress))
    try:
        assert (await fresh.reply()).startswith("220 ingress.petrel.test")
    finally:
        await fresh.close()


async def test_pipelined_transaction(raw: RawSmtp, spool: SpoolProcess) -> None:
    await raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n"
                   b"RCPT TO:<bad@>\r\nDATA\r\n")
    assert await raw.reply() == smtp_replies.SENDER_OK
    assert await raw.reply() == smtp_replies.RECIPIENT_OK
    assert await raw.reply() == smtp_replies.BAD_RECIPIENT_SYNTAX
    assert (await raw.reply()).startswith("354")
    await raw.send(b"Subject: piped\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    reply = parse_reply(await raw.reply())
    assert reply.code == 250
    assert await raw.reply() == "221 2.0.0 Bye"
    stored = await spool_message(spool.address, reply.text.split()[0])
    assert stored is not None
    assert [r.address for r in stored.meta.recipients] == ["b@example.net"]
    assert stored.body.endswith(b"Subject: piped\r\n\r\nhi\r\n")
