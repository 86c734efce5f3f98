"""Dispatch protocol against a real scheduler and spool: credit, per-site connection_limit,
fairness across workers, tasks put back when a worker's stream breaks or a task times out."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import grpc
import pytest

from petrel.rpc import create_channel
from petrel.v1 import scheduler_pb2, scheduler_pb2_grpc
from tests.service.test_scheduler_harness import (
    TIMEOUT,
    harness,
    make_meta,
    queues,
    wait_events,
)
from tests.support.net import async_wait_for

READY = scheduler_pb2.QUEUE_KIND_READY
ROUTES = {"a.test": "127.0.0.1:11", "b.test": "127.0.0.1:12", "c.test": "127.0.0.1:13"}
SITE_A, SITE_B = "route:127.0.0.1:11", "route:127.0.0.1:12"


async def test_never_more_outstanding_tasks_than_credit(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        for n in range(12):
            await h.store_and_enqueue(make_meta([f"r{n}@x.test"]))
        worker = await h.worker("w1", credit=5)
        tasks = await worker.wait_tasks(5)
        summary = await h.summary()
        (site,) = queues(summary, READY).values()
        assert (site.in_flight, site.count) == (5, 7)

        for task in tasks:
            worker.answer_all(task)
        await wait_events(h.config, "Delivery", 5)
        await async_wait_for(lambda: h.app is not None and not h.app.scheduler.writer,
                             message="spool updates written")
        summary = await h.summary()
        (site,) = queues(summary, READY).values()
        # results alone return no credit: nothing more went out
        assert (site.in_flight, site.count) == (0, 7)
        assert len(worker.tasks) == 5

        worker.credit(3)
        assert len(await worker.wait_tasks(8)) == 8
        (site,) = queues(await h.summary(), READY).values()
        assert (site.in_flight, site.count) == (3, 4)
        assert len(worker.tasks) == 8
        assert all(t.attempt == 1 and t.trace_context["traceparent"] for t in worker.tasks)


async def test_connection_limit_per_site_across_workers(tmp_path: Path) -> None:
    async with harness(tmp_path, routes=ROUTES, connection_limit=2) as h:
        one = await h.worker("w1", credit=100)
        two = await h.worker("w2", credit=100)
        await async_wait_for(lambda: h.app is not None and len(h.app.scheduler._workers) == 2,
                             message="both workers connected")
        for n in range(6):
            await h.store_and_enqueue(make_meta([f"r{n}@a.test"]))
            await h.store_and_enqueue(make_meta([f"r{n}@b.test"]))
        await async_wait_for(lambda: len(one.tasks) + len(two.tasks) >= 4,
                             message="4 tasks dispatched")
        ready = queues(await h.summary(), READY)
        assert (ready[SITE_A].in_flight, ready[SITE_A].count) == (2, 4)
        assert (ready[SITE_B].in_flight, ready[SITE_B].count) == (2, 4)
        sent = one.tasks + two.tasks
        assert Counter(t.site for t in sent) == {SITE_A: 2, SITE_B: 2}
        # work spreads across the workers holding credit
        assert len(one.tasks) == len(two.tasks) == 2

        holder = one if any(t.site == SITE_A for t in one.tasks) else two
        task = next(t for t in holder.tasks if t.site == SITE_A)
        holder.answer_all(task)
        await async_wait_for(lambda: len(one.tasks) + len(two.tasks) >= 5,
                             message="a fifth task")
        fifth = [t for t in one.tasks + two.tasks if t not in sent]
        assert [t.site for t in fifth] == [SITE_A]
        ready = queues(await h.summary(), READY)
        assert ready[SITE_A].in_flight == 2 and ready[SITE_B].in_flight == 2


async def test_round_robin_across_sites(tmp_path: Path) -> None:
    async with harness(tmp_path, routes=ROUTES) as h:
        for n in range(10):
            await h.store_and_enqueue(make_meta([f"r{n}@a.test"]))
        for n in range(2):
            await h.store_and_enqueue(make_meta([f"r{n}@b.test"]))
        worker = await h.worker("w1", credit=4)
        tasks = await worker.wait_tasks(4)
        assert Counter(t.site for t in tasks) == {SITE_A: 2, SITE_B: 2}


async def test_broken_worker_stream_puts_tasks_back_for_another(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        ids = [await h.store_and_enqueue(make_meta([f"r{n}@x.test"])) for n in range(3)]
        first = await h.worker("w1", credit=3)
        taken = await first.wait_tasks(3)
        second = await h.worker("w2", credit=10)
        first.break_stream()
        again = await second.wait_tasks(3)
        assert sorted(t.message_id for t in again) == sorted(ids)
        assert sorted(t.message_id for t in taken) == sorted(ids)
        # the attempt was never reported, so it is not counted
        assert all(t.attempt == 1 for t in again)
        for task in again:
            second.answer_all(task)
        delivered = await wait_events(h.config, "Delivery", 3)
        assert sorted(e["id"] for e in delivered) == sorted(ids)
        assert {e["num_attempts"] for e in delivered} == {1}


async def test_unanswered_task_is_put_back_after_task_timeout(tmp_path: Path) -> None:
    async with harness(tmp_path, task_timeout=0.5) as h:
        message_id = await h.store_and_enqueue(make_meta(["r@x.test"]))
        silent = await h.worker("silent", credit=1)
        await silent.wait_tasks(1)
        other = await h.worker("other", credit=1)
        (task,) = await other.wait_tasks(1, timeout=5)
        assert task.message_id == message_id
        other.answer_all(task)
        await wait_events(h.config, "Delivery", 1)
        # the silent worker's late answer changes nothing
        silent.answer_all(silent.tasks[0])
        await async_wait_for(lambda: h.app is not None and h.app.scheduler.late_results == 1,
                             message="late result seen")
        assert len(await wait_events(h.config, "Delivery", 1)) == 1


async def test_dispatch_waits_for_hello(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        assert h.app is not None
        async with create_channel(h.app.address) as channel:
            stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
            call = stub.Dispatch(iter([scheduler_pb2.DispatchRequest(credit=5)]),
                                 timeout=TIMEOUT)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in call:
                    pass
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "hello" in (caught.value.details() or "")
