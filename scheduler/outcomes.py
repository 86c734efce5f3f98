"""What a delivery result (or an expiry) means for one job, as pure functions.

``plan_result`` and ``plan_expiry`` turn a job's pending recipients and a result into the
event records to write and the recipients that became final; ``apply_outcome`` then records
that in the message's metadata (recipient states, the domain's ``DomainSchedule``). The
scheduler applies an outcome to the metadata only after its records are on disk, so the
spool never shows a recipient as final whose event could still be lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from petrel.events import make_record
from petrel.v1 import common_pb2, scheduler_pb2
from scheduler.policy import (
    EXPIRED_CODE,
    EXPIRED_ENHANCED,
    NO_RESULT_CODE,
    NO_RESULT_ENHANCED,
    NO_RESULT_TEXT,
    RetryPolicy,
    recipient_domain,
)
from scheduler.state import PENDING_STATES

Record = dict[str, Any]
RS = common_pb2


@dataclass(slots=True)
class Where:
    """The job an outcome belongs to."""

    domain: str
    queue: str
    site: str


@dataclass(slots=True)
class Outcome:
    records: list[Record] = field(default_factory=list)
    # recipient address -> final RecipientState
    finals: dict[str, int] = field(default_factory=dict)
    # Attempts made so far, and when the remaining recipients are tried next (None: none left).
    attempts: int = 0
    due_ms: int | None = None


def pending_recipients(meta: common_pb2.MessageMeta, domain: str) -> list[str]:
    return [r.address for r in meta.recipients
            if r.state in PENDING_STATES and recipient_domain(r.address) == domain]


def _record(record_type: str, meta: common_pb2.MessageMeta, where: Where, recipient: str,
            attempts: int, *, code: int = 0, enhanced: str = "", text: str = "",
            classification: str = "", peer: str = "", egress_source: str = "",
            site: str = "") -> Record:
    return make_record(
        record_type, message_id=meta.id, sender=meta.sender, recipient=recipient,
        queue=where.queue, site=site or where.site, size=meta.size, code=code,
        enhanced_code=enhanced, content=text, num_attempts=attempts,
        bounce_classification=classification, tenant=meta.tenant, campaign=meta.campaign,
        trace_context=meta.trace_context, meta=meta.meta, created_ms=meta.created_unix_ms,
        peer=peer, egress_source=egress_source, reception_protocol=meta.reception_protocol)


def _expire(meta: common_pb2.MessageMeta, where: Where, recipients: list[str], attempts: int,
            max_age: float, outcome: Outcome) -> None:
    text = f"Message expired: not delivered within max_age ({max_age:g}s)"
    for address in recipients:
        outcome.records.append(_record("Expiration", meta, where, address, attempts,
                                       code=EXPIRED_CODE, enhanced=EXPIRED_ENHANCED, text=text))
        outcome.finals[address] = RS.RECIPIENT_STATE_EXPIRED
    outcome.due_ms = None


def _lookup(result: scheduler_pb2.DeliveryResult) -> dict[str, scheduler_pb2.RecipientResult]:
    found: dict[str, scheduler_pb2.RecipientResult] = {}
    for item in result.recipients:
        found.setdefault(item.recipient, item)
        found.setdefault(item.recipient.lower(), item)
    return found


def plan_result(meta: common_pb2.MessageMeta, where: Where, attempts_before: int,
                result: scheduler_pb2.DeliveryResult, policy: RetryPolicy,
                now_ms: int) -> Outcome:
    """Delivered → Delivery, permanent → Bounce, transient (or no result for a recipient) →
    TransientFailure and a retry at the policy's next due time, or Expiration when that
    would be past the message's maximum age."""
    attempts = attempts_before + 1
    outcome = Outcome(attempts=attempts)
    by_address = _lookup(result)
    remaining: list[str] = []
    extra = {"peer": result.peer, "egress_source": result.egress_source, "site": result.site}
    for address in pending_recipients(meta, where.domain):
        item = by_address.get(address) or by_address.get(address.lower())
        reply = item.reply if item is not None else None
        code = reply.code if reply is not None else NO_RESULT_CODE
        enhanced = reply.enhanced_code if reply is not None else NO_RESULT_ENHANCED
        text = reply.text if reply is not None else NO_RESULT_TEXT
        if item is not None and item.outcome == scheduler_pb2.DELIVERY_OUTCOME_DELIVERED:
            outcome.records.append(_record("Delivery", meta, where, address, attempts,
                                           code=code, enhanced=enhanced, text=text, **extra))
            outcome.finals[address] = RS.RECIPIENT_STATE_DELIVERED
        elif item is not None and item.outcome == scheduler_pb2.DELIVERY_OUTCOME_PERMANENT_FAILURE:
            outcome.records.append(_record(
                "Bounce", meta, where, address, attempts, code=code, enhanced=enhanced,
                text=text, classification=item.bounce_classification, **extra))
            outcome.finals[address] = RS.RECIPIENT_STATE_BOUNCED
        else:
            outcome.records.append(_record(
                "TransientFailure", meta, where, address, attempts, code=code,
                enhanced=enhanced, text=text,
                classification=item.bounce_classification if item is not None else "",
                **extra))
            remaining.append(address)
    if remaining:
        outcome.due_ms = policy.next_due_ms(meta.created_unix_ms, attempts, now_ms)
        if outcome.due_ms is None:
            _expire(meta, where, remaining, attempts, policy.max_age, outcome)
    return outcome


def plan_expiry(meta: common_pb2.MessageMeta, where: Where, attempts: int,
                max_age: float) -> Outcome:
    """Every pending recipient of the job's domain expires."""
    outcome = Outcome(attempts=attempts)
    _expire(meta, where, pending_recipients(meta, where.domain), attempts, max_age, outcome)
    return outcome


def apply_outcome(meta: common_pb2.MessageMeta, domain: str, outcome: Outcome) -> bool:
    """Record ``outcome`` in ``meta``; True while any recipient of the message is pending."""
    for recipient in meta.recipients:
        state = outcome.finals.get(recipient.address)
        if state is not None and recipient.state in PENDING_STATES:
            recipient.state = state  # type: ignore[assignment]
    kept = [s for s in meta.schedules if s.domain != domain]
    del meta.schedules[:]
    meta.schedules.extend(kept)
    if outcome.due_ms is not None:
        meta.schedules.add(domain=domain, attempts=outcome.attempts, due_unix_ms=outcome.due_ms)
    return any(r.state in PENDING_STATES for r in meta.recipients)
