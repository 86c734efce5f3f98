"""The Dispatch side of egress: hello and credit, bounded concurrency, reconnecting after the
stream breaks, draining on stop, and bodies the spool does not have or cannot give."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from petrel.ids import new_message_id
from tests.service.test_egress_harness import EgressHarness, RecordingSink, outcomes
from tests.support.net import async_wait_for


@pytest.fixture
def sink() -> Iterator[RecordingSink]:
    with RecordingSink() as running:
        yield running


async def test_hello_then_credit_and_one_credit_per_result(tmp_path: Path,
                                                           sink: RecordingSink) -> None:
    async with EgressHarness(tmp_path, routing={"smarthost": sink.address},
                             egress={"max_inflight": 4, "worker_id": "w-7"}) as harness:
        tasks = [await harness.submit("dest.test", [f"r{i}@dest.test"]) for i in range(10)]
        await harness.driver.wait_results(tasks)
        await async_wait_for(lambda: sum(harness.driver.credits) == 14, timeout=5,
                             message="a credit back for every result")
    assert harness.driver.hellos == ["w-7"]
    assert harness.driver.credits[0] == 4
    assert harness.driver.max_outstanding <= 4
    assert sink.count() == 10


async def test_never_more_in_flight_than_granted(tmp_path: Path, sink: RecordingSink) -> None:
    sink.data_delay = 0.2
    async with EgressHarness(tmp_path, routing={"smarthost": sink.address},
                             egress={"max_inflight": 3}) as harness:
        tasks = [await harness.submit("dest.test", [f"r{i}@dest.test"]) for i in range(7)]
        results = await harness.driver.wait_results(tasks)
    assert all(outcomes(r)[f"r{i}@dest.test"][0] == "DELIVERED" for i, r in enumerate(results))
    assert harness.driver.max_outstanding == 3
    # Three deliveries ran side by side, each on its own connection, then reused them.
    assert sink.connections() == 3


async def test_reconnects_after_the_stream_breaks(tmp_path: Path, sink: RecordingSink) -> None:
    sink.data_delay = 0.3
    async with EgressHarness(tmp_path, routing={"smarthost": sink.address},
                             egress={"max_inflight": 2}) as harness:
        driver = harness.driver
        tasks = [await harness.submit("dest.test", [f"r{i}@dest.test"]) for i in range(2)]
        await async_wait_for(lambda: driver.max_outstanding == 2, timeout=5)
        driver.break_streams()
        await async_wait_for(lambda: driver.streams == 2 and driver.open_streams == 1,
                             timeout=10, message="a new stream")
        results = await driver.wait_results(tasks)
    assert driver.hellos == ["egress-test", "egress-test"]
    assert all(outcomes(r)[f"r{i}@dest.test"][0] == "DELIVERED" for i, r in enumerate(results))
    # The interrupted deliveries finished (their results were dropped) and the scheduler
    # dispatched both tasks again: at least once, never lost.
    for i in range(2):
        assert len(sink.received_for(f"r{i}@dest.test")) >= 1


async def test_stop_finishes_in_flight_deliveries_and_reports_them(
        tmp_path: Path, sink: RecordingSink) -> None:
    sink.data_delay = 0.5
    async with EgressHarness(tmp_path, routing={"smarthost": sink.address},
                             egress={"max_inflight": 2}) as harness:
        driver = harness.driver
        tasks = [await harness.submit("dest.test", [f"r{i}@dest.test"]) for i in range(2)]
        await async_wait_for(lambda: driver.max_outstanding == 2, timeout=5)
        credits_before = sum(driver.credits)
        await harness.stop_egress()
        assert driver.results.keys() == {t.task_id for t in tasks}
        late = await harness.submit("dest.test", ["late@dest.test"])
        assert sum(driver.credits) == credits_before
    assert driver.open_streams == 0
    assert sink.count() == 2 and not sink.received_for("late@dest.test")
    assert late.task_id not in driver.results


async def test_stop_gives_up_on_deliveries_past_the_drain_bound(
        tmp_path: Path, sink: RecordingSink) -> None:
    sink.data_delay = 3.0
    async with EgressHarness(tmp_path, routing={"smarthost": sink.address},
                             egress={"data_timeout": 10}, drain_timeout=0.3) as harness:
        driver = harness.driver
        task = await harness.submit("dest.test", ["slow@dest.test"])
        await async_wait_for(lambda: driver.max_outstanding == 1, timeout=5)
        started = time.monotonic()
        await harness.stop_egress()
        assert time.monotonic() - started < 2.0
    assert task.task_id not in driver.results
    # The stream closed without a result, so the task is back in the scheduler's hands.
    assert [t.task_id for t in driver.pending] == [task.task_id]


async def test_message_missing_from_spool_is_permanent(tmp_path: Path,
                                                       sink: RecordingSink) -> None:
    async with EgressHarness(tmp_path, routing={"smarthost": sink.address}) as harness:
        task = harness.driver.add("dest.test", ["gone@dest.test"], new_message_id())
        [result] = await harness.driver.wait_results([task])
    assert outcomes(result) == {"gone@dest.test": ("PERMANENT_FAILURE", 554, "5.3.0")}
    assert sink.count() == 0


async def test_spool_unreachable_is_transient(tmp_path: Path, sink: RecordingSink) -> None:
    async with EgressHarness(tmp_path, routing={"smarthost": sink.address},
                             body_deadline=1.0) as harness:
        message_id = await harness.put(b"Subject: x\r\n\r\nbody\r\n", ["u@dest.test"])
        await harness.stop_spool()
        task = harness.driver.add("dest.test", ["u@dest.test"], message_id)
        [result] = await harness.driver.wait_results([task])
    assert outcomes(result) == {"u@dest.test": ("TRANSIENT_FAILURE", 451, "4.3.0")}
    assert sink.count() == 0


async def test_spool_back_within_the_deadline_means_no_failure(tmp_path: Path,
                                                               sink: RecordingSink) -> None:
    async with EgressHarness(tmp_path, routing={"smarthost": sink.address}) as harness:
        await harness.deliver("dest.test", ["before@dest.test"])
        message_id = await harness.put(b"Subject: x\r\n\r\nbody\r\n", ["after@dest.test"])
        await harness.stop_spool()
        task = harness.driver.add("dest.test", ["after@dest.test"], message_id)
        await async_wait_for(lambda: harness.driver.max_outstanding >= 1 and
                             not harness.driver.pending, message="task handed out")
        await harness.start_spool()
        [result] = await harness.driver.wait_results([task])
    assert outcomes(result)["after@dest.test"][0] == "DELIVERED"
    assert len(sink.received_for("after@dest.test")) == 1
