"""Suppression checks at reception: which recipients the suppression list refuses.

``SuppressionChecker.check(tenant, addresses)`` asks ``SuppressionService.CheckSuppressed``
(one call for the addresses it has no fresh answer for) and returns the suppressed ones with
the entry that applies (the tenant's own, else a global one). Answers, suppressed or clear,
are cached for ``ttl`` seconds, at most ``size`` of them (least recently used go first), so
a removal or an addition reaches reception within ``ttl``.

The check fails open: when the service does not answer within ``deadline`` (down, slow,
unreachable), the recipients are let through, the failure is logged and counted
(``petrel_ingress_suppression_check_failures``), and for ``BACKOFF`` seconds the service is
not asked again, so an outage does not slow every transaction by a deadline. Refusing all mail
because a list is unreachable would turn a bounce-service outage into a full outage.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence

import grpc

from ingress import metrics
from petrel.suppression import address_key
from petrel.v1 import suppression_pb2, suppression_pb2_grpc

log = logging.getLogger(__name__)

MAX_PER_CALL = 1000
Entry = suppression_pb2.Suppression


class SuppressionChecker:
    BACKOFF = 5.0

    def __init__(self, channel: grpc.aio.Channel, *, ttl: float = 5.0, size: int = 100_000,
                 deadline: float = 1.0) -> None:
        self._stub = suppression_pb2_grpc.SuppressionServiceStub(channel)
        self.ttl = ttl
        self.size = size
        self.deadline = deadline
        self._cache: OrderedDict[tuple[str, str], tuple[float, Entry | None]] = OrderedDict()
        self._skip_until = 0.0

    def _cached(self, key: tuple[str, str], now: float) -> tuple[bool, Entry | None]:
        hit = self._cache.get(key)
        if hit is None or hit[0] <= now:
            return False, None
        self._cache.move_to_end(key)
        return True, hit[1]

    def remember(self, tenant: str, address: str, entry: Entry | None) -> None:
        """Cache an answer (also used when this process adds an entry itself)."""
        if self.size <= 0 or self.ttl <= 0:
            return
        key = (tenant, address_key(address))
        self._cache[key] = (time.monotonic() + self.ttl, entry)
        self._cache.move_to_end(key)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)

    async def check(self, tenant: str, addresses: Sequence[str]) -> dict[str, Entry]:
        """``{address: entry}`` for the suppressed ones among ``addresses``."""
        now = time.monotonic()
        found: dict[str, Entry] = {}
        missing: list[str] = []
        for address in addresses:
            known, entry = self._cached((tenant, address_key(address)), now)
            if not known:
                missing.append(address)
            elif entry is not None:
                found[address] = entry
        if not missing:
            return found
        if now < self._skip_until:
            metrics.SUPPRESSION_CHECK_FAILURES.labels("skipped").inc(len(missing))
            return found
        for start in range(0, len(missing), MAX_PER_CALL):
            chunk = missing[start:start + MAX_PER_CALL]
            try:
                response = await self._stub.CheckSuppressed(
                    suppression_pb2.CheckSuppressedRequest(tenant=tenant, addresses=chunk),
                    timeout=self.deadline)
            except (TimeoutError, grpc.aio.AioRpcError) as exc:
                detail = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "timeout"
                log.warning("suppression check unavailable (%s): %d recipients let through; "
                            "not asking again for %.0fs", detail, len(missing) - start,
                            self.BACKOFF)
                metrics.SUPPRESSION_CHECK_FAILURES.labels("unavailable").inc(
                    len(missing) - start)
                self._skip_until = time.monotonic() + self.BACKOFF
                break
            for address, result in zip(chunk, response.results, strict=False):
                entry = result.entry if result.suppressed else None
                self.remember(tenant, address, entry)
                if entry is not None:
                    found[address] = entry
        return found
