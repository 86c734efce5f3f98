"""egress against scripted SMTP servers: which replies move on to the next MX, which fail the
whole task, the HELO fallback, and a timeout on every step, each with commands one by one and
pipelined (RFC 2920) where the server advertises PIPELINING."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from tests.service.test_egress_harness import (
    EgressHarness,
    RecordingSink,
    Script,
    ScriptedSmtp,
    outcomes,
)
from tests.support.dns import DnsServer

# One egress (and its peers) for the whole module keeps it fast; every scripted server hangs
# up on its clients when stopped, so no pooled connection carries over between tests.
pytestmark = pytest.mark.asyncio(loop_scope="module")

SCRIPTED = "127.0.0.3"
# No connection reuse: each test must connect to the hosts in MX order.
FAST = {"connect_timeout": 0.5, "command_timeout": 0.5, "data_timeout": 0.5,
        "max_deliveries_per_connection": 1}


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    records = DnsServer(
        mx=[("two.test", "first.two.test", 10), ("two.test", "second.two.test", 20),
            ("one.test", "only.one.test", 10)],
        a=[("first.two.test", SCRIPTED), ("second.two.test", "127.0.0.1"),
           ("only.one.test", SCRIPTED)])
    with records as server:
        yield server


@pytest.fixture(scope="module")
def sink() -> Iterator[RecordingSink]:
    with RecordingSink() as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def harness(tmp_path_factory: pytest.TempPathFactory, dns_server: DnsServer,
                  sink: RecordingSink) -> AsyncIterator[EgressHarness]:
    routing = {"dns_nameservers": ["127.0.0.1"], "dns_port": dns_server.port,
               "smtp_port": sink.port}
    async with EgressHarness(tmp_path_factory.mktemp("egress"), routing=routing,
                             egress=FAST) as running:
        yield running


_serial = itertools.count(1)


def rcpt(domain: str) -> str:
    """A recipient no other test of this module uses (the sink is shared)."""
    return f"r{next(_serial)}@{domain}"


async def scripted(port: int, pipelining: bool = False, **replies: Script) -> ScriptedSmtp:
    return await ScriptedSmtp(SCRIPTED, port, pipelining=pipelining, **replies).start()


both_modes = pytest.mark.parametrize("pipelining", [False, True], ids=["serial", "pipelined"])


@pytest.mark.parametrize("replies", [
    {"BANNER": "421 4.3.2 too busy"},
    {"EHLO": "421 4.3.2 closing"},
    {"MAIL": "451 4.3.0 try later"},
    {"BANNER": None},
    {"EHLO": None},
    {"MAIL": "CLOSE"},
], ids=["banner-421", "ehlo-421", "mail-451", "banner-timeout", "ehlo-timeout", "mail-hangup"])
@both_modes
async def test_transient_trouble_before_rcpt_moves_to_the_next_mx(
        harness: EgressHarness, sink: RecordingSink, replies: dict[str, str | None],
        pipelining: bool) -> None:
    first = await scripted(sink.port, pipelining, **replies)
    address = rcpt("two.test")
    try:
        result = await harness.deliver("two.test", [address])
    finally:
        await first.stop()
    assert outcomes(result)[address][0] == "DELIVERED"
    assert result.peer.startswith("second.two.test ")
    assert len(sink.received_for(address)) == 1


@pytest.mark.parametrize(("replies", "code", "enhanced"), [
    ({"BANNER": "554 5.7.1 no SMTP service here"}, 554, "5.7.1"),
    ({"EHLO": "550 5.7.1 go away", "HELO": "550 5.7.1 go away"}, 550, "5.7.1"),
    ({"MAIL": "553 5.1.8 sender domain rejected"}, 553, "5.1.8"),
], ids=["banner-554", "ehlo-and-helo-550", "mail-553"])
@both_modes
async def test_permanent_refusal_before_rcpt_fails_every_recipient(
        harness: EgressHarness, sink: RecordingSink, replies: dict[str, str | None],
        code: int, enhanced: str, pipelining: bool) -> None:
    first = await scripted(sink.port, pipelining, **replies)
    addresses = [rcpt("two.test"), rcpt("two.test")]
    try:
        result = await harness.deliver("two.test", addresses)
    finally:
        await first.stop()
    assert outcomes(result) == {a: ("PERMANENT_FAILURE", code, enhanced) for a in addresses}
    assert result.peer.startswith("first.two.test ")
    assert not any(sink.received_for(a) for a in addresses)


async def test_helo_when_ehlo_is_not_understood(harness: EgressHarness,
                                                sink: RecordingSink) -> None:
    server = await scripted(sink.port, EHLO="502 5.5.1 command not implemented")
    try:
        result = await harness.deliver("one.test", ["h@one.test"])
    finally:
        await server.stop()
    assert outcomes(result) == {"h@one.test": ("DELIVERED", 250, "2.0.0")}
    assert server.commands[:3] == ["EHLO", "HELO", "MAIL"]
    assert len(server.messages) == 1


@pytest.mark.parametrize(("replies", "step"), [
    ({"RCPT": None}, "RCPT TO"),
    ({"DATA": None}, "DATA"),
    ({"DOT": None}, "DATA"),
], ids=["rcpt", "data", "final-dot"])
@both_modes
async def test_a_silent_server_times_out_as_a_transient_failure(
        harness: EgressHarness, sink: RecordingSink, replies: dict[str, str | None],
        step: str, pipelining: bool) -> None:
    server = await scripted(sink.port, pipelining, **replies)
    try:
        result = await harness.deliver("one.test", ["t@one.test"])
    finally:
        await server.stop()
    assert outcomes(result)["t@one.test"] == ("TRANSIENT_FAILURE", 451, "4.4.2")
    assert step in result.recipients[0].reply.text
    assert result.peer.startswith("only.one.test ")


@both_modes
async def test_hangup_after_rcpt_is_transient_for_accepted_recipients(
        harness: EgressHarness, sink: RecordingSink, pipelining: bool) -> None:
    server = await scripted(sink.port, pipelining, DATA="CLOSE")
    try:
        result = await harness.deliver("one.test", ["x@one.test", "y@one.test"])
    finally:
        await server.stop()
    assert {o for o, _, _ in outcomes(result).values()} == {"TRANSIENT_FAILURE"}
    assert "Connection lost during DATA" in result.recipients[0].reply.text


async def test_every_host_silent_is_no_answer(harness: EgressHarness,
                                              sink: RecordingSink) -> None:
    server = await scripted(sink.port, BANNER=None)
    try:
        result = await harness.deliver("one.test", ["s@one.test"])
    finally:
        await server.stop()
    assert outcomes(result)["s@one.test"] == ("TRANSIENT_FAILURE", 451, "4.4.1")
    assert "timed out" in result.recipients[0].reply.text


@both_modes
@pytest.mark.parametrize(("rcpt_replies", "text"), [
    (["250 2.1.5 OK", None], "Timed out"),
    (["250 2.1.5 OK", "CLOSE"], "Connection lost"),
    (["250 2.1.5 OK", "421 4.3.2 closing"], "closing"),
], ids=["timeout", "hangup", "421"])
async def test_an_accepted_recipient_is_not_delivered_when_a_later_rcpt_fails(
        harness: EgressHarness, sink: RecordingSink, rcpt_replies: list[str | None],
        text: str, pipelining: bool) -> None:
    """The first RCPT's 250 delivers nothing when the transaction ends before DATA."""
    server = await scripted(sink.port, pipelining, RCPT=rcpt_replies)
    try:
        result = await harness.deliver("one.test", ["p@one.test", "q@one.test"])
    finally:
        await server.stop()
    assert {o for o, _, _ in outcomes(result).values()} == {"TRANSIENT_FAILURE"}
    assert all(text in r.reply.text for r in result.recipients)
    assert server.messages == []


async def test_pipelined_commands_reach_the_server_before_it_answers_mail(
        harness: EgressHarness, sink: RecordingSink) -> None:
    """MAIL, every RCPT and DATA go out in one write: a server that never answers MAIL has
    them all; one by one it would have MAIL alone."""
    first = await scripted(sink.port, True, MAIL=None)
    address, other = rcpt("two.test"), rcpt("two.test")
    try:
        result = await harness.deliver("two.test", [address, other])
    finally:
        await first.stop()
    assert first.commands == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA"]
    assert outcomes(result)[address][0] == "DELIVERED"
    assert result.peer.startswith("second.two.test ")


async def test_pipelining_off_sends_one_command_at_a_time(
        tmp_path_factory: pytest.TempPathFactory, dns_server: DnsServer,
        sink: RecordingSink) -> None:
    routing = {"dns_nameservers": ["127.0.0.1"], "dns_port": dns_server.port,
               "smtp_port": sink.port}
    first = await scripted(sink.port, True, MAIL=None)
    address = rcpt("two.test")
    try:
        async with EgressHarness(tmp_path_factory.mktemp("serial"), routing=routing,
                                 egress={**FAST, "pipelining": False}) as serial:
            result = await serial.deliver("two.test", [address])
    finally:
        await first.stop()
    assert first.commands == ["EHLO", "MAIL"]
    assert outcomes(result)[address][0] == "DELIVERED"


@pytest.mark.parametrize("mail_reply", ["451 4.3.0 try later", "550 5.7.1 no"])
async def test_data_accepted_after_a_refused_mail_is_ended_with_a_lone_dot(
        harness: EgressHarness, sink: RecordingSink, mail_reply: str) -> None:
    """A server that refuses MAIL but still answers the pipelined DATA with 354 gets the
    lone dot (RFC 2920 3.1) and never the content."""
    server = await scripted(sink.port, True, MAIL=mail_reply)
    address = rcpt("one.test")
    try:
        result = await harness.deliver("one.test", [address])
    finally:
        await server.stop()
    assert server.commands[:4] == ["EHLO", "MAIL", "RCPT", "DATA"]
    assert server.messages == [b".\r\n"]
    code = int(mail_reply[:3])
    outcome = "TRANSIENT_FAILURE" if code < 500 else "PERMANENT_FAILURE"
    assert outcomes(result)[address] == (outcome, code, mail_reply[4:9])


async def test_pipelined_refusals_keep_their_own_replies(
        harness: EgressHarness, sink: RecordingSink) -> None:
    """Per-recipient RCPT replies come back in order; with no recipient accepted, a 354 to
    the pipelined DATA is ended with the lone dot; a second message reuses the connection."""
    server = await scripted(sink.port, True,
                            RCPT=["550 5.1.1 no such user", "452 4.2.2 full",
                                  "250 2.1.5 OK"])
    try:
        refused = await harness.deliver("one.test", ["n@one.test", "f@one.test"])
        delivered = await harness.deliver("one.test", ["ok@one.test"])
    finally:
        await server.stop()
    assert outcomes(refused) == {"n@one.test": ("PERMANENT_FAILURE", 550, "5.1.1"),
                                 "f@one.test": ("TRANSIENT_FAILURE", 452, "4.2.2")}
    assert outcomes(delivered) == {"ok@one.test": ("DELIVERED", 250, "2.0.0")}
    assert server.messages[0] == b".\r\n"
    assert server.messages[1].endswith(b"\r\n.\r\n") and len(server.messages) == 2
