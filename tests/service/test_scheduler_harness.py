"""Real peers for the scheduler service tests (no tests here): a RocksDB spool server and a
scheduler running in-process on the test's loop, and a test egress worker that speaks the
Dispatch protocol as a real gRPC client."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from petrel.config import Config, load_config
from petrel.events import read_events
from petrel.ids import new_message_id
from petrel.rpc import StreamCaller, create_channel
from petrel.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc, spool_pb2, spool_pb2_grpc
from scheduler.main import SchedulerApp
from spool.main import serve as serve_spool
from tests.support.net import async_wait_for, free_port

TIMEOUT = 10.0
DELIVERED = scheduler_pb2.DELIVERY_OUTCOME_DELIVERED
TRANSIENT = scheduler_pb2.DELIVERY_OUTCOME_TRANSIENT_FAILURE
PERMANENT = scheduler_pb2.DELIVERY_OUTCOME_PERMANENT_FAILURE
PENDING = common_pb2.RECIPIENT_STATE_PENDING


def scheduler_config(tmp_path: Path, spool_port: int, routes: dict[str, str] | None = None,
                     **scheduler: Any) -> Config:
    """Fast retries, no jitter, the given per-domain routes (else one smarthost site)."""
    settings: dict[str, Any] = {"listen": "127.0.0.1:0", "retry_interval": 0.3,
                                "max_retry_interval": 2.0, "retry_jitter": 0.0,
                                "reconcile_interval": 3600.0, **scheduler}
    routing: dict[str, Any] = {"routes": routes} if routes else {"smarthost": "127.0.0.1:9"}
    return load_config(env={}, overrides={
        "data_dir": str(tmp_path), "log_level": "DEBUG",
        "spool": {"listen": f"127.0.0.1:{spool_port}", "address": f"127.0.0.1:{spool_port}",
                  "backend": "rocksdb"},
        "scheduler": settings, "routing": routing,
    })


class InProcessSpool:
    """The spool service (RocksDB under the config's data dir) on the test's loop, at a fixed
    port so it can be stopped and started again at the same address."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.address = config.spool.address
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._channel = create_channel(self.address)
        self.stub = spool_pb2_grpc.SpoolServiceStub(self._channel)
        self._put: StreamCaller[spool_pb2.PutMessageRequest, spool_pb2.PutMessageResponse] = \
            StreamCaller(self.stub.PutMessages, name="test-put")

    async def start(self) -> InProcessSpool:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(serve_spool(self.config, self._stop))
        await async_wait_for(self._answers, timeout=TIMEOUT, message="spool to serve")
        return self

    async def _answers(self) -> bool:
        assert self._task is not None
        if self._task.done():
            self._task.result()
        try:
            await self.stub.GetSpoolStats(spool_pb2.GetSpoolStatsRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return False
        return True

    async def stop(self) -> None:
        # our own open put stream would hold the server's graceful stop for its whole grace
        await self._put.close()
        if self._task is not None:
            self._stop.set()
            await self._task
            self._task = None

    async def close(self) -> None:
        await self.stop()
        await self._channel.close()

    async def put(self, meta: common_pb2.MessageMeta, body: bytes = b"Subject: t\r\n\r\nhi\r\n",
                  ) -> None:
        response = await self._put.call(spool_pb2.PutMessageRequest(meta=meta, body=body),
                                        TIMEOUT)
        assert response.status.code == 0, response.status.message

    async def get(self, message_id: str) -> common_pb2.MessageMeta | None:
        try:
            response = await self.stub.GetMessage(spool_pb2.GetMessageRequest(id=message_id),
                                                  timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return response.meta

    def gone(self, message_id: str) -> Callable[[], Awaitable[bool]]:
        """A predicate for ``async_wait_for``: the message is no longer stored."""
        async def check() -> bool:
            try:
                return await self.get(message_id) is None
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    return False  # a spool that is just coming back
                raise
        return check

    def holds(self, count: int) -> Callable[[], Awaitable[bool]]:
        """A predicate for ``async_wait_for``: exactly ``count`` messages are stored."""
        async def check() -> bool:
            return await self.count() == count
        return check

    async def count(self) -> int:
        stats = await self.stub.GetSpoolStats(spool_pb2.GetSpoolStatsRequest(), timeout=TIMEOUT)
        return int(stats.messages)


def make_meta(recipients: Iterable[str], *, sender: str = "sender@src.test", tenant: str = "",
              campaign: str = "", created_ms: int | None = None,
              schedules: Iterable[tuple[str, int, int]] = ()) -> common_pb2.MessageMeta:
    created = int(time.time() * 1000) if created_ms is None else created_ms
    meta = common_pb2.MessageMeta(
        id=new_message_id(created), sender=sender, tenant=tenant, campaign=campaign,
        created_unix_ms=created, size=20, reception_protocol="GRPC",
        trace_context={"traceparent": f"00-{'12' * 16}-{'34' * 8}-01"})
    for address in recipients:
        meta.recipients.add(address=address, state=PENDING)
    for domain, attempts, due in schedules:
        meta.schedules.add(domain=domain, attempts=attempts, due_unix_ms=due)
    return meta


class Enqueuer:
    """ingress's side of ``Enqueue``: one multiplexed stream."""

    def __init__(self, address: str) -> None:
        self._channel = create_channel(address)
        self.stub = scheduler_pb2_grpc.SchedulerServiceStub(self._channel)
        self._caller: StreamCaller[scheduler_pb2.EnqueueRequest, scheduler_pb2.EnqueueResponse] = \
            StreamCaller(self.stub.Enqueue, name="test-enqueue")

    async def enqueue(self, meta: common_pb2.MessageMeta) -> scheduler_pb2.EnqueueResponse:
        return await self._caller.call(scheduler_pb2.EnqueueRequest(meta=meta), TIMEOUT)

    async def summary(self) -> scheduler_pb2.GetQueueSummaryResponse:
        return await self.stub.GetQueueSummary(scheduler_pb2.GetQueueSummaryRequest(),
                                               timeout=TIMEOUT)

    async def inspect(self, message_id: str) -> scheduler_pb2.InspectMessageResponse:
        return await self.stub.InspectMessage(scheduler_pb2.InspectMessageRequest(id=message_id),
                                              timeout=TIMEOUT)

    async def close(self) -> None:
        await self._caller.close()
        await self._channel.close()


Decide = Callable[[scheduler_pb2.DeliveryTask], "list[tuple[str, int, int, str, str]]"]


class TestWorker:
    """An egress worker over a real Dispatch stream. ``tasks`` records every task received;
    ``outstanding`` those not yet answered. With ``auto`` set, it answers each task at once
    with ``auto(task)`` (per recipient: address, outcome, code, enhanced code,
    classification) and grants one credit back."""

    __test__ = False

    def __init__(self, address: str, worker_id: str, auto: Decide | None = None) -> None:
        self.worker_id = worker_id
        self._channel = create_channel(address)
        self._stub = scheduler_pb2_grpc.SchedulerServiceStub(self._channel)
        self._requests: asyncio.Queue[scheduler_pb2.DispatchRequest | None] = asyncio.Queue()
        self.tasks: list[scheduler_pb2.DeliveryTask] = []
        self.outstanding: dict[str, scheduler_pb2.DeliveryTask] = {}
        self.auto = auto
        self.ended: grpc.StatusCode | None = None
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()

    async def open(self, credit: int = 0) -> TestWorker:
        self._call = self._stub.Dispatch(self._outgoing())
        self._requests.put_nowait(scheduler_pb2.DispatchRequest(
            hello=scheduler_pb2.WorkerHello(worker_id=self.worker_id)))
        if credit:
            self.credit(credit)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _outgoing(self) -> AsyncIterator[scheduler_pb2.DispatchRequest]:
        while True:
            request = await self._requests.get()
            if request is None:
                return
            yield request

    async def _read(self) -> None:
        try:
            async for response in self._call:
                task = response.task
                self.tasks.append(task)
                self.outstanding[task.task_id] = task
                self._arrived.set()
                if self.auto is not None:
                    self.answer(task, self.auto(task))
                    self.credit(1)
            self.ended = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            self.ended = exc.code()

    def credit(self, amount: int) -> None:
        self._requests.put_nowait(scheduler_pb2.DispatchRequest(credit=amount))

    def answer(self, task: scheduler_pb2.DeliveryTask,
               recipients: list[tuple[str, int, int, str, str]]) -> None:
        self.outstanding.pop(task.task_id, None)
        result = scheduler_pb2.DeliveryResult(
            task_id=task.task_id, message_id=task.message_id, site=task.site,
            peer="sink [127.0.0.1]:25", egress_source="test-source")
        for address, outcome, code, enhanced, classification in recipients:
            result.recipients.add(recipient=address, outcome=outcome,  # type: ignore[arg-type]
                                  reply=common_pb2.SmtpReply(code=code, enhanced_code=enhanced,
                                                             text=f"reply {code}"),
                                  bounce_classification=classification)
        self._requests.put_nowait(scheduler_pb2.DispatchRequest(result=result))

    def answer_all(self, task: scheduler_pb2.DeliveryTask, outcome: int = DELIVERED,
                   code: int = 250, enhanced: str = "2.0.0", classification: str = "") -> None:
        self.answer(task, [(r, outcome, code, enhanced, classification)
                           for r in task.recipients])

    async def wait_tasks(self, count: int, timeout: float = TIMEOUT,
                         ) -> list[scheduler_pb2.DeliveryTask]:
        """Wait until ``count`` tasks in all arrived; returns them all."""
        await async_wait_for(lambda: len(self.tasks) >= count, timeout=timeout,
                             interval=0.01, message=f"{count} tasks at {self.worker_id}")
        return list(self.tasks)

    def break_stream(self) -> None:
        """The worker vanishes: its stream is cancelled without a goodbye."""
        self._call.cancel()

    async def close(self) -> None:
        self._requests.put_nowait(None)
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._channel.close()


def deliver_all(task: scheduler_pb2.DeliveryTask) -> list[tuple[str, int, int, str, str]]:
    return [(r, DELIVERED, 250, "2.0.0", "") for r in task.recipients]


def events(config: Config, record_type: str | None = None) -> list[dict[str, Any]]:
    if not config.events_dir.exists():
        return []
    found = read_events(config.events_dir)
    return [e for e in found if record_type is None or e["type"] == record_type]


async def wait_events(config: Config, record_type: str, count: int,
                      timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    await async_wait_for(lambda: len(events(config, record_type)) >= count, timeout=timeout,
                         message=f"{count} {record_type} events")
    return events(config, record_type)


class Harness:
    """A spool, a scheduler and an Enqueue client; workers are opened by the tests."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.spool = InProcessSpool(config)
        self.app: SchedulerApp | None = None
        self.client: Enqueuer | None = None
        self.workers: list[TestWorker] = []

    async def start_scheduler(self, wait_rebuilt: bool = True) -> SchedulerApp:
        self.app = SchedulerApp(self.config)
        await self.app.start()
        if wait_rebuilt:
            async with asyncio.timeout(TIMEOUT):
                await self.app.scheduler.rebuilt.wait()
        if self.client is not None:
            await self.client.close()
        self.client = Enqueuer(self.app.address)
        return self.app

    async def stop_scheduler(self) -> None:
        for worker in self.workers:
            await worker.close()
        self.workers.clear()
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.app is not None:
            await self.app.stop(grace=1.0)
            self.app = None

    async def worker(self, worker_id: str, credit: int = 0, auto: Decide | None = None,
                     ) -> TestWorker:
        assert self.app is not None
        worker = await TestWorker(self.app.address, worker_id, auto).open(credit)
        self.workers.append(worker)
        return worker

    async def store_and_enqueue(self, meta: common_pb2.MessageMeta) -> str:
        await self.spool.put(meta)
        assert self.client is not None
        response = await self.client.enqueue(meta)
        assert response.status.code == 0, response.status.message
        return meta.id

    async def summary(self) -> scheduler_pb2.GetQueueSummaryResponse:
        assert self.client is not None
        return await self.client.summary()


@contextlib.asynccontextmanager
async def harness(tmp_path: Path, start_scheduler: bool = True,
                  routes: dict[str, str] | None = None, **scheduler: Any,
                  ) -> AsyncIterator[Harness]:
    config = scheduler_config(tmp_path, free_port(), routes, **scheduler)
    running = Harness(config)
    await running.spool.start()
    try:
        if start_scheduler:
            await running.start_scheduler()
        yield running
    finally:
        await running.stop_scheduler()
        await running.spool.close()


def queues(summary: scheduler_pb2.GetQueueSummaryResponse,
           kind: int) -> dict[str, scheduler_pb2.QueueSummary]:
    return {q.name: q for q in summary.queues if q.kind == kind}
