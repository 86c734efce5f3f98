"""The ``SchedulerService`` servicer: protobuf and stream handling around ``core.Scheduler``.

``Dispatch`` protocol (egress opens it): the first message is ``hello{worker_id}``; then the
worker sends ``credit{n}`` (it can take n more tasks) and ``result{...}`` per task, or both
together as ``report{results, credit}``. A worker whose hello says ``accepts_task_batches``
gets every task that was ready at once in one ``tasks`` message. The
scheduler never has more tasks outstanding on a stream than the credit granted minus tasks
already sent; a result does not return credit by itself. When the stream ends or breaks, the
worker's unanswered tasks go back to their ready queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc

from petrel.ids import is_message_id
from petrel.rpc import Pacer, abort_invalid, paced_batches
from petrel.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from scheduler import tracing
from scheduler.core import Scheduler, Worker

log = logging.getLogger(__name__)

# A busy dispatch stream holds each batch of tasks this long to fill it (``petrel.rpc.Pacer``).
DISPATCH_LINGER = 0.010

SERVICE_NAME = scheduler_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def _invalid(field: str, message: str) -> common_pb2.ItemStatus:
    return common_pb2.ItemStatus(code=INVALID, message=f"{field}: {message}", field=field)


def check_meta(meta: common_pb2.MessageMeta) -> common_pb2.ItemStatus | None:
    """Why ``meta`` cannot be queued, or None."""
    if not is_message_id(meta.id):
        return _invalid("meta.id", f"expected 32 lower-case hex digits, got {meta.id[:64]!r}")
    if not meta.recipients:
        return _invalid("meta.recipients", "no recipients")
    if any(not r.address for r in meta.recipients):
        return _invalid("meta.recipients", "empty recipient address")
    return None


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServiceServicer):
    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler

    async def Enqueue(self, request_iterator: AsyncIterator[scheduler_pb2.EnqueueRequest],
                      context: grpc.aio.ServicerContext,
                      ) -> AsyncIterator[scheduler_pb2.EnqueueResponse]:
        self._scheduler.request_reconcile()
        async for request in request_iterator:
            yield self._enqueue(request)

    async def EnqueueBatches(self, request_iterator: AsyncIterator[scheduler_pb2.EnqueueBatch],
                             context: grpc.aio.ServicerContext,
                             ) -> AsyncIterator[scheduler_pb2.EnqueueResponseBatch]:
        # A new enqueue stream may be a restarted ingress whose last enqueues never came.
        self._scheduler.request_reconcile()
        async for batch in request_iterator:
            yield scheduler_pb2.EnqueueResponseBatch(
                items=[self._enqueue(request) for request in batch.items])

    def _enqueue(self, request: scheduler_pb2.EnqueueRequest) -> scheduler_pb2.EnqueueResponse:
        response = scheduler_pb2.EnqueueResponse(seq=request.seq, id=request.meta.id)
        problem = check_meta(request.meta)
        if problem is not None:
            response.status.CopyFrom(problem)
        else:
            with tracing.enqueue_span(request.meta) as span:
                if not self._scheduler.enqueue(request.meta):
                    span.set_attribute("petrel.already_queued", True)
        return response

    async def Dispatch(self, request_iterator: AsyncIterator[scheduler_pb2.DispatchRequest],
                       context: grpc.aio.ServicerContext,
                       ) -> AsyncIterator[scheduler_pb2.DispatchResponse]:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None:
            return
        if first.WhichOneof("kind") != "hello":
            await abort_invalid(context, "hello", "the first message must be hello{worker_id}")
        worker = self._scheduler.add_worker(first.hello.worker_id or context.peer(),
                                            context.peer())
        reader = asyncio.create_task(self._read(worker, requests), name=f"dispatch {worker.id}")
        try:
            if not first.hello.accepts_task_batches:
                while (task := await worker.outbox.get()) is not None:
                    yield scheduler_pb2.DispatchResponse(task=task)
                return
            async for tasks in paced_batches(worker.outbox, Pacer(DISPATCH_LINGER)):
                yield scheduler_pb2.DispatchResponse(tasks=tasks)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader
            self._scheduler.remove_worker(worker)

    async def _read(self, worker: Worker,
                    requests: AsyncIterator[scheduler_pb2.DispatchRequest]) -> None:
        try:
            async for request in requests:
                kind = request.WhichOneof("kind")
                if kind == "credit":
                    self._scheduler.grant(worker, request.credit)
                elif kind == "result":
                    self._scheduler.on_result(worker, request.result)
                elif kind == "report":
                    for result in request.report.results:
                        self._scheduler.on_result(worker, result)
                    if request.report.credit:
                        self._scheduler.grant(worker, request.report.credit)
        except Exception as exc:
            log.info("dispatch stream of %s ended: %s", worker.id, exc)
        finally:
            worker.outbox.put_nowait(None)

    async def GetQueueSummary(self, request: scheduler_pb2.GetQueueSummaryRequest,
                              context: grpc.aio.ServicerContext,
                              ) -> scheduler_pb2.GetQueueSummaryResponse:
        return await self._scheduler.summary()

    async def InspectMessage(self, request: scheduler_pb2.InspectMessageRequest,
                             context: grpc.aio.ServicerContext,
                             ) -> scheduler_pb2.InspectMessageResponse:
        if not is_message_id(request.id):
            await abort_invalid(context, "id", "expected 32 lower-case hex digits")
        found = self._scheduler.inspect(request.id)
        if found is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"message {request.id} is not queued here")
            raise AssertionError("unreachable")
        meta, states = found
        return scheduler_pb2.InspectMessageResponse(meta=meta, domain_states=states)
