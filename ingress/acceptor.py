"""The reception pipeline shared by SMTP and gRPC inject.

``Acceptor.accept(submission)``: assign the id, prepare the message (``ingress.message``) and
write meta and body durably to the spool together with one ``Reception`` event per recipient,
which the spool appends to its event log right after the commit that stores the message (one
round trip and one writer thread for both: a log of ingress's own cost a thread hand-off and
an fsync per group before every 250). It returns after that write (a 250 means the message is
durable and its reception recorded); a failure to store raises ``StoreFailed`` and nothing is
acknowledged. Enqueueing the
metadata with the scheduler follows in its own task: it cannot lose the message (the spool
holds it; the ``Enqueuer`` retries; the scheduler reconciles with the spool, promptly after an
ingress connects again), so the client does not wait for one more round trip. ``drain``
waits for those follow-ups too. A duplicate (same idempotency key) returns the original id
with ``duplicate=True`` and is neither enqueued nor logged again. Concurrent submissions with
the same key inside this process share one write.

Suppression list: once the tenant is known (after ``prepare_message`` read ``X-Tenant``), the
recipients are checked (``ingress.suppression``, fail open). Each suppressed one gets a
``Rejection`` record. With ``partial_ok`` (SMTP, past RCPT) the others are accepted;
otherwise, or when none is left, ``RecipientsSuppressed`` is raised and nothing is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ingress import metrics, tracing
from ingress.enqueuer import Enqueuer
from ingress.message import Stamp, prepare_message
from ingress.spool_writer import SpoolWriter
from ingress.suppression import SuppressionChecker
from petrel import ids, smtp_replies, telemetry
from petrel.events import EventLog, encode_records, make_record, trace_id_of
from petrel.faults import fault_point
from petrel.metrics import observe
from petrel.routing import normalize_domain
from petrel.suppression import SOURCE_NAMES, describe
from petrel.v1 import common_pb2, suppression_pb2

log = logging.getLogger(__name__)


def queue_name(recipient: str, tenant: str, campaign: str) -> str:
    """The scheduled queue a recipient joins (``campaign:tenant@domain``, unset parts left
    out), as the scheduler names it; used in Reception events."""
    domain = normalize_domain(recipient.rpartition("@")[2])
    if campaign:
        return f"{campaign}:{tenant}@{domain}"
    return f"{tenant}@{domain}" if tenant else domain


@dataclass(frozen=True, slots=True)
class Submission:
    sender: str  # "" is the null sender
    recipients: tuple[str, ...]
    content: bytes  # CRLF line endings
    protocol: str  # "ESMTP", "ESMTPA" or "GRPC" (the Received: "with" keyword)
    peer_ip: str = ""
    helo: str = ""
    tenant: str = ""
    campaign: str = ""
    meta: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str = ""
    trace_context: Mapping[str, str] = field(default_factory=dict)
    # Accept the recipients that are not suppressed when some are (SMTP after RCPT).
    partial_ok: bool = False

    @property
    def reception_protocol(self) -> str:
        return "ESMTP" if self.protocol.startswith("ESMTP") else self.protocol


class RecipientsSuppressed(Exception):
    """Recipients are on the suppression list; nothing was stored. ``refused`` maps each
    (in request order) to the entry that applies."""

    def __init__(self, refused: dict[str, suppression_pb2.Suppression]) -> None:
        self.refused = refused
        first, entry = next(iter(refused.items()))
        super().__init__(f"{first} suppressed ({describe(entry)})")

    @property
    def reply(self) -> str:
        """The SMTP reply naming the first refused recipient's entry."""
        return smtp_replies.suppressed(describe(next(iter(self.refused.values()))))


@dataclass(frozen=True, slots=True)
class Accepted:
    id: str
    duplicate: bool = False
    trace_id: str = ""


class Acceptor:
    def __init__(self, hostname: str, spool: SpoolWriter, enqueuer: Enqueuer,
                 events: EventLog | None,
                 suppression: SuppressionChecker | None = None) -> None:
        self._hostname = hostname
        self._spool = spool
        self._enqueuer = enqueuer
        self._events = events
        self.suppression = suppression
        self._by_key: dict[str, asyncio.Future[Accepted]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def accept(self, submission: Submission) -> Accepted:
        """Store ``submission``; raises ``StoreFailed`` or ``InvalidMessage``.

        The work runs in its own task: a caller that goes away (SMTP client disconnects,
        gRPC call cancelled) does not cut a message in half between the spool, the scheduler
        and the event log."""
        task = asyncio.create_task(self._accept_once(submission), name="accept")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return await asyncio.shield(task)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # the caller may have gone; the outcome is already logged

    @property
    def in_flight(self) -> int:
        """Submissions being stored plus stored ones whose follow-up has not finished."""
        return len(self._tasks)

    async def drain(self, timeout: float) -> bool:
        """Wait until no submission or follow-up is in flight; ``False`` when ``timeout``
        passed first."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            return not pending
        return True

    async def _accept_once(self, submission: Submission) -> Accepted:
        key = submission.idempotency_key
        if not key:
            return await self._accept(submission)
        while (pending := self._by_key.get(key)) is not None:
            try:
                first = await asyncio.shield(pending)
            except Exception:
                continue  # the first attempt failed: this one tries on its own
            return Accepted(first.id, duplicate=True, trace_id=first.trace_id)
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._by_key[key] = future
        try:
            result = await self._accept(submission)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
            future.exception()  # retrieved here; waiters see it through shield
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._by_key[key]

    async def _accept(self, sub: Submission) -> Accepted:
        created_ms = int(time.time() * 1000)
        message_id = ids.new_message_id(created_ms)
        prepared = prepare_message(
            sub.content,
            Stamp(message_id, self._hostname, sub.protocol, sub.peer_ip, sub.helo),
            tenant=sub.tenant, campaign=sub.campaign, trace_context=sub.trace_context)
        recipients = await self._unsuppressed(sub, prepared.tenant, prepared.campaign)
        parent = (telemetry.context_from_carrier(prepared.trace_context)
                  if prepared.trace_given else None)
        with tracing.reception_span(sub.reception_protocol, parent, message_id=message_id,
                                    recipients=len(recipients),
                                    size=len(prepared.content), peer=sub.peer_ip,
                                    tenant=prepared.tenant) as span:
            # The stored context is the reception span's, so every later span of the
            # message hangs below (or links to) it.
            carrier = telemetry.inject_carrier() or prepared.trace_context
            meta = common_pb2.MessageMeta(
                id=message_id, sender=sub.sender,
                recipients=[common_pb2.Recipient(address=r,
                                                 state=common_pb2.RECIPIENT_STATE_PENDING)
                            for r in recipients],
                tenant=prepared.tenant, campaign=prepared.campaign, created_unix_ms=created_ms,
                size=len(prepared.content), trace_context=carrier, meta=sub.meta,
                reception_protocol=sub.reception_protocol, peer_address=sub.peer_ip,
                idempotency_key=sub.idempotency_key)
            started = time.perf_counter()
            with tracing.step("spool write"):
                stored = await self._spool.put(meta, prepared.content,
                                               encode_records(reception_records(meta)))
            trace_id = trace_id_of(carrier)
            observe(metrics.SPOOL_WRITE_SECONDS, time.perf_counter() - started, trace_id)
            fault_point("ingress.after_store")
            if stored.duplicate:
                span.set_attributes({"messaging.message.id": stored.id,
                                     "petrel.duplicate": True})
                log.info("duplicate of %s (idempotency key)", stored.id,
                         extra={"message_id": stored.id})
                return Accepted(stored.id, duplicate=True)
            metrics.received(sub.reception_protocol, len(recipients))
            # The Receptions went to disk with the message, before the scheduler can hear of
            # it, so they precede its other records (webhook order, docs/events.md "Order").
            task = asyncio.create_task(self._enqueue(meta), name="enqueue")
            self._tasks.add(task)
            task.add_done_callback(self._done)
            log.debug("accepted %s", message_id, extra={"message_id": message_id,
                                                        "trace_id": trace_id})
            return Accepted(message_id, trace_id=trace_id)

    async def _unsuppressed(self, sub: Submission, tenant: str, campaign: str) -> list[str]:
        """The recipients to accept; raises ``RecipientsSuppressed`` (see the module doc)."""
        if self.suppression is None:
            return list(sub.recipients)
        refused = await self.suppression.check(tenant, sub.recipients)
        if not refused:
            return list(sub.recipients)
        await self.log_rejections(sub.sender, refused, tenant=tenant, campaign=campaign,
                                  peer=sub.peer_ip, protocol=sub.reception_protocol)
        left = [r for r in sub.recipients if r not in refused]
        if not (sub.partial_ok and left):
            raise RecipientsSuppressed(refused)
        return left

    async def log_rejections(self, sender: str,
                             refused: Mapping[str, suppression_pb2.Suppression], *,
                             tenant: str, campaign: str, peer: str, protocol: str) -> None:
        """One ``Rejection`` record per suppressed recipient (best effort: the refusal stands
        whether or not its record could be written)."""
        if self._events is None or not refused:
            return
        records = [
            make_record("Rejection", message_id="", sender=sender, recipient=address,
                        queue=queue_name(address, tenant, campaign), code=550,
                        enhanced_code="5.7.1",
                        content=smtp_replies.parse_reply(
                            smtp_replies.suppressed(describe(entry))).text,
                        tenant=tenant, campaign=campaign, peer=peer,
                        reception_protocol=protocol,
                        suppression={"tenant": entry.tenant, "reason": entry.reason,
                                     "source": SOURCE_NAMES.get(entry.source, "manual"),
                                     "created": entry.created_unix_ms // 1000 or None})
            for address, entry in refused.items()
        ]
        try:
            await self._events.write(records)
        except Exception:
            log.exception("writing %d Rejection events failed", len(records))

    async def _enqueue(self, meta: common_pb2.MessageMeta) -> None:
        with tracing.step("enqueue") as span:
            if not await self._enqueuer.enqueue(meta):
                span.set_attribute("petrel.enqueue.deferred", True)


def reception_records(meta: common_pb2.MessageMeta) -> list[dict[str, Any]]:
    """One ``Reception`` record per recipient of a message about to be stored."""
    return [
        make_record("Reception", message_id=meta.id, sender=meta.sender, recipient=r.address,
                    queue=queue_name(r.address, meta.tenant, meta.campaign), size=meta.size,
                    code=250, enhanced_code="2.0.0", content="Message accepted for delivery",
                    tenant=meta.tenant, campaign=meta.campaign,
                    trace_context=meta.trace_context, meta=meta.meta,
                    created_ms=meta.created_unix_ms, peer=meta.peer_address,
                    reception_protocol=meta.reception_protocol)
        for r in meta.recipients
    ]
