"""The scheduler's side of the spool: enumerate metadata, write state back, remove messages.

``scan`` walks ``ScanMessages`` in id order and resumes after the last id it saw when the
stream fails or its deadline passes, so a long scan survives a spool restart.

``SpoolWriter`` owns every ``UpdateMessages`` call. Callers hand it the newest metadata of a
message (``replace``) or its final removal (``remove``) and go on; the writer sends them over
one multiplexed stream (the spool group-commits concurrent updates), each with a deadline, and
keeps retrying with backoff while the spool is down. Updates of one message are coalesced:
only its newest state is pending, so memory stays bounded by the number of messages, and
updates of one message are never in flight twice at once (no reordering).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from petrel.rpc import StreamBroken, StreamCaller
from petrel.v1 import common_pb2, spool_pb2, spool_pb2_grpc

log = logging.getLogger(__name__)

SCAN_BATCH = 1000
SCAN_CALL_TIMEOUT = 120.0
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL,
             grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED}


class Backoff:
    """Exponential backoff between ``initial`` and ``maximum`` seconds."""

    def __init__(self, initial: float = 0.2, maximum: float = 5.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.current = initial

    def reset(self) -> None:
        self.current = self.initial

    async def wait(self) -> None:
        await asyncio.sleep(self.current)
        self.current = min(self.current * 2, self.maximum)


async def scan(stub: spool_pb2_grpc.SpoolServiceStub, after_id: str = "",
               batch_size: int = SCAN_BATCH, call_timeout: float = SCAN_CALL_TIMEOUT,
               ) -> AsyncIterator[list[common_pb2.MessageMeta]]:
    """Batches of metadata after ``after_id`` in id order, until the end of the spool.
    Retries (from where it stopped) while the spool is unavailable; never raises for that."""
    backoff = Backoff()
    while True:
        call = stub.ScanMessages(
            spool_pb2.ScanMessagesRequest(after_id=after_id, batch_size=batch_size),
            timeout=call_timeout)
        try:
            async for response in call:
                batch = list(response.messages)
                if batch:
                    after_id = batch[-1].id
                    yield batch
                    backoff.reset()
            return
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRYABLE:
                raise
            log.warning("spool scan interrupted (%s); resuming after %s",
                        exc.code().name, after_id or "the start")
            await backoff.wait()
        finally:
            call.cancel()


# Updates are off every message's critical path: on a busy stream each is held this long so
# that the updates of that time share a stream message and the spool's commit
# (``petrel.rpc.Pacer``); a hold that gathers two is worth it.
UPDATE_LINGER = 0.020


@dataclass(slots=True)
class _Op:
    meta: bytes | None  # serialized MessageMeta to store; None = remove the message


class SpoolWriter:
    def __init__(self, stub: spool_pb2_grpc.SpoolServiceStub, *, deadline: float = 10.0,
                 concurrency: int = 512) -> None:
        self._caller: StreamCaller[spool_pb2.UpdateMessageRequest,
                                   spool_pb2.UpdateMessageResponse] = StreamCaller(
            stub.UpdateMessageBatches, max_pending=concurrency, name="spool-update",
            batch=spool_pb2.UpdateMessageBatch, pace=UPDATE_LINGER, gather=2)
        self._deadline = deadline
        self._concurrency = concurrency
        self._latest: dict[str, _Op] = {}
        self._queue: deque[str] = deque()
        self._sending: set[str] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._backoff = Backoff()
        self._paused_until = 0.0
        self._runner: asyncio.Task[None] | None = None
        self.failures = 0

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="spool-writer")

    def replace(self, message_id: str, meta: bytes) -> None:
        self._submit(message_id, _Op(meta))

    def remove(self, message_id: str) -> None:
        self._submit(message_id, _Op(None))

    def pending(self, message_id: str) -> bool:
        return message_id in self._latest or message_id in self._sending

    def __len__(self) -> int:
        return len(self._latest) + len(self._sending)

    def _submit(self, message_id: str, op: _Op) -> None:
        first = message_id not in self._latest
        self._latest[message_id] = op
        if first and message_id not in self._sending:
            self._queue.append(message_id)
            self._wake.set()
        self._idle.clear()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                delay = self._paused_until - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._slots.acquire()
                message_id = self._queue.popleft()
                op = self._latest.pop(message_id, None)
                if op is None:
                    self._slots.release()
                    continue
                self._sending.add(message_id)
                task = asyncio.create_task(self._send(message_id, op))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            self._check_idle()

    def _check_idle(self) -> None:
        if not self._latest and not self._sending:
            self._idle.set()

    async def _send(self, message_id: str, op: _Op) -> None:
        request = spool_pb2.UpdateMessageRequest()
        if op.meta is None:
            request.remove_id = message_id
        else:
            request.replace_meta.ParseFromString(op.meta)
        done = False
        try:
            response = await self._caller.call(request, self._deadline)
            code = response.status.code
            if code == grpc.StatusCode.OK.value[0]:
                done = True
                self._backoff.reset()
            elif code == grpc.StatusCode.INVALID_ARGUMENT.value[0]:
                done = True  # retrying cannot help; the stored state stays as it was
                log.error("spool refused update of %s: %s", message_id, response.status.message,
                          extra={"message_id": message_id})
            else:
                log.warning("spool update of %s failed: %s", message_id, response.status.message)
        except (StreamBroken, TimeoutError) as exc:
            log.warning("spool update of %s not acknowledged: %s", message_id, exc or "timeout")
        finally:
            self._sending.discard(message_id)
            self._slots.release()
            if not done:
                self.failures += 1
                # The newest state wins; an older one is only retried when nothing replaced it.
                self._latest.setdefault(message_id, op)
                self._paused_until = time.monotonic() + self._backoff.current
                self._backoff.current = min(self._backoff.current * 2, self._backoff.maximum)
            if message_id in self._latest:
                self._queue.append(message_id)
                self._wake.set()
            self._check_idle()

    async def flush(self, timeout: float) -> bool:
        """Wait until every submitted update is acknowledged; False when ``timeout`` passed."""
        if not self._latest and not self._sending:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._caller.close()
