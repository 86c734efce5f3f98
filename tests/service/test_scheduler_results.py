"""Results against a real scheduler and RocksDB spool: events, retries with the schedule written
back, removal at the final disposition, expiry, enqueue and the query RPCs."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from petrel.v1 import common_pb2, scheduler_pb2
from tests.service.test_scheduler_harness import (
    PERMANENT,
    TRANSIENT,
    harness,
    make_meta,
    queues,
    wait_events,
)
from tests.support.net import async_wait_for

SCHEDULED = scheduler_pb2.QUEUE_KIND_SCHEDULED
READY = scheduler_pb2.QUEUE_KIND_READY
ROUTES = {"a.test": "127.0.0.1:11", "b.test": "127.0.0.1:12"}


async def test_transient_result_reschedules_with_backoff_and_writes_the_schedule(
        tmp_path: Path) -> None:
    async with harness(tmp_path, retry_interval=0.6) as h:
        message_id = await h.store_and_enqueue(make_meta(["a@x.test", "b@x.test"]))
        worker = await h.worker("w1", credit=10)
        (first,) = await worker.wait_tasks(1)
        assert first.attempt == 1 and list(first.recipients) == ["a@x.test", "b@x.test"]
        answered = time.time()
        worker.answer(first, [("a@x.test", TRANSIENT, 451, "4.3.0", ""),
                              ("b@x.test", scheduler_pb2.DELIVERY_OUTCOME_DELIVERED, 250,
                               "2.0.0", "")])
        (transient,) = await wait_events(h.config, "TransientFailure", 1)
        assert transient["recipient"] == "a@x.test" and transient["num_attempts"] == 1
        assert transient["response"]["code"] == 451 and transient["id"] == message_id

        async def schedule_written() -> common_pb2.MessageMeta | None:
            meta = await h.spool.get(message_id)
            return meta if meta is not None and meta.schedules else None

        meta = await async_wait_for(schedule_written, message="schedule in the spool")
        (schedule,) = meta.schedules
        assert (schedule.domain, schedule.attempts) == ("x.test", 1)
        assert answered * 1000 + 550 <= schedule.due_unix_ms <= answered * 1000 + 1500
        assert [(r.address, r.state) for r in meta.recipients] == [
            ("a@x.test", common_pb2.RECIPIENT_STATE_PENDING),
            ("b@x.test", common_pb2.RECIPIENT_STATE_DELIVERED)]

        inspected = await h.client.inspect(message_id)  # type: ignore[union-attr]
        assert dict(inspected.domain_states) == {"x.test": "scheduled"}
        (second_task,) = (await worker.wait_tasks(2))[1:]
        assert time.time() * 1000 >= schedule.due_unix_ms - 5
        assert second_task.attempt == 2 and list(second_task.recipients) == ["a@x.test"]
        worker.answer_all(second_task)
        delivered = await wait_events(h.config, "Delivery", 2)
        assert [(e["recipient"], e["num_attempts"]) for e in delivered] == [
            ("b@x.test", 1), ("a@x.test", 2)]
        await async_wait_for(h.spool.gone(message_id), message="message removed")


async def test_permanent_result_bounces_and_removes_after_every_domain(tmp_path: Path) -> None:
    async with harness(tmp_path, routes=ROUTES) as h:
        message_id = await h.store_and_enqueue(
            make_meta(["x@a.test", "y@b.test", "z@a.test"], tenant="acme", campaign="spring"))
        worker = await h.worker("w1", credit=10)
        tasks = {t.domain: t for t in await worker.wait_tasks(2)}
        assert list(tasks["a.test"].recipients) == ["x@a.test", "z@a.test"]
        assert list(tasks["b.test"].recipients) == ["y@b.test"]
        assert tasks["a.test"].queue == "spring:acme@a.test"
        assert (tasks["a.test"].tenant, tasks["a.test"].campaign) == ("acme", "spring")
        assert tasks["b.test"].site == "route:127.0.0.1:12"

        worker.answer_all(tasks["a.test"], PERMANENT, 550, "5.1.1", "InvalidRecipient")
        bounces = await wait_events(h.config, "Bounce", 2)
        assert {e["recipient"] for e in bounces} == {"x@a.test", "z@a.test"}
        bounce = bounces[0]
        assert bounce["bounce_classification"] == "InvalidRecipient"
        assert bounce["queue"] == "spring:acme@a.test" and bounce["site"] == "route:127.0.0.1:11"
        assert bounce["response"]["enhanced_code"] == {"class": 5, "subject": 1, "detail": 1}
        assert bounce["tenant"] == "acme" and bounce["campaign"] == "spring"
        assert bounce["trace_id"] == "12" * 16 and bounce["egress_source"] == "test-source"
        assert bounce["peer_address"] == {"addr": "sink [127.0.0.1]:25"}
        # b.test is still pending: the message stays, with the bounced states written
        async def states_written() -> bool:
            meta = await h.spool.get(message_id)
            return meta is not None and meta.recipients[0].state == \
                common_pb2.RECIPIENT_STATE_BOUNCED
        await async_wait_for(states_written, message="bounced states in the spool")

        worker.answer_all(tasks["b.test"])
        await wait_events(h.config, "Delivery", 1)
        await async_wait_for(h.spool.gone(message_id), message="message removed")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await h.client.inspect(message_id)  # type: ignore[union-attr]
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_expired_by_max_age_at_enqueue_and_after_a_retry(tmp_path: Path) -> None:
    async with harness(tmp_path, max_age=2.0, retry_interval=3.0) as h:
        old = make_meta(["old@x.test"], created_ms=int(time.time() * 1000) - 3_000)
        old_id = await h.store_and_enqueue(old)
        (expiration,) = await wait_events(h.config, "Expiration", 1)
        assert expiration["id"] == old_id and expiration["response"]["code"] == 551
        await async_wait_for(h.spool.gone(old_id), message="expired message removed")

        young_id = await h.store_and_enqueue(make_meta(["young@x.test"]))
        stale_created = int(time.time() * 1000) - 1_500
        stale_id = await h.store_and_enqueue(make_meta(["stale@x.test"], created_ms=stale_created))
        # it ages past max_age while it waits in the ready queue for a worker
        await async_wait_for(lambda: time.time() * 1000 > stale_created + 2_050,
                             message="the stale message to age")
        assert dict((await h.client.inspect(stale_id)).domain_states) == {  # type: ignore[union-attr]
            "x.test": "ready"}
        worker = await h.worker("w1", credit=5)
        (task,) = await worker.wait_tasks(1)
        assert task.message_id == young_id
        expirations = await wait_events(h.config, "Expiration", 2)
        assert expirations[-1]["id"] == stale_id and expirations[-1]["num_attempts"] == 0
        await async_wait_for(h.spool.gone(stale_id), message="stale message removed")

        # the retry would come 3 s later, past the 2 s max_age
        worker.answer_all(task, TRANSIENT, 421, "4.4.2", "")
        expirations = await wait_events(h.config, "Expiration", 3)
        assert expirations[-1]["id"] == young_id and expirations[-1]["num_attempts"] == 1
        assert len(await wait_events(h.config, "TransientFailure", 1)) == 1
        await async_wait_for(h.spool.gone(young_id), message="expired message removed")
        assert len(worker.tasks) == 1


async def test_enqueue_is_duplicate_safe_and_validates(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        assert h.client is not None
        meta = make_meta(["a@x.test"])
        await h.store_and_enqueue(meta)
        again = await h.client.enqueue(meta)
        assert again.status.code == 0 and again.id == meta.id
        assert (await h.summary()).messages == 1

        bad = await h.client.enqueue(common_pb2.MessageMeta(id="nope"))
        assert bad.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert bad.status.field == "meta.id"
        empty = await h.client.enqueue(make_meta([]))
        assert empty.status.field == "meta.recipients"

        worker = await h.worker("w1", credit=5)
        (task,) = await worker.wait_tasks(1)
        worker.answer_all(task)
        await async_wait_for(h.spool.gone(meta.id), message="message removed")
        # a late duplicate enqueue of a finished message queues nothing
        assert (await h.client.enqueue(meta)).status.code == 0
        assert (await h.summary()).messages == 0


async def test_summary_and_inspect(tmp_path: Path) -> None:
    async with harness(tmp_path, routes=ROUTES, retry_interval=60.0) as h:
        assert h.client is not None
        scheduled = make_meta(["s@a.test"], tenant="acme",
                              schedules=[("a.test", 2, int(time.time() * 1000) + 60_000)])
        await h.store_and_enqueue(scheduled)
        ready_ids = [await h.store_and_enqueue(make_meta([f"r{n}@b.test"], campaign="c"))
                     for n in range(3)]
        summary = await h.summary()
        assert summary.messages == 4
        sched = queues(summary, SCHEDULED)
        assert sched["acme@a.test"].count == 1
        assert sched["acme@a.test"].oldest_age_seconds >= 0
        ready = queues(summary, READY)
        assert ready["route:127.0.0.1:12"].count == 3

        worker = await h.worker("w1", credit=1)
        (task,) = await worker.wait_tasks(1)
        summary = await h.summary()
        assert queues(summary, READY)["route:127.0.0.1:12"].count == 2
        assert queues(summary, READY)["route:127.0.0.1:12"].in_flight == 1
        assert queues(summary, SCHEDULED)["c:@b.test"].in_flight == 1

        inspected = await h.client.inspect(scheduled.id)
        assert dict(inspected.domain_states) == {"a.test": "scheduled"}
        assert inspected.meta.sender == "sender@src.test"
        assert inspected.meta.schedules[0].attempts == 2
        in_flight = await h.client.inspect(task.message_id)
        assert dict(in_flight.domain_states) == {"b.test": "in_flight"}
        waiting = next(i for i in ready_ids if i != task.message_id)
        assert dict((await h.client.inspect(waiting)).domain_states) == {"b.test": "ready"}
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await h.client.inspect("f" * 32)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await h.client.inspect("bad")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
