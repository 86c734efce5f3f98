"""Batch bounds of ``petrel.rpc``: ``take_ready`` (what a stream message carries when it is
sent) and ``split_bounded`` (cutting ready answers into response messages), with sizes taken
from real protobuf messages."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator

from petrel.rpc import (
    BATCH_MAX_BYTES,
    BATCH_MAX_ITEMS,
    Pacer,
    StreamCaller,
    split_bounded,
    take_ready,
)
from petrel.v1 import spool_pb2


def put(seq: int, body_size: int = 100) -> spool_pb2.PutMessageRequest:
    return spool_pb2.PutMessageRequest(seq=seq, body=b"x" * body_size)


def queue_of(*items: spool_pb2.PutMessageRequest | None,
             ) -> asyncio.Queue[spool_pb2.PutMessageRequest | None]:
    queue: asyncio.Queue[spool_pb2.PutMessageRequest | None] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    return queue


def seqs(items: list[spool_pb2.PutMessageRequest]) -> list[int]:
    return [item.seq for item in items]


def rest(queue: asyncio.Queue[spool_pb2.PutMessageRequest | None]) -> list[int | None]:
    left: list[int | None] = []
    while not queue.empty():
        item = queue.get_nowait()
        left.append(None if item is None else item.seq)
    return left


# --- take_ready ------------------------------------------------------------------------------

def test_take_ready_takes_everything_waiting_in_order() -> None:
    queue = queue_of(put(2), put(3), put(4))
    items, ended = take_ready(queue, put(1))
    assert (seqs(items), ended) == ([1, 2, 3, 4], False)
    assert queue.empty()


async def test_take_ready_never_waits_for_more() -> None:
    queue = queue_of()
    # An item arriving later is not waited for: the batch is what was there at the call.
    asyncio.get_running_loop().call_soon(queue.put_nowait, put(2))
    items, ended = take_ready(queue, put(1))
    assert (seqs(items), ended) == ([1], False)
    await asyncio.sleep(0)
    assert rest(queue) == [2]


def test_take_ready_stops_at_max_items_and_leaves_the_rest_queued() -> None:
    queue = queue_of(*(put(n) for n in range(2, 11)))
    items, ended = take_ready(queue, put(1), max_items=4)
    assert (seqs(items), ended) == ([1, 2, 3, 4], False)
    assert rest(queue) == list(range(5, 11))


def test_take_ready_default_item_bound() -> None:
    queue = queue_of(*(put(n, 1) for n in range(2, BATCH_MAX_ITEMS + 10)))
    items, _ = take_ready(queue, put(1, 1))
    assert seqs(items) == list(range(1, BATCH_MAX_ITEMS + 1))
    assert rest(queue)[0] == BATCH_MAX_ITEMS + 1


def test_take_ready_stops_once_max_bytes_is_reached() -> None:
    size = put(1, 1000).ByteSize()
    queue = queue_of(*(put(n, 1000) for n in range(2, 8)))
    items, ended = take_ready(queue, put(1, 1000), max_bytes=3 * size)
    assert (seqs(items), ended) == ([1, 2, 3], False)
    assert sum(i.ByteSize() for i in items) == 3 * size
    assert rest(queue) == [4, 5, 6, 7]


def test_take_ready_exceeds_max_bytes_by_at_most_its_last_item() -> None:
    size = put(1, 1000).ByteSize()
    queue = queue_of(*(put(n, 1000) for n in range(2, 8)))
    items, _ = take_ready(queue, put(1, 1000), max_bytes=2 * size + size // 2)
    # taken while below the bound: the third item crosses it and ends the batch
    assert seqs(items) == [1, 2, 3]
    total = sum(i.ByteSize() for i in items)
    assert total - items[-1].ByteSize() < 2 * size + size // 2 < total


def test_take_ready_item_larger_than_max_bytes_goes_alone() -> None:
    queue = queue_of(put(2, 10), put(3, 10))
    items, ended = take_ready(queue, put(1, 5000), max_bytes=1000)
    assert (seqs(items), ended) == ([1], False)
    assert rest(queue) == [2, 3]


def test_take_ready_large_item_behind_a_small_one_ends_the_batch() -> None:
    queue = queue_of(put(2, 5000), put(3, 10))
    items, _ = take_ready(queue, put(1, 10), max_bytes=1000)
    assert seqs(items) == [1, 2]
    assert rest(queue) == [3]


def test_take_ready_none_ends_the_batch_and_sets_the_flag() -> None:
    queue = queue_of(put(2), None, put(3))
    items, ended = take_ready(queue, put(1))
    assert (seqs(items), ended) == ([1, 2], True)
    # nothing after the end of stream is taken
    assert rest(queue) == [3]


def test_take_ready_none_right_after_first() -> None:
    items, ended = take_ready(queue_of(None), put(1))
    assert (seqs(items), ended) == ([1], True)


def test_take_ready_items_without_byte_size_count_only_towards_max_items() -> None:
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    for n in range(10):
        queue.put_nowait("x" * 10_000 + str(n))
    items, ended = take_ready(queue, "first", max_items=5, max_bytes=1)
    assert (len(items), ended) == (5, False)


# --- split_bounded ---------------------------------------------------------------------------

def test_split_bounded_empty_input() -> None:
    assert list(split_bounded([])) == []


def test_split_bounded_keeps_order_and_item_bound() -> None:
    items = [put(n) for n in range(1, 8)]
    runs = list(split_bounded(items, max_items=3))
    assert [seqs(run) for run in runs] == [[1, 2, 3], [4, 5, 6], [7]]


def test_split_bounded_byte_bound_is_inclusive() -> None:
    size = put(1, 1000).ByteSize()
    items = [put(n, 1000) for n in range(1, 6)]
    assert [seqs(r) for r in split_bounded(items, max_bytes=2 * size)] == [[1, 2], [3, 4], [5]]
    assert [seqs(r) for r in split_bounded(items, max_bytes=2 * size - 1)] \
        == [[1], [2], [3], [4], [5]]


def test_split_bounded_oversize_item_forms_a_run_of_its_own() -> None:
    items = [put(1, 10), put(2, 10), put(3, 5000), put(4, 10), put(5, 6000)]
    runs = [seqs(r) for r in split_bounded(items, max_bytes=1000)]
    assert runs == [[1, 2], [3], [4], [5]]


def test_split_bounded_single_item() -> None:
    assert [seqs(r) for r in split_bounded([put(1, BATCH_MAX_BYTES + 1)])] == [[1]]


def test_split_bounded_invariants_on_random_sizes() -> None:
    rng = random.Random(5)
    items = [put(n, rng.choice([0, 10, 300, 900, 2500])) for n in range(500)]
    max_items, max_bytes = 7, 2000
    runs = list(split_bounded(items, max_items=max_items, max_bytes=max_bytes))
    assert [i for run in runs for i in run] == items
    for run in runs:
        assert 1 <= len(run) <= max_items
        total = sum(i.ByteSize() for i in run)
        assert total <= max_bytes or len(run) == 1
    # greedy: a run is cut only when its successor's first item would not fit
    for run, following in itertools.pairwise(runs):
        total = sum(i.ByteSize() for i in run)
        assert len(run) == max_items or total + following[0].ByteSize() > max_bytes


def test_split_bounded_defaults() -> None:
    small = [put(n, 1) for n in range(BATCH_MAX_ITEMS * 2 + 1)]
    assert [len(r) for r in split_bounded(small)] == [BATCH_MAX_ITEMS, BATCH_MAX_ITEMS, 1]
    body = BATCH_MAX_BYTES // 3
    large = [put(n, body) for n in range(5)]
    runs = list(split_bounded(large))
    assert [len(r) for r in runs] == [2, 2, 1]
    assert all(sum(i.ByteSize() for i in run) <= BATCH_MAX_BYTES for run in runs)


# --- pacing: Pacer and StreamCaller(linger=...) ----------------------------------------------

async def test_pacer_holds_only_a_stream_whose_items_arrive_fast_enough_to_gather() -> None:
    loop = asyncio.get_running_loop()
    pacer = Pacer(0.2, gather=3)

    async def held(ready: int = 1) -> bool:
        started = loop.time()
        await pacer.hold(ready)
        return loop.time() - started >= 0.2

    assert not await held()  # nothing sent yet: no rate, no wait
    pacer.sent(1)
    for _ in range(3):
        await asyncio.sleep(0.1)
        pacer.sent(1)  # ~10 items/s: a 0.2 s hold would gather 2, fewer than 3
    assert 0 < pacer.rate < 15 and not await held()
    for _ in range(30):
        await asyncio.sleep(0.01)
        pacer.sent(2)  # ~200 items/s: a hold gathers ~40
    assert pacer.rate > 50 and await held()
    assert not await held(ready=3)  # enough already waiting: they go at once
    assert not await Pacer(0.0).hold() and Pacer(0.0).linger == 0.0


class _SlowBatchServer:
    """Answers each request batch of a StreamCaller ``delay`` seconds after it arrives, and
    records the seqs of every batch (what each stream message carried)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.batches: list[list[int]] = []

    def open(self, requests: AsyncIterator[spool_pb2.PutMessageBatch],
             ) -> AsyncIterator[spool_pb2.PutMessageResponseBatch]:
        answers: asyncio.Queue[spool_pb2.PutMessageResponseBatch] = asyncio.Queue()

        async def consume() -> None:
            async for batch in requests:
                self.batches.append([item.seq for item in batch.items])
                response = spool_pb2.PutMessageResponseBatch(
                    items=[spool_pb2.PutMessageResponse(seq=item.seq) for item in batch.items])
                asyncio.get_running_loop().call_later(self.delay, answers.put_nowait, response)

        async def responses() -> AsyncIterator[spool_pb2.PutMessageResponseBatch]:
            consumer = asyncio.create_task(consume())
            try:
                while True:
                    yield await answers.get()
            finally:
                consumer.cancel()

        return responses()


async def _spaced_calls(caller: StreamCaller[spool_pb2.PutMessageRequest,
                                            spool_pb2.PutMessageResponse]) -> None:
    async def call_at(delay: float) -> None:
        await asyncio.sleep(delay)
        await caller.call(put(0), timeout=5)

    await asyncio.gather(*(call_at(0.02 * n) for n in range(5)))
    await caller.close()


async def test_without_linger_each_spaced_call_is_its_own_stream_message() -> None:
    server = _SlowBatchServer(delay=0.2)
    await _spaced_calls(StreamCaller(server.open, batch=spool_pb2.PutMessageBatch))
    assert server.batches == [[1], [2], [3], [4], [5]]


async def test_linger_holds_calls_while_earlier_ones_are_unanswered() -> None:
    server = _SlowBatchServer(delay=0.2)
    # Call 1 finds nothing in flight and leaves at once; 2-5 arrive while it is unanswered
    # and leave together when its answer comes (well before the 5 s bound).
    await _spaced_calls(StreamCaller(server.open, batch=spool_pb2.PutMessageBatch, linger=5.0))
    assert server.batches == [[1], [2, 3, 4, 5]]


async def test_linger_is_a_bound_when_answers_do_not_come() -> None:
    server = _SlowBatchServer(delay=30.0)
    caller: StreamCaller[spool_pb2.PutMessageRequest, spool_pb2.PutMessageResponse] = \
        StreamCaller(server.open, batch=spool_pb2.PutMessageBatch, linger=0.05)
    first = asyncio.create_task(caller.call(put(0), timeout=5))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(caller.call(put(0), timeout=5))
    # The second call is held at most ``linger``, not until the (never) answer.
    await asyncio.sleep(0.3)
    assert server.batches == [[1], [2]]
    for call in (first, second):
        call.cancel()
    await caller.close()
