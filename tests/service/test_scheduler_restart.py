"""Restart and outage behaviour: queues rebuilt from the spool (attempts and due times
included), a spool that is down at start or while results come in, reconcile of messages
that were stored but never enqueued."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from petrel.v1 import common_pb2, scheduler_pb2
from tests.service.test_ingress_harness import SpoolProcess
from tests.service.test_scheduler_harness import (
    TIMEOUT,
    Harness,
    InProcessSpool,
    deliver_all,
    events,
    harness,
    make_meta,
    queues,
    scheduler_config,
    wait_events,
)
from tests.support.net import async_wait_for

SCHEDULED = scheduler_pb2.QUEUE_KIND_SCHEDULED
TOTAL = 2_000


async def _put_many(spool: InProcessSpool, metas: list[common_pb2.MessageMeta]) -> None:
    for start in range(0, len(metas), 250):
        await asyncio.gather(*(spool.put(m) for m in metas[start:start + 250]))


async def test_restart_rebuilds_every_queue_and_resumes(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    metas = [make_meta([f"r{n}@d{n % 7}.test"], tenant="t" if n % 2 else "") for n in range(TOTAL)]
    retried = metas[:10]
    for meta in retried:  # three attempts failed before, the next one is due already
        meta.schedules.add(domain=meta.recipients[0].address.split("@")[1], attempts=3,
                           due_unix_ms=now - 1000)
    later = make_meta(["later@x.test"], schedules=[("x.test", 1, now + 600_000)])
    async with harness(tmp_path, start_scheduler=False) as h:
        await _put_many(h.spool, [*metas, later])
        app = await h.start_scheduler()
        assert app.scheduler.message_count == TOTAL + 1
        await h.worker("w1", credit=50, auto=deliver_all)
        await wait_events(h.config, "Delivery", 500)
        await h.stop_scheduler()
        delivered_before = {e["id"] for e in events(h.config, "Delivery")}
        assert await h.spool.count() == TOTAL + 1 - len(delivered_before)

        app = await h.start_scheduler()
        assert app.scheduler.message_count == TOTAL + 1 - len(delivered_before)
        worker = await h.worker("w2", credit=100, auto=deliver_all)
        await wait_events(h.config, "Delivery", TOTAL, timeout=60)
        delivered = Counter(e["id"] for e in events(h.config, "Delivery"))
        assert set(delivered) == {m.id for m in metas}
        assert max(delivered.values()) == 1
        await async_wait_for(h.spool.holds(1), message="spool drained to one message")

        retried_ids = {m.id for m in retried} - delivered_before
        attempts = {t.message_id: t.attempt for t in worker.tasks}
        assert all(attempts[i] == 4 for i in retried_ids)
        assert later.id not in attempts
        summary = await h.summary()
        assert summary.messages == 1
        assert queues(summary, SCHEDULED)["x.test"].count == 1
        inspected = await h.client.inspect(later.id)  # type: ignore[union-attr]
        assert dict(inspected.domain_states) == {"x.test": "scheduled"}


async def test_transient_state_survives_a_restart(tmp_path: Path) -> None:
    async with harness(tmp_path, retry_interval=60.0, max_retry_interval=120.0) as h:
        message_id = await h.store_and_enqueue(make_meta(["a@x.test"]))
        worker = await h.worker("w1", credit=1)
        (task,) = await worker.wait_tasks(1)
        worker.answer_all(task, scheduler_pb2.DELIVERY_OUTCOME_TRANSIENT_FAILURE, 451, "4.3.0")
        await wait_events(h.config, "TransientFailure", 1)
        await h.stop_scheduler()
        stored = await h.spool.get(message_id)
        assert stored is not None
        (schedule,) = stored.schedules
        assert schedule.attempts == 1 and schedule.due_unix_ms > time.time() * 1000 + 50_000

        await h.start_scheduler()
        inspected = await h.client.inspect(message_id)  # type: ignore[union-attr]
        assert dict(inspected.domain_states) == {"x.test": "scheduled"}
        assert inspected.meta.schedules[0].due_unix_ms == schedule.due_unix_ms


async def test_spool_down_at_start_then_back(tmp_path: Path) -> None:
    async with harness(tmp_path, start_scheduler=False) as h:
        metas = [make_meta([f"r{n}@x.test"]) for n in range(5)]
        ids = [m.id for m in metas]
        await _put_many(h.spool, metas)
        await h.spool.stop()
        app = await h.start_scheduler(wait_rebuilt=False)
        worker = await h.worker("w1", credit=10, auto=deliver_all)
        assert not app.scheduler.rebuilt.is_set()
        await h.spool.start()
        async with asyncio.timeout(TIMEOUT):
            await app.scheduler.rebuilt.wait()
        delivered = await wait_events(h.config, "Delivery", 5)
        assert sorted(e["id"] for e in delivered) == sorted(ids)
        assert len(worker.tasks) == 5
        await async_wait_for(h.spool.holds(0), message="spool drained")


async def test_spool_outage_while_results_arrive(tmp_path: Path) -> None:
    spool = SpoolProcess(tmp_path / "data")
    config = scheduler_config(tmp_path / "data", spool.port)
    h = Harness(config)
    await asyncio.to_thread(spool.start)
    try:
        await h.start_scheduler()
        ids = [await h.store_and_enqueue(make_meta([f"r{n}@x.test"])) for n in range(3)]
        worker = await h.worker("w1", credit=3)
        tasks = await worker.wait_tasks(3)
        await asyncio.to_thread(spool.stop, True)
        for task in tasks:
            worker.answer_all(task)
        # events are written at once; the removals wait for the spool
        await wait_events(config, "Delivery", 3)
        assert h.app is not None
        await async_wait_for(lambda: len(h.app.scheduler.writer) == 3,  # type: ignore[union-attr]
                             message="3 removals pending")
        await asyncio.to_thread(spool.start)
        for message_id in ids:
            await async_wait_for(h.spool.gone(message_id), timeout=15,
                                 message="removal after the outage")
        assert len(h.app.scheduler.writer) == 0
    finally:
        await h.stop_scheduler()
        await h.spool.close()
        await asyncio.to_thread(spool.stop)


async def test_reconcile_queues_stored_but_never_enqueued(tmp_path: Path) -> None:
    async with harness(tmp_path, reconcile_interval=0.3) as h:
        worker = await h.worker("w1", credit=5, auto=deliver_all)
        orphan = make_meta(["orphan@x.test"])
        await h.spool.put(orphan)  # ingress stored it, then its Enqueue was lost
        (delivery,) = await wait_events(h.config, "Delivery", 1)
        assert delivery["id"] == orphan.id
        assert [t.message_id for t in worker.tasks] == [orphan.id]


async def test_new_enqueue_stream_reconciles_without_waiting_for_the_interval(
        tmp_path: Path) -> None:
    # An ingress that crashed after its 250s may have left stored messages unenqueued; the
    # enqueue stream its successor opens makes the scheduler reconcile within seconds.
    async with harness(tmp_path, reconcile_interval=3600) as h:
        worker = await h.worker("w1", credit=5, auto=deliver_all)
        orphan = make_meta(["orphan@x.test"])
        await h.spool.put(orphan)
        await asyncio.sleep(0.5)
        assert worker.tasks == []  # nothing reconciles on its own within the hour
        assert h.client is not None
        await h.client.enqueue(make_meta(["fresh@x.test"]))  # opens the stream
        deliveries = await wait_events(h.config, "Delivery", 2)
        assert orphan.id in {d["id"] for d in deliveries}
