"""Hand durable messages to the scheduler (``SchedulerService.Enqueue``, metadata only).

``Enqueuer.enqueue`` never fails its caller: the message is already durable, and the
scheduler also rebuilds its queues from the spool. When the scheduler does not acknowledge in
time the metadata goes to a bounded backlog that a background task retries with backoff;
while the backlog is not empty new messages join it instead of waiting on a scheduler that is
known to be away. When the backlog is full the oldest entry is dropped (and logged): the
scheduler's reconciliation with the spool picks it up.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

import grpc

from petrel import telemetry
from petrel.events import trace_id_of
from petrel.rpc import StreamBroken, StreamCaller
from petrel.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger(__name__)

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
              grpc.StatusCode.DEADLINE_EXCEEDED.value[0], grpc.StatusCode.ABORTED.value[0]}


def _ids(meta: common_pb2.MessageMeta) -> dict[str, str]:
    return {"message_id": meta.id, "trace_id": trace_id_of(meta.trace_context)}


# Enqueues follow the 250 (the message is durable): on a busy stream each is held this long
# so that the enqueues of that time travel together (``petrel.rpc.Pacer``); nothing waits
# for them, so a hold that gathers two is worth it.
ENQUEUE_LINGER = 0.020


class Enqueuer:
    RETRY_BATCH = 256

    def __init__(self, channel: grpc.aio.Channel, deadline: float, *, max_backlog: int = 100_000,
                 min_backoff: float = 0.5, max_backoff: float = 30.0) -> None:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        self._caller: StreamCaller[scheduler_pb2.EnqueueRequest, scheduler_pb2.EnqueueResponse] = \
            StreamCaller(stub.EnqueueBatches, name="scheduler-enqueue",
                         batch=scheduler_pb2.EnqueueBatch, pace=ENQUEUE_LINGER,
                         gather=2)
        self._deadline = deadline
        self._backlog: collections.deque[common_pb2.MessageMeta] = collections.deque()
        self._max_backlog = max_backlog
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._retry_task: asyncio.Task[None] | None = None
        self._retrying = 0
        self.dropped = 0

    @property
    def backlog(self) -> int:
        """Messages waiting for a retry (including those being retried right now)."""
        return len(self._backlog) + self._retrying

    async def enqueue(self, meta: common_pb2.MessageMeta) -> bool:
        """Try to enqueue now; ``False`` when the message went to the retry backlog."""
        if not self._backlog and await self._send(meta):
            return True
        self._defer(meta)
        return False

    async def _send(self, meta: common_pb2.MessageMeta) -> bool:
        try:
            response = await self._caller.call(scheduler_pb2.EnqueueRequest(meta=meta),
                                               timeout=self._deadline)
        except (TimeoutError, StreamBroken) as exc:
            log.warning("enqueue of %s failed: %s", meta.id, exc or "timeout",
                        extra=_ids(meta))
            return False
        if response.status.code == 0:
            return True
        if response.status.code in _RETRYABLE:
            log.warning("scheduler deferred %s: %s", meta.id, response.status.message,
                        extra=_ids(meta))
            return False
        # A refusal that retrying cannot fix; the spool still holds the message and the
        # scheduler's reconciliation is the remedy.
        log.error("scheduler refused %s: %s (code %d)", meta.id, response.status.message,
                  response.status.code, extra=_ids(meta))
        return True

    def _defer(self, meta: common_pb2.MessageMeta) -> None:
        if len(self._backlog) >= self._max_backlog:
            lost = self._backlog.popleft()
            self.dropped += 1
            log.error("enqueue backlog full, leaving %s to scheduler reconciliation", lost.id,
                      extra=_ids(lost))
        self._backlog.append(meta)
        if self._retry_task is None or self._retry_task.done():
            with telemetry.detached():  # it retries many messages, not this one's trace
                self._retry_task = asyncio.create_task(self._retry(), name="enqueue-retry")

    async def _retry(self) -> None:
        backoff = self._min_backoff
        while self._backlog:
            await asyncio.sleep(backoff)
            while self._backlog:
                batch = [self._backlog.popleft()
                         for _ in range(min(self.RETRY_BATCH, len(self._backlog)))]
                self._retrying = len(batch)
                try:
                    sent = await asyncio.gather(*(self._send(meta) for meta in batch))
                finally:
                    self._retrying = 0
                failed = [meta for meta, ok in zip(batch, sent, strict=True) if not ok]
                if failed:
                    self._backlog.extendleft(reversed(failed))
                    backoff = min(backoff * 2, self._max_backoff)
                    break
                backoff = self._min_backoff
        log.info("enqueue backlog drained")

    async def close(self) -> None:
        if self._retry_task is not None:
            self._retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry_task
        if self._backlog:
            log.warning("%d messages not enqueued at shutdown; the scheduler will find them "
                        "in the spool", len(self._backlog))
        await self._caller.close()
