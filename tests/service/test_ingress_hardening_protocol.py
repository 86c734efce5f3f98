"""SMTP protocol strictness against a running ingress and a real spool, one test per rule;
each asserts the reply and that a new client is still greeted afterwards."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ingress.main import Ingress
from ingress.message import split_headers
from petrel import smtp_replies
from petrel.smtp_replies import parse_reply
from tests.service.test_ingress_hardening_harness import (
    assert_closed,
    assert_greets,
)
from tests.service.test_ingress_harness import (
    RawSmtp,
    SpoolProcess,
    ingress_config,
    running_ingress,
    smtp_port,
    spool_count,
    spool_message,
)
from tests.support.net import async_wait_for

OK = "250 2.0.0 OK"
SMUGGLED = (b"MAIL FROM:<smuggler@example.com>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled\r\n")


@pytest.fixture
async def ingress(tmp_path: Path, spool: SpoolProcess,
                  certificate: tuple[str, str]) -> AsyncIterator[Ingress]:
    config = ingress_config(tmp_path, spool.address, relay_networks=["127.0.0.1/32"],
                            tls_certificate=certificate[0], tls_private_key=certificate[1],
                            greeting_pause=0.3, max_errors=100)
    async with running_ingress(config) as running:
        yield running


async def start_data(client: RawSmtp) -> None:
    assert await client.command("MAIL FROM:<a@example.com>") == smtp_replies.SENDER_OK
    assert await client.command("RCPT TO:<b@example.net>") == smtp_replies.RECIPIENT_OK
    assert (await client.command("DATA")).startswith("354")


@pytest.mark.parametrize("fake_end", [
    b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r.\n", b"\n.\r", b"\r.\r",
    b"\r\n.\r\r\n", b"\n\r.\r\n",
])
async def test_only_crlf_dot_crlf_ends_data(ingress: Ingress, raw: RawSmtp, spool: SpoolProcess,
                                            fake_end: bytes) -> None:
    before = await spool_count(spool.address)
    await start_data(raw)
    await raw.send(b"Subject: first\r\n\r\nbody" + fake_end + SMUGGLED + b".\r\n")
    # One reply for the whole stream: the smuggled commands were data, and refused with it.
    assert await raw.reply() == smtp_replies.BARE_LINE_ENDING
    assert await raw.command("NOOP") == OK
    assert await raw.command("RCPT TO:<b@example.net>") == "503 5.5.1 Error: need MAIL command"
    assert await spool_count(spool.address) == before
    await assert_greets(smtp_port(ingress))


async def test_bare_cr_or_lf_in_data_refused(ingress: Ingress, raw: RawSmtp,
                                             spool: SpoolProcess) -> None:
    before = await spool_count(spool.address)
    for data in (b"Subject: cr\r\n\r\nbare\rcr\r\n", b"Subject: lf\nX: y\r\n\r\nbody\r\n",
                 b"Subject: trailing\r\n\r\nbody\r\r\n"):
        await start_data(raw)
        await raw.send(data + b".\r\n")
        assert await raw.reply() == smtp_replies.BARE_LINE_ENDING
    assert await spool_count(spool.address) == before
    await assert_greets(smtp_port(ingress))


async def test_bare_cr_or_lf_in_command_refused(ingress: Ingress, raw: RawSmtp) -> None:
    assert await raw.command("NOOP") == OK
    await raw.send(b"MAIL FROM:<a@example.com>\n")
    assert await raw.reply() == smtp_replies.BARE_LINE_ENDING_COMMAND
    await raw.send(b"MAIL FROM:<a@example.com>\rRCPT TO:<b@example.net>\r\n")
    assert await raw.reply() == smtp_replies.BARE_LINE_ENDING_COMMAND
    # Neither MAIL ran.
    assert await raw.command("RCPT TO:<b@example.net>") == "503 5.5.1 Error: need MAIL command"
    await assert_greets(smtp_port(ingress))


async def test_commands_pipelined_after_starttls_are_discarded(ingress: Ingress) -> None:
    client = await RawSmtp.connect(smtp_port(ingress))
    try:
        assert (await client.reply()).startswith("220 ")
        assert "STARTTLS" in await client.command("EHLO client.test")
        await client.send(b"STARTTLS\r\nMAIL FROM:<injected@example.com>\r\n")
        assert (await client.reply()).startswith("220 ")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        await client.writer.start_tls(context)
        # The first reply over TLS answers EHLO: the plaintext MAIL was never executed.
        ehlo = await client.command("EHLO client.test")
        assert ehlo.startswith("250-ingress.petrel.test"), ehlo
        assert await client.command("RCPT TO:<b@example.net>") == \
            "503 5.5.1 Error: need MAIL command"
    finally:
        await client.close()
    await assert_greets(smtp_port(ingress))


async def test_failed_tls_handshake_closes_quietly(ingress: Ingress,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    client = await RawSmtp.connect(smtp_port(ingress))
    try:
        assert (await client.reply()).startswith("220 ")
        assert (await client.command("EHLO client.test")).startswith("250")
        assert (await client.command("STARTTLS")).startswith("220 ")
        await client.send(b"MAIL FROM:<not-a-handshake@example.com>\r\n" * 50)
        await assert_closed(client)
    finally:
        await client.close()
    await async_wait_for(lambda: ingress.smtp.limiter.active == 0, timeout=5,
                         message="session released")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await assert_greets(smtp_port(ingress))


async def test_content_before_354_is_refused(ingress: Ingress, raw: RawSmtp,
                                             spool: SpoolProcess) -> None:
    before = await spool_count(spool.address)
    assert await raw.command("MAIL FROM:<a@example.com>") == smtp_replies.SENDER_OK
    assert await raw.command("RCPT TO:<b@example.net>") == smtp_replies.RECIPIENT_OK
    await raw.send(b"DATA\r\nSubject: early\r\n\r\nbody\r\n.\r\n")
    assert await raw.reply() == smtp_replies.SYNC_ERROR
    await assert_closed(raw)
    assert await spool_count(spool.address) == before
    await assert_greets(smtp_port(ingress))


async def test_early_talker_and_unauthorised_pipelining_are_refused(ingress: Ingress) -> None:
    port = smtp_port(ingress)
    early = await RawSmtp.connect(port, source="127.0.0.2")
    try:
        await early.send(b"EHLO early.test\r\n")  # before the greeting (paused 0.3 s)
        assert await early.reply() == smtp_replies.SYNC_ERROR
        await assert_closed(early)
    finally:
        await early.close()

    for opening in (b"EHLO client.test\r\nMAIL FROM:<a@example.com>\r\n",
                    b"HELO client.test\r\n"):
        client = await RawSmtp.connect(port)
        try:
            assert (await client.reply()).startswith("220 ")
            await client.send(opening)
            if opening.startswith(b"HELO"):
                assert await client.reply() == "250 ingress.petrel.test"
                # HELO did not announce PIPELINING: two commands at once break the rules.
                await client.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n")
            assert await client.reply() == smtp_replies.SYNC_ERROR
            await assert_closed(client)
        finally:
            await client.close()
    # A patient client outside the relay networks gets its greeting after the pause.
    await assert_greets(port, source="127.0.0.2")


async def test_long_command_and_text_lines_are_refused(ingress: Ingress, raw: RawSmtp,
                                                       spool: SpoolProcess) -> None:
    # 512 octets with CRLF is the limit (RFC 5321 4.5.3.1.4).
    assert await raw.command("NOOP " + "x" * (512 - 7)) == OK
    assert await raw.command("NOOP " + "x" * (512 - 6)) == smtp_replies.COMMAND_TOO_LONG
    assert await raw.command("NOOP " + "x" * 5000) == smtp_replies.COMMAND_TOO_LONG
    sender = "s" * 60 + "@" + ".".join(["d" * 60] * 3) + ".example"
    mail = f"MAIL FROM:<{sender}> SIZE=1000 BODY=8BITMIME SMTPUTF8"
    assert await raw.command(mail) == smtp_replies.SENDER_OK
    assert await raw.command("RSET") == OK

    before = await spool_count(spool.address)
    await start_data(raw)
    await raw.send(b"Subject: long\r\n\r\n" + b"y" * 999 + b"\r\n.\r\n")
    assert await raw.reply() == smtp_replies.LINE_TOO_LONG
    await start_data(raw)
    await raw.send(b"Subject: long\r\n\r\n" + b"y" * 200_000 + b"\r\n.\r\n")
    assert await raw.reply() == smtp_replies.LINE_TOO_LONG
    assert await spool_count(spool.address) == before
    await start_data(raw)
    await raw.send(b"Subject: fits\r\n\r\n" + b"y" * 998 + b"\r\n" + b"." + b"z" * 998 + b"\r\n"
                   + b".\r\n")
    assert parse_reply(await raw.reply()).code == 250
    await assert_greets(smtp_port(ingress))


async def test_long_auth_response_is_refused_and_the_session_stays_in_step(
        tmp_path: Path, spool: SpoolProcess) -> None:
    config = ingress_config(tmp_path, spool.address, auth_users={"alice": "s3cret"},
                            auth_require_tls=False)
    async with running_ingress(config) as running:
        client = await RawSmtp.connect(smtp_port(running))
        try:
            assert (await client.reply()).startswith("220 ")
            assert "AUTH PLAIN LOGIN" in await client.command("EHLO client.test")
            for response in (b"QUxJQ0U=" * 300, b"QUxJQ0U=" * 70):  # > 1000 and > 512 octets
                assert (await client.command("AUTH LOGIN")).startswith("334 ")
                await client.send(response + b"\r\n")
                assert await client.reply() == smtp_replies.COMMAND_TOO_LONG
                assert await client.command("NOOP") == OK
        finally:
            await client.close()
        await assert_greets(smtp_port(running))


async def test_nul_and_control_bytes_are_refused_without_echo(ingress: Ingress, raw: RawSmtp,
                                                              spool: SpoolProcess) -> None:
    for line in (b"NOOP \x00secret\r\n", b"EHLO se\x1bcret.test\r\n",
                 b"MAIL FROM:<a\x07@b.test>\r\n", b"\x7fsecret\r\n", b"NOOP\tsecret\r\n"):
        await raw.send(line)
        reply = await raw.reply()
        assert reply == smtp_replies.INVALID_CHARACTER, line
    await raw.send(b"SECRETVERB\r\n")
    assert await raw.reply() == smtp_replies.UNKNOWN_COMMAND
    before = await spool_count(spool.address)
    await start_data(raw)
    await raw.send(b"Subject: nul\r\n\r\nnul\x00here\r\n.\r\n")
    assert await raw.reply() == smtp_replies.NUL_IN_DATA
    assert await spool_count(spool.address) == before
    await assert_greets(smtp_port(ingress))


@pytest.mark.parametrize(("command", "reply"), [
    ("RCPT TO:<>", smtp_replies.BAD_RECIPIENT_SYNTAX),
    ("RCPT TO:<b@example.net", smtp_replies.BAD_RECIPIENT_SYNTAX),
    ("RCPT TO:b@example.net", smtp_replies.BAD_RECIPIENT_SYNTAX),
    ("RCPT TO:<b@example.net>junk", smtp_replies.BAD_RECIPIENT_SYNTAX),
    ("RCPT TO:<@relay.example,@other.example:b@example.net>", smtp_replies.BAD_RECIPIENT_SYNTAX),
    ("RCPT TO:<@relay.example:b@example.net>", smtp_replies.BAD_RECIPIENT_SYNTAX),
    ("RCPT TO:<b%other.example@example.net>", smtp_replies.BAD_RECIPIENT_SYNTAX),
    ("RCPT TO:<other.example!b@example.net>", smtp_replies.BAD_RECIPIENT_SYNTAX),
    ('RCPT TO:<"b@other.example"@example.net>', smtp_replies.BAD_RECIPIENT_SYNTAX),
    ('RCPT TO:<"b%other.example"@example.net>', smtp_replies.BAD_RECIPIENT_SYNTAX),
    ("RCPT TO:<b (comment)@example.net>", smtp_replies.BAD_RECIPIENT_SYNTAX),
    ("RCPT TO:<b@example.net.>", smtp_replies.BAD_RECIPIENT_SYNTAX),
    ("RCPT TO:<Postmaster>", smtp_replies.BAD_RECIPIENT_SYNTAX),
])
async def test_malformed_paths_are_refused(ingress: Ingress, raw: RawSmtp, command: str,
                                           reply: str) -> None:
    for bad_sender in ("MAIL FROM:a@example.com", "MAIL FROM:<a@example.com",
                       "MAIL FROM:<@x.example:a@example.com>", "MAIL FROM:<a!b@example.com>"):
        assert await raw.command(bad_sender) == smtp_replies.BAD_SENDER_SYNTAX
        assert await raw.command("RSET") == OK
    assert await raw.command("MAIL FROM:<a@example.com>") == smtp_replies.SENDER_OK
    assert await raw.command(command) == reply
    assert await raw.command('RCPT TO:<"quoted local"@example.net>') == smtp_replies.RECIPIENT_OK
    await assert_greets(smtp_port(ingress))


async def test_utf8_addresses_only_with_smtputf8(ingress: Ingress, raw: RawSmtp,
                                                 spool: SpoolProcess) -> None:
    assert await raw.command("MAIL FROM:<jörg@bücher.example>") == smtp_replies.NEED_SMTPUTF8
    assert await raw.command("MAIL FROM:<a@example.com>") == smtp_replies.SENDER_OK
    assert await raw.command("RCPT TO:<zoë@example.net>") == smtp_replies.NEED_SMTPUTF8
    assert await raw.command("RSET") == OK
    assert await raw.command("MAIL FROM:<jörg@bücher.example> SMTPUTF8") == \
        smtp_replies.SENDER_OK
    assert await raw.command("RCPT TO:<zoë@example.net>") == smtp_replies.RECIPIENT_OK
    assert await raw.command("RSET") == OK
    await raw.send(b"MAIL FROM:<\xff\xfe@example.com> SMTPUTF8\r\n")
    assert await raw.reply() == smtp_replies.BAD_SENDER_SYNTAX
    await assert_greets(smtp_port(ingress))


async def test_ehlo_names_are_validated(ingress: Ingress, spool: SpoolProcess) -> None:
    client = await RawSmtp.connect(smtp_port(ingress))
    try:
        assert (await client.reply()).startswith("220 ")
        for name in ("bad_name.example", "a b", "192.0.2.1", "[192.0.2.300]", "-lead.example",
                     "x(y).example", "[IPv6:zz::1]", "bücher.example"):
            assert await client.command(f"EHLO {name}") == smtp_replies.BAD_HELO, name
            assert await client.command(f"HELO {name}") == smtp_replies.BAD_HELO, name
        # No valid greeting: no transaction.
        assert (await client.command("MAIL FROM:<a@example.com>")).startswith("503 5.5.1")
        for name in ("[192.0.2.1]", "[IPv6:2001:db8::1]", "localhost", "xn--bcher-kva.example."):
            assert (await client.command(f"EHLO {name}")).startswith("250-"), name
        assert await client.command("EHLO client-7.example") != smtp_replies.BAD_HELO
        await start_data(client)
        await client.send(b"Subject: helo\r\n\r\nbody\r\n.\r\n")
        reply = parse_reply(await client.reply())
        assert reply.code == 250
    finally:
        await client.close()
    stored = await spool_message(spool.address, reply.text.split()[0])
    assert stored is not None
    received = split_headers(stored.body)[0][0]
    assert received.value.startswith("from client-7.example ([127.0.0.1])")
    await assert_greets(smtp_port(ingress))


async def test_vrfy_is_disabled(ingress: Ingress, raw: RawSmtp) -> None:
    assert await raw.command("VRFY <root@example.net>") == smtp_replies.VRFY_DISABLED
    assert await raw.command("EXPN staff") == "502 5.5.1 EXPN not implemented"
    await assert_greets(smtp_port(ingress))


async def test_many_protocol_errors_never_break_the_listener(
        ingress: Ingress, caplog: pytest.LogCaptureFixture) -> None:
    async def abuse(n: int) -> None:
        client = await RawSmtp.connect(smtp_port(ingress))
        try:
            await client.reply()
            await client.send(b"EHLO x\r\n\x00\r\n\n\r.\r\n" * 3 + bytes(range(256)) * 4)
            await asyncio.sleep(0.01 * n)
        finally:
            await client.close()

    await asyncio.gather(*(abuse(n) for n in range(10)))
    await assert_greets(smtp_port(ingress))
    # Every session was let go: nothing counted, nothing tracked.
    await async_wait_for(lambda: ingress.smtp.limiter.active == 0 and not ingress.smtp.connections,
                         timeout=5, message="sessions released")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
