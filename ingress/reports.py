"""Inbound reports: mail to the bounce domain or a feedback address becomes events.

A report is not queued. ``Reports.process`` asks bounce's ``ClassifyMessage`` what it is,
ties it to the message we sent (``correlate``: the ref header in the returned message, the
VERP address it was sent to; ``petrel.correlation``) and writes, before answering 250:

* one ``OOB`` record per failed recipient of a DSN or prose bounce (delay notices and
  successful deliveries are not failures and give none), with the original id, sender,
  tenant, campaign and queue, the category as ``bounce_classification`` and the status and
  diagnostic as the response;
* one ``Feedback`` record per complaining recipient of an ARF report, with the parsed report
  as ``feedback_report``.

Auto-replies and mail that is not a report are accepted and dropped (counted). Then, when
the report names its tenant (a valid ref header), hard bounces (``bounce.suppress_categories``,
permanent status) and complaints are added to the suppression list; that step is best effort
(the events are already durable; a failure is logged). A report that cannot be classified
(bounce unavailable) or whose events cannot be written is answered ``451 4.3.0``: the
reporting MTA keeps it and tries again.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from ingress import metrics
from ingress.acceptor import queue_name
from petrel import smtp_replies
from petrel.config import BounceConfig
from petrel.correlation import Ref, decode_ref, find_refs, parse_verp
from petrel.events import EventLog, make_record
from petrel.suppression import address_key
from petrel.v1 import bounce_pb2, bounce_pb2_grpc, suppression_pb2, suppression_pb2_grpc

log = logging.getLogger(__name__)

KIND_NAMES = {
    bounce_pb2.MESSAGE_KIND_DSN: "dsn",
    bounce_pb2.MESSAGE_KIND_TEXT_BOUNCE: "text-bounce",
    bounce_pb2.MESSAGE_KIND_ARF: "arf",
    bounce_pb2.MESSAGE_KIND_AUTOREPLY: "autoreply",
    bounce_pb2.MESSAGE_KIND_NOT_BOUNCE: "not-bounce",
}
BOUNCE_KINDS = ("dsn", "text-bounce")
# DSN actions that are not failures (RFC 3464 2.3.3).
_NOT_FAILED = frozenset({"delayed", "delivered", "relayed", "expanded"})
_REPLY_CODE = re.compile(r"(?:^|;\s*|\s)([245]\d\d)(?:[ -]|$)")
Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Correlation:
    """What a report is tied to. ``tenant_known`` only when a valid ref header named it (a
    VERP address names the id and the sender, not the tenant)."""

    id: str = ""
    sender: str = ""
    tenant: str = ""
    campaign: str = ""
    via: str = ""  # "header", "verp", "header+verp" or ""

    @property
    def tenant_known(self) -> bool:
        return "header" in self.via


def correlate(recipients: Sequence[str], response: bounce_pb2.ClassifyMessageResponse,
              raw: bytes, config: BounceConfig) -> Correlation:
    """Tie a report to our message: the VERP address it was sent to names the id and the
    original sender; the ref header of the returned message (as bounce parsed it, else found
    in the raw text) names id, tenant and campaign. A header naming another id than the
    VERP address is not believed (the VERP address is what the reporting MTA bounced to)."""
    secret = config.ref_secret.get_secret_value().encode()
    verp = next((v for r in recipients if (v := parse_verp(r, config.domain)) is not None),
                None)
    ref: Ref | None = None
    name = config.ref_header
    if name:
        value = response.original_headers.get(name.lower(), "")
        ref = decode_ref(value, secret) if value else None
        if ref is None:
            refs = find_refs(raw.decode("utf-8", "replace"), name, secret)
            if verp is not None:
                refs = [r for r in refs if r.id == verp.id] or refs
            ref = refs[0] if refs else None
    if verp is not None and ref is not None and ref.id != verp.id:
        log.warning("report: ref header names %s, VERP address %s; using the VERP id",
                    ref.id, verp.id)
        ref = None
    if ref is not None:
        return Correlation(ref.id, verp.sender if verp else "", ref.tenant, ref.campaign,
                           "header+verp" if verp else "header")
    if verp is not None:
        return Correlation(verp.id, verp.sender, via="verp")
    return Correlation()


def reply_code(diagnostic: str, status: str) -> int:
    """The SMTP code in a diagnostic (``smtp; 550 5.1.1 ...``), else one for the status
    class (550, 450), else 0."""
    match = _REPLY_CODE.search(diagnostic[:200])
    if match:
        return int(match.group(1))
    return {"5": 550, "4": 450}.get(status[:1], 0)


def report_records(response: bounce_pb2.ClassifyMessageResponse, link: Correlation, *,
                   report_sender: str, peer: str, now: float | None = None) -> list[Record]:
    """The OOB or Feedback records of one classified report (none for other kinds)."""
    kind = KIND_NAMES.get(response.kind, "not-bounce")
    common: dict[str, Any] = {
        "message_id": link.id, "sender": link.sender, "tenant": link.tenant,
        "campaign": link.campaign, "peer": peer, "reception_protocol": "ESMTP",
        "timestamp": now,
    }
    report = {"kind": kind, "reporting_mta": response.reporting_mta or None,
              "original_message_id": response.original_message_id or None,
              "envelope_sender": report_sender, "correlated_by": link.via or None}
    records: list[Record] = []
    if kind in BOUNCE_KINDS:
        for r in response.recipients:
            if r.action.lower() in _NOT_FAILED or r.category == "NotBounce":
                continue
            records.append(make_record(
                "OOB", recipient=r.address, queue=_queue(r.address, link),
                code=reply_code(r.diagnostic, r.status), enhanced_code=r.status,
                content=r.diagnostic or r.category, bounce_classification=r.category,
                report={**report, "action": r.action or None,
                        "remote_mta": r.remote_mta or None}, **common))
    elif kind == "arf":
        f = response.feedback
        feedback = {
            "feedback_type": f.feedback_type, "user_agent": f.user_agent or None,
            "original_mail_from": f.original_mail_from or None,
            "original_rcpt_to": list(f.original_rcpt_to), "reported_domain":
            f.reported_domain or None, "source_ip": f.source_ip or None,
            "arrival_date": f.arrival_date or None, "reporting_mta": f.reporting_mta or None,
            "reported_uri": list(f.reported_uri)}
        addresses = [r.address for r in response.recipients] or [""]
        for address in addresses:
            records.append(make_record(
                "Feedback", recipient=address, queue=_queue(address, link) if address else "",
                content=f"feedback-type: {f.feedback_type or 'unknown'}",
                bounce_classification="FeedbackReport", feedback_report=feedback,
                report=report, **{**common, "sender": link.sender or f.original_mail_from}))
    return records


def _queue(recipient: str, link: Correlation) -> str:
    return queue_name(recipient, link.tenant, link.campaign) if link.id else ""


def suppressions(response: bounce_pb2.ClassifyMessageResponse, link: Correlation,
                 config: BounceConfig, now_ms: int) -> list[suppression_pb2.Suppression]:
    """The entries a report adds: hard permanent bounces and complaints of a report whose
    tenant is known, as configured."""
    if not link.tenant_known:
        return []
    expires = now_ms + int(config.suppression_expiry * 1000) if config.suppression_expiry else 0
    kind = KIND_NAMES.get(response.kind, "not-bounce")
    out: list[suppression_pb2.Suppression] = []
    if kind in BOUNCE_KINDS and config.suppress_bounces:
        hard = set(config.suppress_categories)
        for r in response.recipients:
            if (r.category in hard and r.status.startswith("5")
                    and r.action.lower() not in _NOT_FAILED):
                out.append(suppression_pb2.Suppression(
                    address=r.address, tenant=link.tenant, reason=r.category,
                    source=suppression_pb2.SUPPRESSION_SOURCE_BOUNCE, expires_unix_ms=expires,
                    message_id=link.id, detail=f"OOB: {r.diagnostic}"[:1000]))
    elif kind == "arf" and config.suppress_complaints:
        for r in response.recipients:
            out.append(suppression_pb2.Suppression(
                address=r.address, tenant=link.tenant,
                reason=response.feedback.feedback_type or "complaint",
                source=suppression_pb2.SUPPRESSION_SOURCE_COMPLAINT, expires_unix_ms=expires,
                message_id=link.id, detail=f"feedback report from "
                f"{response.feedback.reporting_mta or response.reporting_mta or 'unknown'}"))
    return out


class ReportFailed(Exception):
    """The report could not be processed now; the sender should try again."""


class Reports:
    """Recognises report addresses and turns reports into events."""

    def __init__(self, config: BounceConfig, bounce: grpc.aio.Channel,
                 suppression: grpc.aio.Channel, events: EventLog | None, *,
                 deadline: float = 10.0,
                 on_suppressed: Callable[[suppression_pb2.Suppression], None] | None = None,
                 ) -> None:
        self.config = config
        self._classify = bounce_pb2_grpc.BounceServiceStub(bounce)
        self._suppress = suppression_pb2_grpc.SuppressionServiceStub(suppression)
        self._events = events
        self.deadline = deadline
        self._feedback = {address_key(a) for a in config.feedback_addresses}
        self._on_suppressed = on_suppressed

    @property
    def enabled(self) -> bool:
        return bool(self.config.domain or self._feedback)

    def is_report_address(self, address: str) -> bool:
        if address_key(address) in self._feedback:
            return True
        domain = address.rpartition("@")[2].lower().rstrip(".")
        return bool(self.config.domain) and domain == self.config.domain

    async def process(self, sender: str, recipients: Sequence[str], raw: bytes,
                      peer: str) -> str:
        """Classify, log and (maybe) suppress; returns the reply for DATA. Raises
        ``ReportFailed`` when the report should be offered again later."""
        try:
            response = await self._classify.ClassifyMessage(
                bounce_pb2.ClassifyMessageRequest(message=raw), timeout=self.deadline)
        except (TimeoutError, grpc.aio.AioRpcError) as exc:
            detail = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "timeout"
            raise ReportFailed(f"classification unavailable: {detail}") from exc
        link = correlate(recipients, response, raw, self.config)
        kind = KIND_NAMES.get(response.kind, "not-bounce")
        metrics.REPORTS.labels(kind, "true" if link.id else "false").inc()
        records = report_records(response, link, report_sender=sender, peer=peer)
        if records and self._events is not None:
            try:
                await self._events.write(records)
            except Exception as exc:
                log.exception("writing %d report events failed", len(records))
                raise ReportFailed("events not written") from exc
        log.info("report from %s (%s): %s, %d records, message %s", peer, sender or "<>",
                 kind, len(records), link.id or "unknown",
                 extra={"message_id": link.id, "peer": peer})
        await self._add_suppressions(suppressions(response, link, self.config,
                                                  int(time.time() * 1000)))
        return smtp_replies.REPORT_RECEIVED

    async def _add_suppressions(self, entries: list[suppression_pb2.Suppression]) -> None:
        if not entries:
            return
        try:
            await self._suppress.AddSuppressions(
                suppression_pb2.AddSuppressionsRequest(entries=entries), timeout=self.deadline)
        except (TimeoutError, grpc.aio.AioRpcError) as exc:
            detail = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "timeout"
            log.warning("report: %d suppressions not added (%s): %s", len(entries), detail,
                        ", ".join(e.address for e in entries[:5]))
            return
        if self._on_suppressed is not None:
            for entry in entries:
                self._on_suppressed(entry)
