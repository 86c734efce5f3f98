"""Durable writes through ``SpoolService.PutMessages``.

``SpoolWriter.put`` returns only once the spool acknowledged the write (and the event records
sent with it) as synced, or raises
``StoreFailed`` carrying the gRPC code ingress answers with: ``RESOURCE_EXHAUSTED`` when the
spool reports it is full, ``UNAVAILABLE`` for everything else (spool down, stream broken,
no answer within the deadline, any other per-item error).

When the outcome is unknown (no answer in time, or the stream broke after the request was
sent) the client was told to try again, so a write that lands late would become a duplicate.
Such messages are withdrawn: a background task asks the spool to remove the id a few times
with backoff until the spool confirms a removal or the attempts run out. Messages carrying an
idempotency key are left alone: the client's retry with the same key finds the original.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

import grpc

from petrel.events import trace_id_of
from petrel.rpc import StreamBroken, StreamCaller
from petrel.v1 import common_pb2, spool_pb2, spool_pb2_grpc

log = logging.getLogger(__name__)


# A put that finds earlier puts unanswered waits for them (at most this long) and then goes
# with every put queued meanwhile: the spool would hold it for its next group commit anyway.
PUT_LINGER = 0.010


class StoreFailed(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class SpoolWriter:
    def __init__(self, channel: grpc.aio.Channel, deadline: float, *,
                 max_pending: int = 4096) -> None:
        stub = spool_pb2_grpc.SpoolServiceStub(channel)
        self._caller: StreamCaller[spool_pb2.PutMessageRequest, spool_pb2.PutMessageResponse] = \
            StreamCaller(stub.PutMessageBatches, max_pending=max_pending, name="spool-put",
                         batch=spool_pb2.PutMessageBatch, linger=PUT_LINGER)
        self._deadline = deadline
        self._withdrawals = Withdrawals(stub, deadline)

    async def put(self, meta: common_pb2.MessageMeta, body: bytes, records: bytes = b""
                  ) -> spool_pb2.PutMessageResponse:
        """Store the message; ``records`` (event JSON lines) are written by the spool with it
        and acknowledged together."""
        request = spool_pb2.PutMessageRequest(meta=meta, body=body, records=records)
        try:
            response = await self._caller.call(request, timeout=self._deadline)
        except TimeoutError as exc:
            self._withdrawals.add(meta)
            raise StoreFailed(grpc.StatusCode.UNAVAILABLE,
                              f"spool did not acknowledge within {self._deadline:g}s") from exc
        except StreamBroken as exc:
            self._withdrawals.add(meta)
            code = (exc.code if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                    else grpc.StatusCode.UNAVAILABLE)
            raise StoreFailed(code, f"spool unavailable: {exc}") from exc
        if response.status.code != grpc.StatusCode.OK.value[0]:
            full = response.status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if full else grpc.StatusCode.UNAVAILABLE
            log.warning("spool refused message %s: %s (code %d)", meta.id,
                        response.status.message, response.status.code,
                        extra={"message_id": meta.id,
                               "trace_id": trace_id_of(meta.trace_context)})
            raise StoreFailed(code, f"spool refused the write: {response.status.message}")
        return response

    @property
    def withdrawals_pending(self) -> int:
        return self._withdrawals.pending

    async def close(self) -> None:
        await self._withdrawals.close()
        await self._caller.close()


class Withdrawals:
    """Background removal of writes whose outcome is unknown (see the module docstring)."""

    DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
    MAX_PENDING = 10_000

    def __init__(self, stub: spool_pb2_grpc.SpoolServiceStub, deadline: float) -> None:
        self._caller: StreamCaller[spool_pb2.UpdateMessageRequest,
                                   spool_pb2.UpdateMessageResponse] = \
            StreamCaller(stub.UpdateMessageBatches, name="spool-withdraw",
                         batch=spool_pb2.UpdateMessageBatch)
        self._deadline = deadline
        self._tasks: collections.OrderedDict[str, asyncio.Task[None]] = \
            collections.OrderedDict()

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def add(self, meta: common_pb2.MessageMeta) -> None:
        if meta.idempotency_key or meta.id in self._tasks:
            return
        if len(self._tasks) >= self.MAX_PENDING:
            _, oldest = self._tasks.popitem(last=False)
            oldest.cancel()
        task = asyncio.create_task(self._withdraw(meta.id), name="spool-withdraw")
        self._tasks[meta.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(meta.id, None))

    async def _withdraw(self, message_id: str) -> None:
        request = spool_pb2.UpdateMessageRequest(remove_id=message_id)
        for delay in self.DELAYS:
            await asyncio.sleep(delay)
            try:
                response = await self._caller.call(request, timeout=self._deadline)
            except (TimeoutError, StreamBroken):
                continue
            if response.status.code == 0 and response.found:
                log.info("withdrew %s, written after its deadline", message_id,
                         extra={"message_id": message_id})
                return
        log.debug("%s was not found to withdraw; it was never stored", message_id,
                  extra={"message_id": message_id})

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._caller.close()
