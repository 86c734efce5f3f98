"""Batch semantics shared by every spool backend (spool.plan), error mapping, stream fan-out."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator

import grpc
import pytest

from petrel.v1 import spool_pb2
from petrel.v1.common_pb2 import MessageMeta
from spool.backend import PutOp, RemoveOp, ReplaceMetaOp
from spool.plan import BatchPlan, body_key, idempotency_key, meta_key, plan_batch, scan_start
from spool.store import status_for_error
from spool.streams import answer_batches, answer_concurrently

A = "0" * 31 + "a"
B = "0" * 31 + "b"


def meta(message_id: str, key: str = "", size: int = 0, sender: str = "") -> bytes:
    return MessageMeta(id=message_id, idempotency_key=key, size=size,
                       sender=sender).SerializeToString()


def apply(store: dict[bytes, bytes], plan: BatchPlan) -> None:
    for key, value in plan.changes.items():
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value


def test_put_writes_meta_body_and_key() -> None:
    plan = plan_batch([PutOp(A, meta(A, "k1", 3), b"abc", "k1")], {}.get)
    assert plan.changes == {meta_key(A): meta(A, "k1", 3), body_key(A): b"abc",
                            idempotency_key("k1"): A.encode()}
    assert [(r.id, r.duplicate) for r in plan.results] == [(A, False)]
    assert plan.count_delta == 1


def test_same_idempotency_key_in_one_batch_is_stored_once() -> None:
    plan = plan_batch([PutOp(A, meta(A, "k"), b"1", "k"), PutOp(B, meta(B, "k"), b"2", "k")],
                      {}.get)
    assert [(r.id, r.duplicate) for r in plan.results] == [(A, False), (A, True)]
    assert meta_key(B) not in plan.changes
    assert plan.count_delta == 1


def test_stored_idempotency_key_and_stored_id_are_duplicates() -> None:
    store: dict[bytes, bytes] = {}
    apply(store, plan_batch([PutOp(A, meta(A, "k"), b"1", "k")], store.get))
    again = plan_batch([PutOp(B, meta(B, "k"), b"2", "k"), PutOp(A, meta(A), b"other")],
                       store.get)
    assert [(r.id, r.duplicate) for r in again.results] == [(A, True), (A, True)]
    assert again.changes == {}
    assert again.count_delta == 0


def test_put_then_remove_in_one_batch_leaves_nothing() -> None:
    plan = plan_batch([PutOp(A, meta(A, "k"), b"1", "k"), RemoveOp(A)], {}.get)
    assert [r.found for r in plan.results] == [True, True]
    assert all(value is None for value in plan.changes.values())
    assert plan.count_delta == 0


def test_remove_frees_the_idempotency_key() -> None:
    store: dict[bytes, bytes] = {}
    apply(store, plan_batch([PutOp(A, meta(A, "k"), b"1", "k")], store.get))
    plan = plan_batch([RemoveOp(A), PutOp(B, meta(B, "k"), b"2", "k")], store.get)
    assert [(r.id, r.duplicate, r.found) for r in plan.results] == [(A, False, True),
                                                                    (B, False, True)]
    apply(store, plan)
    assert store == {meta_key(B): meta(B, "k"), body_key(B): b"2",
                     idempotency_key("k"): B.encode()}


def test_remove_and_replace_of_missing_message_find_nothing_and_write_nothing() -> None:
    plan = plan_batch([RemoveOp(A), ReplaceMetaOp(A, meta(A, sender="x"))], {}.get)
    assert [r.found for r in plan.results] == [False, False]
    assert plan.changes == {}
    assert plan.count_delta == 0


def test_replace_keeps_size_and_idempotency_key() -> None:
    store: dict[bytes, bytes] = {}
    apply(store, plan_batch([PutOp(A, meta(A, "k", 5), b"hello", "k")], store.get))
    plan = plan_batch([ReplaceMetaOp(A, meta(A, sender="new@example.com"))], store.get)
    apply(store, plan)
    stored = MessageMeta.FromString(store[meta_key(A)])
    assert (stored.sender, stored.size, stored.idempotency_key) == ("new@example.com", 5, "k")
    assert store[body_key(A)] == b"hello"


def test_scan_start_skips_the_cursor() -> None:
    assert scan_start("") == b"m/"
    assert meta_key(A) < scan_start(A) < meta_key(B)


@pytest.mark.parametrize(("error", "code"), [
    (OSError(errno.ENOSPC, "No space left on device"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Exception("IO error: No space left on device: While appending to file"),
     grpc.StatusCode.RESOURCE_EXHAUSTED),
    (OSError(errno.EIO, "Input/output error"), grpc.StatusCode.UNAVAILABLE),
    (RuntimeError("DB instance already closed"), grpc.StatusCode.UNAVAILABLE),
])
def test_status_for_error(error: Exception, code: grpc.StatusCode) -> None:
    assert status_for_error(error) is code


async def _requests(items: list[float]) -> AsyncIterator[float]:
    for item in items:
        yield item


async def test_answers_come_in_completion_order_and_all_arrive() -> None:
    async def handle(delay: float) -> float:
        await asyncio.sleep(delay)
        return delay

    answers = [a async for a in answer_concurrently(_requests([0.05, 0.0, 0.02]), handle, 8)]
    assert answers == [0.0, 0.02, 0.05]


async def test_window_bounds_requests_in_flight() -> None:
    running = 0
    peak = 0

    async def handle(item: float) -> float:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        return item

    answers = [a async for a in answer_concurrently(_requests([0.0] * 50), handle, 4)]
    assert len(answers) == 50
    assert peak == 4


async def test_handler_error_ends_the_stream() -> None:
    async def handle(item: float) -> float:
        raise ValueError("bug")

    with pytest.raises(ValueError, match="bug"):
        _ = [a async for a in answer_concurrently(_requests([1.0]), handle, 4)]


async def _batches(sizes: list[int]) -> AsyncIterator[spool_pb2.ReadMessageBatch]:
    seq = 0
    for size in sizes:
        batch = spool_pb2.ReadMessageBatch()
        for _ in range(size):
            seq += 1
            batch.items.add(seq=seq)
        yield batch


async def test_batches_are_handled_whole_and_every_item_is_answered() -> None:
    calls: list[list[int]] = []
    running = peak = 0

    async def handle(items: list[spool_pb2.ReadMessageRequest],
                     ) -> list[spool_pb2.ReadMessageResponse]:
        nonlocal running, peak
        calls.append([item.seq for item in items])
        running += len(items)
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= len(items)
        return [spool_pb2.ReadMessageResponse(seq=item.seq) for item in items]

    sizes = [3, 1, 5, 2] * 5
    answered = [item.seq async for batch in answer_batches(
        _batches(sizes), handle, 6, spool_pb2.ReadMessageResponseBatch) for item in batch.items]
    assert sorted(answered) == list(range(1, sum(sizes) + 1))
    assert [len(c) for c in calls] == sizes  # one call per request batch
    assert peak <= 6  # the window counts items
