"""The spool's asynchronous face: group commit of writes and reads off the event loop.

``Spool.write(op)`` queues the operation with every other write arriving meanwhile (from any
stream) and returns its result once the batch holding it has been written and synced by the
backend in the single writer thread. Reads run on a small reader pool beside the writer.
A backend failure raises from ``write``/``get``/``scan``; ``status_for_error`` says which gRPC
status the caller should see.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc

from petrel.batching import GroupCommitter
from spool.backend import Op, OpResult, SpoolBackend, StoredMessage

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


class Spool:
    def __init__(self, backend: SpoolBackend, *, max_batch: int = 1024, max_delay: float = 0.0,
                 read_workers: int = 2) -> None:
        self.backend = backend
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="spool-writer")
        self._readers = ThreadPoolExecutor(read_workers, thread_name_prefix="spool-reader")
        self._committer: GroupCommitter[Op, OpResult] = GroupCommitter(
            self._flush, max_batch=max_batch, max_delay=max_delay)

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
        try:
            return await loop.run_in_executor(self._writer, self.backend.write, ops)
        except Exception as exc:
            log.warning("spool write of %d operations failed: %s", len(ops), exc)
            raise

    async def write(self, op: Op) -> OpResult:
        return await self._committer.submit(op)

    async def get(self, message_id: str, want_body: bool = True) -> StoredMessage | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self.backend.get, message_id, want_body)

    async def scan(self, after_id: str, limit: int) -> list[bytes]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self.backend.scan, after_id, limit)

    async def healthy(self) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self.backend.health)

    def count(self) -> int:
        return self.backend.count()

    async def close(self) -> None:
        """Stop accepting writes, let the running batch finish, then close the backend."""
        await self._committer.close()
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._readers.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        self.backend.close()
