"""``SuppressionService`` servicer: the suppression list over gRPC.

Bad input fails the whole call with INVALID_ARGUMENT naming the field (``entries[2].address``,
``page_token``) in the details and the ``petrel-field`` trailer; a store failure with
UNAVAILABLE. Every write is synced to disk before the answer. Expired entries are never
reported; ``purge_loop`` deletes them in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import grpc

from bounce import metrics
from bounce.suppression import (
    DEFAULT_PAGE,
    MAX_BATCH,
    MAX_CHECK,
    MAX_PAGE,
    InvalidEntry,
    check_address,
    check_tenant,
    list_scope,
    normalize_entry,
)
from bounce.suppression_store import SuppressionStore
from petrel.rpc import abort_invalid
from petrel.suppression import SOURCE_NAMES
from petrel.v1 import suppression_pb2, suppression_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = suppression_pb2.DESCRIPTOR.services_by_name["SuppressionService"].full_name
PURGE_INTERVAL = 600.0
T = TypeVar("T")


def now_ms() -> int:
    return int(time.time() * 1000)


class SuppressionServicer(suppression_pb2_grpc.SuppressionServiceServicer):
    def __init__(self, store: SuppressionStore) -> None:
        self.store = store

    async def _store_call(self, context: grpc.aio.ServicerContext, fn: Callable[..., T],
                          *args: object) -> T:
        try:
            return await self.store.run(fn, *args)
        except Exception as exc:
            log.exception("suppression store failed")
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"suppression store: {exc}")
            raise AssertionError("unreachable") from exc

    async def AddSuppressions(self, request: suppression_pb2.AddSuppressionsRequest,
                              context: grpc.aio.ServicerContext,
                              ) -> suppression_pb2.AddSuppressionsResponse:
        if len(request.entries) > MAX_BATCH:
            await abort_invalid(context, "entries",
                                f"{len(request.entries)} entries, at most {MAX_BATCH}")
        now = now_ms()
        try:
            entries = [normalize_entry(e, f"entries[{i}]", now)
                       for i, e in enumerate(request.entries)]
        except InvalidEntry as exc:
            await abort_invalid(context, exc.field, exc.message)
            raise AssertionError("unreachable") from exc
        added, updated = await self._store_call(context, self.store.add, entries)
        for entry in entries:
            metrics.SUPPRESSIONS_ADDED.labels(SOURCE_NAMES[entry.source]).inc()
        if entries:
            log.info("suppression: %d added, %d updated (first: %s for %r, %s)", added,
                     updated, entries[0].address, entries[0].tenant,
                     SOURCE_NAMES[entries[0].source])
        return suppression_pb2.AddSuppressionsResponse(added=added, updated=updated)

    async def RemoveSuppressions(self, request: suppression_pb2.RemoveSuppressionsRequest,
                                 context: grpc.aio.ServicerContext,
                                 ) -> suppression_pb2.RemoveSuppressionsResponse:
        if len(request.keys) > MAX_BATCH:
            await abort_invalid(context, "keys", f"{len(request.keys)} keys, at most {MAX_BATCH}")
        try:
            keys = [(check_tenant(k.tenant, f"keys[{i}].tenant"),
                     check_address(k.address, f"keys[{i}].address"))
                    for i, k in enumerate(request.keys)]
        except InvalidEntry as exc:
            await abort_invalid(context, exc.field, exc.message)
            raise AssertionError("unreachable") from exc
        removed, missing = await self._store_call(context, self.store.remove, keys)
        metrics.SUPPRESSIONS_REMOVED.inc(removed)
        if removed:
            log.info("suppression: %d removed", removed)
        return suppression_pb2.RemoveSuppressionsResponse(
            removed=removed, not_found=[suppression_pb2.SuppressionKey(address=a, tenant=t)
                                        for t, a in missing])

    async def ListSuppressions(self, request: suppression_pb2.ListSuppressionsRequest,
                               context: grpc.aio.ServicerContext,
                               ) -> suppression_pb2.ListSuppressionsResponse:
        size = request.page_size or DEFAULT_PAGE
        if size > MAX_PAGE:
            await abort_invalid(context, "page_size", f"at most {MAX_PAGE}")
        try:
            scope = list_scope(request.tenant, request.all_tenants, request.address_prefix,
                               request.page_token)
        except InvalidEntry as exc:
            await abort_invalid(context, exc.field, exc.message)
            raise AssertionError("unreachable") from exc
        entries, token = await self._store_call(context, self.store.list, scope, size,
                                                now_ms())
        return suppression_pb2.ListSuppressionsResponse(entries=entries, next_page_token=token)

    async def CheckSuppressed(self, request: suppression_pb2.CheckSuppressedRequest,
                              context: grpc.aio.ServicerContext,
                              ) -> suppression_pb2.CheckSuppressedResponse:
        count = len(request.addresses)
        if count > MAX_CHECK:
            await abort_invalid(context, "addresses", f"{count} addresses, at most {MAX_CHECK}")
        try:
            check_tenant(request.tenant, "tenant")
        except InvalidEntry as exc:
            await abort_invalid(context, exc.field, exc.message)
        found = await self._store_call(context, self.store.check, request.tenant,
                                       list(request.addresses), now_ms())
        results = []
        for address, entry in zip(request.addresses, found, strict=True):
            metrics.SUPPRESSION_CHECKS.labels("clear" if entry is None else "suppressed").inc()
            results.append(suppression_pb2.SuppressionMatch(
                address=address, suppressed=entry is not None, entry=entry))
        return suppression_pb2.CheckSuppressedResponse(results=results)


async def purge_loop(store: SuppressionStore, interval: float = PURGE_INTERVAL) -> None:
    """Delete expired entries every ``interval`` seconds (runs until cancelled)."""
    while True:
        await asyncio.sleep(interval)
        try:
            purged = await store.run(store.purge_expired, now_ms())
        except Exception:
            log.exception("purging expired suppressions failed")
            continue
        if purged:
            metrics.SUPPRESSIONS_REMOVED.inc(purged)
            log.info("suppression: %d expired entries purged", purged)
