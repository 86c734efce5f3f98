"""Batched scheduler streams against a real scheduler and spool (in-process, RocksDB):
``EnqueueBatches`` with per-item statuses, ``Dispatch`` task batches for workers whose hello
asks for them, ``report{results, credit}``, and one ``task`` per message for older workers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
import pytest

from petrel.rpc import StreamCaller, create_channel
from petrel.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from tests.service.test_scheduler_harness import (
    DELIVERED,
    TIMEOUT,
    Harness,
    harness,
    make_meta,
    queues,
    wait_events,
)
from tests.support.net import async_wait_for

READY = scheduler_pb2.QUEUE_KIND_READY
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


class RawWorker:
    """A Dispatch client that keeps every response message as received."""

    def __init__(self, address: str, worker_id: str, accepts_task_batches: bool) -> None:
        self.worker_id = worker_id
        self.accepts_task_batches = accepts_task_batches
        self._channel = create_channel(address)
        self._stub = scheduler_pb2_grpc.SchedulerServiceStub(self._channel)
        self._requests: asyncio.Queue[scheduler_pb2.DispatchRequest | None] = asyncio.Queue()
        self.messages: list[scheduler_pb2.DispatchResponse] = []
        self.ended: grpc.StatusCode | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self, credit: int) -> RawWorker:
        call = self._stub.Dispatch(self._outgoing())
        self.send(scheduler_pb2.DispatchRequest(hello=scheduler_pb2.WorkerHello(
            worker_id=self.worker_id, accepts_task_batches=self.accepts_task_batches)))
        self.send(scheduler_pb2.DispatchRequest(credit=credit))
        self._reader = asyncio.create_task(self._read(call))
        return self

    def send(self, request: scheduler_pb2.DispatchRequest) -> None:
        self._requests.put_nowait(request)

    async def _outgoing(self) -> AsyncIterator[scheduler_pb2.DispatchRequest]:
        while (request := await self._requests.get()) is not None:
            yield request

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:
        try:
            async for response in call:
                self.messages.append(response)
            self.ended = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            self.ended = exc.code()

    @property
    def tasks(self) -> list[scheduler_pb2.DeliveryTask]:
        return [task for message in self.messages
                for task in (message.tasks or [message.task])]

    def per_message(self) -> list[int]:
        return [len(message.tasks) for message in self.messages]

    async def wait_tasks(self, count: int) -> list[scheduler_pb2.DeliveryTask]:
        await async_wait_for(lambda: len(self.tasks) >= count, timeout=TIMEOUT, interval=0.01,
                             message=f"{count} tasks at {self.worker_id}")
        return self.tasks

    def report(self, tasks: Iterable[scheduler_pb2.DeliveryTask], credit: int) -> None:
        report = scheduler_pb2.DispatchReport(credit=credit)
        for task in tasks:
            result = report.results.add(task_id=task.task_id, message_id=task.message_id,
                                        site=task.site, peer="sink [127.0.0.1]:25")
            for address in task.recipients:
                result.recipients.add(recipient=address, outcome=DELIVERED,
                                      reply=common_pb2.SmtpReply(code=250, enhanced_code="2.0.0",
                                                                 text="ok"))
        self.send(scheduler_pb2.DispatchRequest(report=report))

    async def close(self) -> None:
        self._requests.put_nowait(None)
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._reader, TIMEOUT)
        await self._channel.close()


@contextlib.asynccontextmanager
async def raw_worker(h: Harness, worker_id: str, credit: int,
                     accepts_task_batches: bool) -> AsyncIterator[RawWorker]:
    assert h.app is not None
    worker = await RawWorker(h.app.address, worker_id, accepts_task_batches).open(credit)
    try:
        yield worker
    finally:
        await worker.close()


async def store_and_enqueue_batched(h: Harness, count: int) -> list[str]:
    """``count`` messages stored, then queued concurrently over one batched Enqueue stream
    (ingress's client); returns when all of them wait in a ready queue."""
    assert h.app is not None
    metas = [make_meta([f"r{n}@x.test"]) for n in range(count)]
    for meta in metas:
        await h.spool.put(meta)
    async with create_channel(h.app.address) as channel:
        stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
        caller: StreamCaller[scheduler_pb2.EnqueueRequest, scheduler_pb2.EnqueueResponse] = \
            StreamCaller(stub.EnqueueBatches, name="enqueue", batch=scheduler_pb2.EnqueueBatch)
        try:
            acks = await asyncio.gather(*(
                caller.call(scheduler_pb2.EnqueueRequest(meta=meta), TIMEOUT) for meta in metas))
        finally:
            await caller.close()
    assert [(a.status.code, a.id) for a in acks] == [(0, m.id) for m in metas]

    async def all_ready() -> bool:
        return sum(q.count for q in queues(await h.summary(), READY).values()) == count

    await async_wait_for(all_ready, timeout=TIMEOUT, message=f"{count} messages ready")
    return [meta.id for meta in metas]


async def ready_site(h: Harness) -> tuple[int, int]:
    (site,) = queues(await h.summary(), READY).values()
    return site.in_flight, site.count


async def test_enqueue_batch_answers_each_item(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        assert h.app is not None and h.client is not None
        good, other = make_meta(["a@x.test"]), make_meta(["b@x.test"])
        bad_id = make_meta(["c@x.test"])
        bad_id.id = "NOT-AN-ID"
        no_recipients = make_meta([])
        for meta in (good, other):
            await h.spool.put(meta)
        batch = scheduler_pb2.EnqueueBatch(items=[
            scheduler_pb2.EnqueueRequest(seq=1, meta=good),
            scheduler_pb2.EnqueueRequest(seq=2, meta=bad_id),
            scheduler_pb2.EnqueueRequest(seq=3, meta=other),
            scheduler_pb2.EnqueueRequest(seq=4, meta=no_recipients),
        ])

        async def requests() -> AsyncIterator[scheduler_pb2.EnqueueBatch]:
            yield batch

        async with create_channel(h.app.address) as channel:
            stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
            responses = [r async for r in stub.EnqueueBatches(requests(), timeout=TIMEOUT)]

        assert len(responses) == 1
        items = responses[0].items
        assert [(i.seq, i.id) for i in items] \
            == [(1, good.id), (2, "NOT-AN-ID"), (3, other.id), (4, no_recipients.id)]
        assert [i.status.code for i in items] == [0, INVALID, 0, INVALID]
        assert [i.status.field for i in items] == ["", "meta.id", "", "meta.recipients"]
        for meta in (good, other):
            assert (await h.client.inspect(meta.id)).meta.id == meta.id
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await h.client.inspect(no_recipients.id)
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND
        summary = await h.summary()
        assert sum(q.count for q in queues(summary, READY).values()) == 2


async def test_task_batches_and_reports(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        ids = await store_and_enqueue_batched(h, 8)
        async with raw_worker(h, "batched", credit=4, accepts_task_batches=True) as worker:
            first = await worker.wait_tasks(4)
            # all four were ready when the credit came: one stream message
            assert worker.per_message() == [4]
            assert not any(m.HasField("task") for m in worker.messages)
            assert await ready_site(h) == (4, 4)

            worker.report(first, credit=2)
            tasks = await worker.wait_tasks(6)
            assert worker.per_message() == [4, 2]
            delivered = await wait_events(h.config, "Delivery", 4)
            assert sorted(e["id"] for e in delivered) == sorted(t.message_id for t in first)
            for task in first:
                await async_wait_for(h.spool.gone(task.message_id), timeout=TIMEOUT,
                                     message=f"{task.message_id} removed from the spool")
            assert await ready_site(h) == (2, 2)

            # results alone return no credit
            worker.report(tasks[4:], credit=0)
            await wait_events(h.config, "Delivery", 6)
            await async_wait_for(lambda: h.app is not None and not h.app.scheduler.writer,
                                 message="spool updates written")
            assert await ready_site(h) == (0, 2)
            assert worker.per_message() == [4, 2]
            assert len({t.message_id for t in worker.tasks}) == 6
            assert {t.message_id for t in worker.tasks} <= set(ids)
        assert worker.ended == grpc.StatusCode.OK
        assert await h.spool.count() == 2


async def test_worker_without_the_flag_gets_one_task_per_message(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        ids = await store_and_enqueue_batched(h, 3)
        async with raw_worker(h, "classic", credit=3, accepts_task_batches=False) as worker:
            tasks = await worker.wait_tasks(3)
            assert len(worker.messages) == 3
            assert all(m.HasField("task") and not m.tasks for m in worker.messages)
            assert sorted(t.message_id for t in tasks) == sorted(ids)
            # the single-item protocol still works alongside: result, then credit
            for task in tasks:
                worker.send(scheduler_pb2.DispatchRequest(result=scheduler_pb2.DeliveryResult(
                    task_id=task.task_id, message_id=task.message_id, site=task.site,
                    recipients=[scheduler_pb2.RecipientResult(
                        recipient=r, outcome=DELIVERED,
                        reply=common_pb2.SmtpReply(code=250, enhanced_code="2.0.0"))
                        for r in task.recipients])))
            delivered = await wait_events(h.config, "Delivery", 3)
            assert sorted(e["id"] for e in delivered) == sorted(ids)
        await async_wait_for(h.spool.holds(0), timeout=TIMEOUT, message="spool emptied")
