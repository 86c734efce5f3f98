"""Inbound reports at ingress, against a real spool process and a real in-process bounce
service (ClassifyMessage + SuppressionService): DSNs become OOB records and ARF reports
Feedback records tied to the original message, hard bounces and complaints are suppressed,
and nothing is queued."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from bounce.classifier import ReplyClassifier
from ingress.main import Ingress
from petrel import smtp_replies
from petrel.config import Config
from petrel.correlation import Ref, ref_header
from petrel.events import read_events
from tests.service.test_ingress_harness import (
    RawSmtp,
    SpoolProcess,
    SuppressionPeer,
    ingress_config,
    running_ingress,
    smtp_port,
    spool_count,
)
from tests.support.messages import make_message
from tests.support.net import free_port
from tests.support.reports import header_block, make_arf, make_autoreply, make_dsn

BOUNCES = "bounces.petrel.test"
FEEDBACK = "fbl@petrel.test"
SECRET = "report-secret-0123456789"
ID = "0190f0a0b0c0d0e0f0a0b0c0d0e0f0a0"
SENDER = "sender@petrel.test"
VERP = f"sender+{ID}=petrel.test@{BOUNCES}"
LATER = datetime.now(UTC) + timedelta(days=3)


@pytest.fixture(scope="module")
def classifier() -> ReplyClassifier:
    return ReplyClassifier.from_files()


@pytest.fixture
async def bounce(tmp_path: Path, classifier: ReplyClassifier) -> AsyncIterator[SuppressionPeer]:
    running = await SuppressionPeer(tmp_path / "suppression", classifier).start()
    yield running
    await running.stop()


def config_for(tmp_path: Path, spool: SpoolProcess, bounce_address: str) -> Config:
    # Loopback may not relay here: reports are accepted from anyone, other mail is not.
    config = ingress_config(tmp_path, spool.address, relay_networks=["192.0.2.0/24"])
    return config.model_copy(update={"bounce": config.bounce.model_copy(update={
        "address": bounce_address, "domain": BOUNCES, "feedback_addresses": (FEEDBACK,),
        "ref_secret": SecretStr(SECRET)})})


@pytest.fixture
async def ingress(tmp_path: Path, spool: SpoolProcess,
                  bounce: SuppressionPeer) -> AsyncIterator[Ingress]:
    async with running_ingress(config_for(tmp_path, spool, bounce.address)) as running:
        yield running


def original(tenant: str = "acme", campaign: str = "spring",
             recipient: str = "nouser@dest.test") -> bytes:
    """The message as the remote system received it from egress (ref header first)."""
    stamp = ref_header("X-Petrel-Ref", Ref(ID, tenant, campaign), SECRET.encode())
    received = (f"Received: from client.test by petrel.localhost (Petrel) with ESMTP id {ID};"
                "\r\n\tThu, 26 Nov 2026 07:00:00 +0000\r\n").encode()
    return stamp + received + make_message(SENDER, [recipient])


async def deliver(ingress: Ingress, sender: str, recipients: list[str], content: bytes,
                  ) -> list[str]:
    """One SMTP transaction; the replies to each RCPT and to the DATA (when reached)."""
    client = await RawSmtp.connect(smtp_port(ingress))
    replies = []
    try:
        assert (await client.reply()).startswith("220")
        assert (await client.command("EHLO mx.remote.test")).startswith("250")
        assert await client.command(f"MAIL FROM:<{sender}>") == smtp_replies.SENDER_OK
        for rcpt in recipients:
            replies.append(await client.command(f"RCPT TO:<{rcpt}>"))
        if all(r.startswith("250") for r in replies):
            assert (await client.command("DATA")).startswith("354")
            await client.send(content + b".\r\n")
            replies.append(await client.reply())
    finally:
        await client.close()
    return replies


def events(ingress: Ingress, record_type: str) -> list[dict[str, Any]]:
    return [e for e in read_events(ingress.config.events_dir) if e["type"] == record_type]


async def test_dsn_days_later_becomes_oob_and_suppresses(
        ingress: Ingress, bounce: SuppressionPeer, spool: SpoolProcess) -> None:
    before = await spool_count(spool.address)
    dsn = make_dsn(header_block(original()), "nouser@dest.test", to=VERP, when=LATER)
    assert await deliver(ingress, "", [VERP], dsn) == [
        smtp_replies.RECIPIENT_OK, smtp_replies.REPORT_RECEIVED]
    [oob] = events(ingress, "OOB")
    assert (oob["id"], oob["sender"], oob["recipient"]) == (ID, SENDER, "nouser@dest.test")
    assert (oob["tenant"], oob["campaign"], oob["queue"]) == (
        "acme", "spring", "spring:acme@dest.test")
    assert oob["bounce_classification"] == "InvalidRecipient"
    assert oob["response"] == {"code": 550, "enhanced_code": {
        "class": 5, "subject": 1, "detail": 1},
        "content": "550 5.1.1 <nouser@dest.test>: No such user here"}
    assert oob["report"]["kind"] == "dsn" and oob["report"]["correlated_by"] == "header+verp"
    assert oob["peer_address"] == {"addr": "127.0.0.1"}
    assert await spool_count(spool.address) == before  # not queued
    assert await bounce.entries() == [
        ("nouser@dest.test", "acme", "InvalidRecipient", "SUPPRESSION_SOURCE_BOUNCE")]


async def test_arf_becomes_feedback_and_suppresses(ingress: Ingress,
                                                  bounce: SuppressionPeer) -> None:
    arf = make_arf(original(recipient="complainer@dest.test"), "complainer@dest.test",
                   to=FEEDBACK, when=LATER)
    assert (await deliver(ingress, "feedback@fbl.isp.test", [FEEDBACK], arf))[-1] == \
        smtp_replies.REPORT_RECEIVED
    [feedback] = events(ingress, "Feedback")
    assert (feedback["id"], feedback["tenant"], feedback["campaign"]) == (ID, "acme", "spring")
    assert feedback["recipient"] == "complainer@dest.test"
    assert feedback["sender"] == SENDER  # from the report: no VERP address here
    assert feedback["bounce_classification"] == "FeedbackReport"
    report = feedback["feedback_report"]
    assert report["feedback_type"] == "abuse" and report["source_ip"] == "192.0.2.1"
    assert report["original_rcpt_to"] == ["complainer@dest.test"]
    assert await bounce.entries() == [
        ("complainer@dest.test", "acme", "abuse", "SUPPRESSION_SOURCE_COMPLAINT")]


async def test_verp_alone_ties_id_and_sender_but_suppresses_nothing(
        ingress: Ingress, bounce: SuppressionPeer) -> None:
    dsn = make_dsn(b"", "nouser@dest.test", to=VERP, when=LATER)
    assert (await deliver(ingress, "", [VERP], dsn))[-1] == smtp_replies.REPORT_RECEIVED
    [oob] = events(ingress, "OOB")
    assert (oob["id"], oob["sender"], oob["tenant"], oob["queue"]) == (
        ID, SENDER, None, "dest.test")
    assert oob["report"]["correlated_by"] == "verp"
    assert await bounce.entries() == []


async def test_forged_or_unsigned_refs_are_not_believed(ingress: Ingress,
                                                        bounce: SuppressionPeer) -> None:
    forged = ref_header("X-Petrel-Ref", Ref(ID, "victim"), b"wrong key") + make_message(
        SENDER, ["nouser@dest.test"])
    dsn = make_dsn(header_block(forged), "nouser@dest.test", to=f"postmaster@{BOUNCES}",
                   when=LATER)
    assert (await deliver(ingress, "", [f"postmaster@{BOUNCES}"], dsn))[-1] == \
        smtp_replies.REPORT_RECEIVED
    [oob] = events(ingress, "OOB")
    assert oob["id"] == "" and oob["tenant"] is None and oob["report"]["correlated_by"] is None
    assert oob["bounce_classification"] == "InvalidRecipient"
    assert await bounce.entries() == []


async def test_delay_notices_and_autoreplies_give_no_records(ingress: Ingress) -> None:
    delayed = make_dsn(header_block(original()), "slow@dest.test", to=VERP, when=LATER,
                       status="4.4.7", action="delayed",
                       reply="451 4.4.7 delivery temporarily suspended")
    auto = make_autoreply(VERP, when=LATER)
    for report in (delayed, auto):
        assert (await deliver(ingress, "", [VERP], report))[-1] == \
            smtp_replies.REPORT_RECEIVED
    assert events(ingress, "OOB") == [] and events(ingress, "Feedback") == []


async def test_reports_are_not_mixed_with_outbound_mail(ingress: Ingress) -> None:
    replies = await deliver(ingress, "", [VERP, "someone@dest.test"], b"")
    assert replies == [smtp_replies.RECIPIENT_OK, smtp_replies.MIXED_REPORT_RECIPIENTS]
    # Outbound mail is still subject to the relay policy (loopback may not relay here).
    assert await deliver(ingress, SENDER, ["someone@dest.test", FEEDBACK], b"") == [
        smtp_replies.RELAY_DENIED, smtp_replies.RECIPIENT_OK]


async def test_report_answered_451_while_bounce_is_down(tmp_path: Path,
                                                        spool: SpoolProcess) -> None:
    config = config_for(tmp_path, spool, f"127.0.0.1:{free_port()}")
    dsn = make_dsn(header_block(original()), "nouser@dest.test", to=VERP, when=LATER)
    async with running_ingress(config) as running:
        assert (await deliver(running, "", [VERP], dsn))[-1] == \
            smtp_replies.REPORT_UNAVAILABLE
        assert events(running, "OOB") == []
