"""Hard bounces go to the suppression list once their Bounce records are on disk.

``bounce_suppressions(records, config, now_ms)`` picks, from the records of a finished
batch, the permanent failures (``Bounce``, code 5xx) whose category is one of
``bounce.suppress_categories`` and makes one entry each, for the message's tenant (``""``,
mail without a tenant, is the global list). ``Suppressor`` sends them to
``SuppressionService.AddSuppressions`` in the background, batched, with bounded retries: the
list is advisory and the Bounce record is already durable, so dispositions never wait for
it. After ``MAX_ATTEMPTS`` failures (or with ``MAX_BACKLOG`` entries waiting) entries are
dropped, logged and counted; the next message to such an address bounces again and is
offered again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import grpc

from petrel.config import BounceConfig
from petrel.v1 import suppression_pb2, suppression_pb2_grpc
from scheduler import metrics

log = logging.getLogger(__name__)

MAX_BACKLOG = 10_000
MAX_BATCH = 1_000
MAX_ATTEMPTS = 5
RETRY_INITIAL = 1.0
RETRY_MAX = 30.0


def bounce_suppressions(records: Iterable[Mapping[str, Any]], config: BounceConfig,
                        now_ms: int) -> list[suppression_pb2.Suppression]:
    if not config.suppress_bounces:
        return []
    categories = set(config.suppress_categories)
    expires = now_ms + int(config.suppression_expiry * 1000) if config.suppression_expiry else 0
    out = []
    for record in records:
        response = record.get("response") or {}
        if (record.get("type") != "Bounce" or int(response.get("code") or 0) < 500
                or record.get("bounce_classification") not in categories
                or not _plain_address(str(record.get("recipient") or ""))):
            continue
        enhanced = response.get("enhanced_code") or {}
        status = (f"{enhanced['class']}.{enhanced['subject']}.{enhanced['detail']} "
                  if enhanced else "")
        out.append(suppression_pb2.Suppression(
            address=record["recipient"], tenant=record.get("tenant") or "",
            reason=record["bounce_classification"],
            source=suppression_pb2.SUPPRESSION_SOURCE_BOUNCE, expires_unix_ms=expires,
            message_id=record.get("id") or "",
            detail=f"{response.get('code')} {status}{response.get('content') or ''}"[:1000]))
    return out


def _plain_address(address: str) -> bool:
    """What the list accepts (anything else would fail the whole batch)."""
    return ("@" in address.strip("@") and len(address) <= 320
            and all(ch.isprintable() and not ch.isspace() for ch in address))


class Suppressor:
    def __init__(self, channel: grpc.aio.Channel, config: BounceConfig,
                 deadline: float = 5.0) -> None:
        self._stub = suppression_pb2_grpc.SuppressionServiceStub(channel)
        self.config = config
        self.deadline = deadline
        self._backlog: list[suppression_pb2.Suppression] = []
        self._wake = asyncio.Event()

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    def observe(self, records: Iterable[Mapping[str, Any]], now_ms: int) -> None:
        """Queue the entries ``records`` call for (never blocks)."""
        entries = bounce_suppressions(records, self.config, now_ms)
        room = MAX_BACKLOG - len(self._backlog)
        if len(entries) > room:
            log.warning("suppression backlog full: %d entries dropped", len(entries) - room)
            metrics.SUPPRESSIONS.labels("dropped").inc(len(entries) - room)
            entries = entries[:max(room, 0)]
        if entries:
            self._backlog.extend(entries)
            self._wake.set()

    async def run(self) -> None:
        """Send the backlog until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._backlog:
                batch, self._backlog = self._backlog[:MAX_BATCH], self._backlog[MAX_BATCH:]
                await self._send(batch)

    async def _send(self, batch: list[suppression_pb2.Suppression]) -> None:
        delay = RETRY_INITIAL
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                await self._stub.AddSuppressions(
                    suppression_pb2.AddSuppressionsRequest(entries=batch), timeout=self.deadline)
            except (TimeoutError, grpc.aio.AioRpcError) as exc:
                detail = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "timeout"
                if attempt == MAX_ATTEMPTS or (isinstance(exc, grpc.aio.AioRpcError)
                                               and exc.code() in _PERMANENT):
                    log.warning("suppression list unavailable (%s): %d hard bounces not "
                                "suppressed (first %s)", detail, len(batch), batch[0].address)
                    metrics.SUPPRESSIONS.labels("dropped").inc(len(batch))
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            metrics.SUPPRESSIONS.labels("added").inc(len(batch))
            log.info("suppressed %d hard-bounced recipients (first %s)", len(batch),
                     batch[0].address)
            return


_PERMANENT = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED,
                        grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED})
