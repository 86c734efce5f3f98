"""The egress side of ``SchedulerService.Dispatch``: credit-based pull of delivery tasks.

Protocol: open the stream, send ``hello{worker_id}``, then ``credit{n}`` for the tasks this
worker can take (``max_inflight`` minus deliveries still running). Each task received runs
concurrently; when it ends its ``result`` is sent, followed by ``credit{1}``, so the scheduler
never has more tasks outstanding here than the worker granted. Results and credits waiting to
be sent at the same moment go as one ``report`` message; the hello asks for task batches.

* The stream breaks: unsent work is dropped (the scheduler re-dispatches whatever it had
  handed out on that stream). Deliveries already running finish, but their results are
  dropped; each returns its credit on the next stream. Reconnect with jittered exponential
  backoff (``BACKOFF_INITIAL`` doubling to ``BACKOFF_MAX``, reset after a healthy stream).
* ``stop`` (SIGTERM): no more credit; tasks that arrive are ignored; running deliveries get
  ``drain_timeout`` to finish and have their results sent; then the stream is half-closed and,
  after a short wait for the scheduler to close its side, cancelled. Deliveries still running
  after the bound are cancelled (the scheduler re-dispatches them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from petrel.events import trace_id_of
from petrel.faults import fault_point
from petrel.rpc import Pacer, paced_batches
from petrel.v1 import scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger(__name__)

# Results and credit are off the delivery path: a busy stream batches what ends in this time.
REPORT_LINGER = 0.010

BACKOFF_INITIAL = 0.2
BACKOFF_MAX = 5.0
HEALTHY_STREAM_SECONDS = 10.0
CLOSE_WAIT = 2.0

RunTask = Callable[[scheduler_pb2.DeliveryTask], Awaitable[scheduler_pb2.DeliveryResult]]


class _Stream:
    """One Dispatch call: its outgoing queue and whether it still takes requests and work."""

    def __init__(self) -> None:
        self.outbox: asyncio.Queue[scheduler_pb2.DispatchRequest | None] = asyncio.Queue()
        self.alive = True
        self.accepting = True

    def send(self, request: scheduler_pb2.DispatchRequest) -> bool:
        if not self.alive:
            return False
        self.outbox.put_nowait(request)
        return True

    def close(self) -> None:
        if self.alive:
            self.alive = False
            self.outbox.put_nowait(None)

    async def requests(self) -> AsyncIterator[scheduler_pb2.DispatchRequest]:
        """The stream's messages: results and credits waiting at the same time travel
        together as one ``report``; under load the stream holds each report ``REPORT_LINGER``
        so that it carries the results of that time (``petrel.rpc.Pacer``)."""
        async for ready in paced_batches(self.outbox, Pacer(REPORT_LINGER)):
            for message in coalesce(ready):
                yield message


def coalesce(requests: list[scheduler_pb2.DispatchRequest],
             ) -> list[scheduler_pb2.DispatchRequest]:
    """``requests`` with every ``result`` and ``credit`` folded into one ``report`` (results
    in order, credits summed) that takes the place of the first of them; others stay as they
    are. The scheduler applies a report's credit after its results."""
    out: list[scheduler_pb2.DispatchRequest] = []
    report: scheduler_pb2.DispatchReport | None = None
    for request in requests:
        kind = request.WhichOneof("kind")
        if kind not in ("result", "credit"):
            out.append(request)
            continue
        if report is None:
            message = scheduler_pb2.DispatchRequest(report=scheduler_pb2.DispatchReport())
            out.append(message)
            report = message.report
        if kind == "result":
            report.results.append(request.result)
        else:
            report.credit += request.credit
    return out


class DispatchWorker:
    def __init__(self, stub: scheduler_pb2_grpc.SchedulerServiceStub, run_task: RunTask,
                 worker_id: str, max_inflight: int, drain_timeout: float = 8.0) -> None:
        self.stub = stub
        self.run_task = run_task
        self.worker_id = worker_id
        self.max_inflight = max_inflight
        self.drain_timeout = drain_timeout
        self.streams_opened = 0
        self.results_sent = 0
        self.results_dropped = 0
        self._stream: _Stream | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._got_task = False

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def run(self, stop: asyncio.Event) -> None:
        """Take work until ``stop`` is set, then drain and return."""
        backoff = BACKOFF_INITIAL
        while not stop.is_set():
            started = time.monotonic()
            self._got_task = False
            try:
                await self._serve_stream(stop)
            except Exception:
                log.exception("dispatch stream failed")
            if stop.is_set():
                break
            if self._got_task or time.monotonic() - started > HEALTHY_STREAM_SECONDS:
                backoff = BACKOFF_INITIAL
            delay = backoff * random.uniform(0.5, 1.0)
            backoff = min(backoff * 2, BACKOFF_MAX)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        await self._finish_running()

    async def _serve_stream(self, stop: asyncio.Event) -> None:
        stream = _Stream()
        call = self.stub.Dispatch(stream.requests())
        self.streams_opened += 1
        self._stream = stream
        stream.send(scheduler_pb2.DispatchRequest(
            hello=scheduler_pb2.WorkerHello(worker_id=self.worker_id,
                                            accepts_task_batches=True)))
        credit = self.max_inflight - len(self._running)
        if credit > 0:
            stream.send(scheduler_pb2.DispatchRequest(credit=credit))
        reader = asyncio.create_task(self._read(call, stream), name="dispatch-reader")
        stopping = asyncio.create_task(stop.wait(), name="dispatch-stop")
        try:
            await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():
                stream.accepting = False
                log.info("stopping: draining %d deliveries", len(self._running))
                await self._finish_running()
                stream.close()
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(reader), CLOSE_WAIT)
        finally:
            stream.accepting = False
            stream.close()
            if self._stream is stream:
                self._stream = None
            stopping.cancel()
            if not reader.done():
                reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            call.cancel()

    async def _read(self, call: grpc.aio.StreamStreamCall, stream: _Stream) -> None:
        try:
            async for response in call:
                tasks = response.tasks or ([response.task] if response.HasField("task") else [])
                for task in tasks:
                    if not stream.accepting:
                        log.debug("ignoring task %s: stopping", task.task_id)
                        continue
                    self._got_task = True
                    self._start(task, stream)
            if stream.accepting:
                log.warning("dispatch stream closed by the scheduler")
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                log.warning("dispatch stream failed: %s %s", exc.code().name, exc.details())

    def _start(self, task: scheduler_pb2.DeliveryTask, stream: _Stream) -> None:
        job = asyncio.create_task(self._deliver(task, stream), name=f"deliver-{task.task_id}")
        self._running.add(job)
        job.add_done_callback(self._running.discard)

    async def _deliver(self, task: scheduler_pb2.DeliveryTask, stream: _Stream) -> None:
        try:
            result = await self.run_task(task)
        except Exception:
            # run_task turns every failure into a result, so this is a bug; without a result
            # the scheduler re-dispatches the task after its task_timeout.
            log.exception("task %s ended without a result", task.task_id)
        else:
            if any(r.outcome == scheduler_pb2.DELIVERY_OUTCOME_DELIVERED
                   for r in result.recipients):
                fault_point("egress.after_delivery")
            self._report(task, result, stream)
        current = self._stream
        if current is not None and current.accepting:
            current.send(scheduler_pb2.DispatchRequest(credit=1))

    def _report(self, task: scheduler_pb2.DeliveryTask, result: scheduler_pb2.DeliveryResult,
                stream: _Stream) -> None:
        if stream is self._stream and stream.send(scheduler_pb2.DispatchRequest(result=result)):
            self.results_sent += 1
            return
        self.results_dropped += 1
        log.info("result of task %s dropped: its dispatch stream is gone", task.task_id,
                 extra={"message_id": task.message_id,
                        "trace_id": trace_id_of(task.trace_context)})

    async def _finish_running(self) -> None:
        """Wait up to ``drain_timeout`` for running deliveries, then cancel the rest."""
        if not self._running:
            return
        running = set(self._running)
        _, pending = await asyncio.wait(running, timeout=self.drain_timeout)
        for job in pending:
            job.cancel()
        if pending:
            log.warning("cancelled %d deliveries still running after %.1fs", len(pending),
                        self.drain_timeout)
            await asyncio.gather(*pending, return_exceptions=True)
