"""Inbound reports as pure functions: correlation, reply codes, records, suppressions."""

from __future__ import annotations

from pydantic import SecretStr

from ingress.reports import (
    Correlation,
    correlate,
    reply_code,
    report_records,
    suppressions,
)
from petrel.config import BounceConfig
from petrel.correlation import Ref, encode_ref, ref_header, verp_address
from petrel.v1 import bounce_pb2, suppression_pb2

ID = "0190f0a0b0c0d0e0f0a0b0c0d0e0f0a0"
OTHER = "f" * 32
CONFIG = BounceConfig(domain="bounces.test", ref_secret=SecretStr("k" * 16))
KEY = b"k" * 16
VERP = verp_address("alice@example.com", ID, "bounces.test")


def response(kind: int = bounce_pb2.MESSAGE_KIND_DSN, header: str = "",
             recipients: list[bounce_pb2.BounceRecipient] | None = None,
             ) -> bounce_pb2.ClassifyMessageResponse:
    return bounce_pb2.ClassifyMessageResponse(
        kind=kind, original_headers={"x-petrel-ref": header} if header else {},
        recipients=recipients or [], reporting_mta="mx.remote.test")


def test_correlate_header_verp_both_and_neither() -> None:
    signed = encode_ref(Ref(ID, "acme", "spring"), KEY)
    assert correlate([VERP], response(header=signed), b"", CONFIG) == Correlation(
        ID, "alice@example.com", "acme", "spring", "header+verp")
    assert correlate(["fbl@x.test"], response(header=signed), b"", CONFIG) == Correlation(
        ID, "", "acme", "spring", "header")
    assert correlate([VERP], response(), b"", CONFIG) == Correlation(
        ID, "alice@example.com", via="verp")
    assert correlate(["postmaster@bounces.test"], response(), b"", CONFIG) == Correlation()
    assert not Correlation(ID, via="verp").tenant_known


def test_correlate_finds_quoted_refs_and_prefers_the_verp_id() -> None:
    mine = ref_header("X-Petrel-Ref", Ref(ID, "acme"), KEY).decode()
    other = ref_header("X-Petrel-Ref", Ref(OTHER, "beta"), KEY).decode()
    raw = f"text\n> {other}> Subject: x\n\n> {mine}".encode()
    assert correlate([VERP], response(), raw, CONFIG).tenant == "acme"
    assert correlate(["x@bounces.test"], response(), raw, CONFIG).tenant == "beta"
    # The returned header names another message than the VERP address: not believed.
    mismatch = correlate([VERP], response(header=encode_ref(Ref(OTHER, "beta"), KEY)),
                         b"", CONFIG)
    assert mismatch == Correlation(ID, "alice@example.com", via="verp")
    unsigned = encode_ref(Ref(ID, "acme"))
    assert correlate(["x@bounces.test"], response(header=unsigned), b"", CONFIG) == \
        Correlation()


def test_reply_codes() -> None:
    assert reply_code("smtp; 550 5.1.1 No such user", "5.1.1") == 550
    assert reply_code("452-4.2.2 full", "4.2.2") == 452
    assert reply_code("mailbox unknown", "5.1.1") == 550
    assert reply_code("try later", "4.4.7") == 450
    assert reply_code("", "") == 0


def _rcpt(address: str, category: str, status: str = "5.1.1",
          action: str = "failed") -> bounce_pb2.BounceRecipient:
    return bounce_pb2.BounceRecipient(address=address, category=category, status=status,
                                      action=action, diagnostic=f"smtp; 550 {status} x")


def test_records_for_failures_only() -> None:
    link = Correlation(ID, "alice@example.com", "acme", "c1", "header")
    dsn = response(recipients=[
        _rcpt("dead@x.test", "InvalidRecipient"),
        _rcpt("slow@x.test", "TransientFailure", "4.4.7", "delayed"),
        _rcpt("fine@x.test", "NotBounce", "2.0.0", "delivered")])
    [oob] = report_records(dsn, link, report_sender="", peer="192.0.2.1", now=1000.0)
    assert (oob["type"], oob["id"], oob["recipient"], oob["queue"]) == (
        "OOB", ID, "dead@x.test", "c1:acme@x.test")
    assert oob["response"]["code"] == 550 and oob["timestamp"] == 1000
    assert oob["report"]["action"] == "failed" and oob["report"]["envelope_sender"] == ""
    unlinked = report_records(dsn, Correlation(), report_sender="", peer="")[0]
    assert unlinked["id"] == "" and unlinked["queue"] == "" and unlinked["tenant"] is None
    assert report_records(response(bounce_pb2.MESSAGE_KIND_AUTOREPLY, recipients=[
        _rcpt("me@x.test", "AutoReply")]), link, report_sender="", peer="") == []


def test_feedback_records_and_anonymous_reports() -> None:
    arf = response(bounce_pb2.MESSAGE_KIND_ARF, recipients=[
        bounce_pb2.BounceRecipient(address="c@x.test", category="FeedbackReport")])
    arf.feedback.feedback_type = "abuse"
    arf.feedback.original_mail_from = "alice@example.com"
    [record] = report_records(arf, Correlation(ID, "", "acme", "", "header"),
                              report_sender="fbl@isp.test", peer="")
    assert (record["type"], record["sender"], record["bounce_classification"]) == (
        "Feedback", "alice@example.com", "FeedbackReport")
    assert record["feedback_report"]["feedback_type"] == "abuse"
    del arf.recipients[:]
    [redacted] = report_records(arf, Correlation(), report_sender="", peer="")
    assert redacted["recipient"] == "" and redacted["queue"] == ""


def test_suppressions_need_a_known_tenant_and_a_hard_permanent_failure() -> None:
    link = Correlation(ID, "", "acme", "", "header")
    dsn = response(recipients=[
        _rcpt("dead@x.test", "InvalidRecipient"), _rcpt("full@x.test", "QuotaIssues", "5.2.2"),
        _rcpt("later@x.test", "InvalidRecipient", "4.1.1")])
    [entry] = suppressions(dsn, link, CONFIG, 0)
    assert (entry.address, entry.tenant, entry.reason, entry.source, entry.message_id) == (
        "dead@x.test", "acme", "InvalidRecipient", suppression_pb2.SUPPRESSION_SOURCE_BOUNCE,
        ID)
    assert suppressions(dsn, Correlation(ID, via="verp"), CONFIG, 0) == []
    off = BounceConfig(suppress_bounces=False)
    assert suppressions(dsn, link, off, 0) == []
    arf = response(bounce_pb2.MESSAGE_KIND_ARF, recipients=[
        bounce_pb2.BounceRecipient(address="c@x.test", category="FeedbackReport")])
    [complaint] = suppressions(arf, link, BounceConfig(suppression_expiry=60), 1000)
    assert complaint.source == suppression_pb2.SUPPRESSION_SOURCE_COMPLAINT
    assert complaint.reason == "complaint" and complaint.expires_unix_ms == 61_000
    assert suppressions(arf, link, BounceConfig(suppress_complaints=False), 0) == []
