"""The spool's asynchronous face: group commit of writes and reads off the event loop.

``Spool.write(op)`` queues the operation with every other write arriving meanwhile (from any
stream) and returns its result once the batch holding it has been written and synced by the
backend in the single writer thread. In the same thread, right after that commit, the event
records carried by the batch's newly stored messages (``PutOp.records``: their Receptions) are
appended to the spool's event log and fsynced; a failure there is logged and does not fail
the writes, which are already durable (the records are then missing, not late).
Reads run on a small reader pool beside the writer, the reads that arrive together in one
hand-off.
A backend failure raises from ``write``/``get``/``scan``; ``status_for_error`` says which gRPC
status the caller should see.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from petrel.batching import GroupCommitter
from petrel.events import EventLog
from petrel.faults import fault_point
from spool import metrics, tracing
from spool.backend import Op, OpResult, PutOp, SpoolBackend, StoredMessage

log = logging.getLogger(__name__)


def status_for_error(exc: BaseException) -> grpc.StatusCode:
    """RESOURCE_EXHAUSTED when the store is out of space, UNAVAILABLE for anything else: the
    caller may retry later (elsewhere) and must not treat the write as done."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    text = str(exc).lower()
    if "no space" in text or "space limit" in text:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return grpc.StatusCode.UNAVAILABLE


class FreeSpaceGuard:
    """Refuses new messages while the filesystem under ``path`` has less than ``min_free``
    bytes free (checked at most every ``interval`` seconds). Refusing early keeps RocksDB away
    from ENOSPC, and accepting resumes by itself once space returns."""

    def __init__(self, path: Path | None, min_free: int, interval: float = 0.25) -> None:
        self.path, self.min_free, self.interval = path, min_free, interval
        self._checked = 0.0
        self._free = min_free

    def free_bytes(self) -> int:
        now = time.monotonic()
        if self.path is not None and now - self._checked > self.interval:
            stat = os.statvfs(self.path)
            self._free = stat.f_bavail * stat.f_frsize
            self._checked = now
        return self._free

    def check(self) -> None:
        if self.path is not None and self.min_free and self.free_bytes() < self.min_free:
            raise OSError(errno.ENOSPC, f"spool free space below {self.min_free} bytes")


class Spool:
    def __init__(self, backend: SpoolBackend, *, max_batch: int = 1024, max_delay: float = 0.0,
                 read_workers: int = 2, free_space: FreeSpaceGuard | None = None,
                 events: EventLog | None = None) -> None:
        self.backend = backend
        self.events = events
        self.free_space = free_space or FreeSpaceGuard(None, 0)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="spool-writer")
        self._readers = ThreadPoolExecutor(read_workers, thread_name_prefix="spool-reader")
        self._committer: GroupCommitter[Op, OpResult] = GroupCommitter(
            self._traced_flush, max_batch=max_batch, max_delay=max_delay)
        # id(op) -> the trace carrier of the message it writes, until its batch is flushed
        self._carriers: dict[int, Mapping[str, str]] = {}
        # Reads arriving together share one hop to a reader thread (a read of a recent
        # message is a memtable hit: the thread hand-off costs more than the read).
        self._read_group: GroupCommitter[tuple[str, bool], StoredMessage | Exception | None] = \
            GroupCommitter(self._read_many, max_batch=256)

    @property
    def commits(self) -> int:
        """Synced write batches so far."""
        return self._committer.batches

    @property
    def committed_writes(self) -> int:
        """Operations carried by those batches."""
        return self._committer.items

    async def _flush(self, ops: list[Op]) -> list[OpResult]:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._writer, self._commit, ops)
        except Exception as exc:
            metrics.ERRORS.labels("write").inc()
            log.warning("spool write of %d operations failed: %s", len(ops), exc)
            raise
        metrics.committed(ops, time.perf_counter() - started)
        fault_point("spool.after_commit")
        return results

    def _commit(self, ops: list[Op]) -> list[OpResult]:
        """The writer thread's work for one batch: the backend's synced write, then the
        records of the messages it stored."""
        results = self.backend.write(ops)
        records = b"".join(op.records for op, result in zip(ops, results, strict=True)
                           if isinstance(op, PutOp) and op.records and not result.duplicate)
        if records and self.events is not None:
            try:
                self.events.append(records)
            except Exception:
                metrics.ERRORS.labels("events").inc()
                log.exception("appending %d bytes of event records failed", len(records))
        return results

    async def _traced_flush(self, ops: list[Op]) -> list[OpResult]:
        carriers = [self._carriers.pop(id(op), None) for op in ops]
        with tracing.commit_span(len(ops), carriers, self.backend.name):
            return await self._flush(ops)

    async def write(self, op: Op, trace_context: Mapping[str, str] | None = None) -> OpResult:
        """Write ``op`` in the next batch; ``trace_context`` (the message's stored carrier)
        is linked from that batch's span."""
        result = (await self.write_many([op], [trace_context]))[0]
        if isinstance(result, Exception):
            raise result
        return result

    async def write_many(self, ops: Sequence[Op],
                         trace_contexts: Sequence[Mapping[str, str] | None],
                         ) -> list[OpResult | Exception]:
        """``write`` for several operations at once (one stream message's): each one's
        result, or the exception that failed it. Puts are refused with ``OSError(ENOSPC)``
        below the free-space floor."""
        if any(isinstance(op, PutOp) for op in ops):
            try:
                self.free_space.check()
            except OSError as exc:
                return [exc] * len(ops)
        for op, trace_context in zip(ops, trace_contexts, strict=True):
            if trace_context:
                self._carriers[id(op)] = trace_context
        try:
            return await self._committer.submit_many(ops)
        finally:
            for op in ops:
                self._carriers.pop(id(op), None)

    async def get(self, message_id: str, want_body: bool = True) -> StoredMessage | None:
        result = (await self.get_many([(message_id, want_body)]))[0]
        if isinstance(result, Exception):
            raise result
        return result

    async def get_many(self, reads: Sequence[tuple[str, bool]],
                       ) -> list[StoredMessage | Exception | None]:
        """Several ``get``s at once (``(message_id, want_body)`` each): each message, ``None``
        when it is not stored, or the exception that failed its read."""
        metrics.READS.labels("get").inc(len(reads))
        results: list[StoredMessage | Exception | None] = []
        for result in await self._read_group.submit_many(reads):
            if isinstance(result, Exception):
                metrics.ERRORS.labels("read").inc()
            results.append(result)
        return results

    async def _read_many(self, reads: list[tuple[str, bool]],
                         ) -> list[StoredMessage | Exception | None]:
        """Each read's message, or its own exception (one failed read fails only itself)."""
        def read_all() -> list[StoredMessage | Exception | None]:
            results: list[StoredMessage | Exception | None] = []
            for message_id, want_body in reads:
                try:
                    results.append(self.backend.get(message_id, want_body))
                except Exception as exc:
                    results.append(exc)
            return results

        return await asyncio.get_running_loop().run_in_executor(self._readers, read_all)

    async def scan(self, after_id: str, limit: int) -> list[tuple[str, bytes]]:
        loop = asyncio.get_running_loop()
        metrics.READS.labels("scan").inc()
        try:
            return await loop.run_in_executor(self._readers, self.backend.scan, after_id, limit)
        except Exception:
            metrics.ERRORS.labels("scan").inc()
            raise

    async def healthy(self) -> bool:
        loop = asyncio.get_running_loop()
        healthy = await loop.run_in_executor(self._readers, self.backend.health)
        if not healthy:
            metrics.ERRORS.labels("health").inc()
        return healthy

    def count(self) -> int:
        return self.backend.count()

    async def close(self) -> None:
        """Stop accepting writes, let the running batch finish, then close the backend."""
        await self._committer.close()
        await self._read_group.close()
        await asyncio.to_thread(self._shutdown)
        if self.events is not None:
            await self.events.close()

    def _shutdown(self) -> None:
        self._readers.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        self.backend.close()
