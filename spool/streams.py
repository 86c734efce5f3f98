"""Answering a bidi stream's requests concurrently, each response carrying its request's seq
(one item per stream message, or batches of items for the ``...Batches`` methods).

Requests of one stream are independent (callers multiplex over it with ``StreamCaller``), so a
slow item must not hold back the others: each request is handled in its own task and answered
as soon as it is done, in completion order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from petrel.rpc import split_bounded

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Batch = TypeVar("Batch")
RespBatch = TypeVar("RespBatch")


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


_END = object()


async def answer_concurrently(requests: AsyncIterable[Req],
                              handle: Callable[[Req], Awaitable[Resp]],
                              window: int) -> AsyncIterator[Resp]:
    """Yield ``handle(request)`` for every request, in completion order.

    At most ``window`` requests are being handled or waiting to be sent; beyond that the
    stream stops reading, which pushes back on the client through HTTP/2 flow control.
    ``handle`` is expected to turn item failures into responses; an exception escaping it
    (or from reading the requests) ends the stream with that error.
    """
    async for ready in _answer_groups(requests, handle, window):
        for response in ready:
            yield response


async def answer_batches(batches: AsyncIterable[Batch],
                         handle: Callable[[Req], Awaitable[Resp]], window: int,
                         make_batch: Callable[[], RespBatch]) -> AsyncIterator[RespBatch]:
    """``answer_concurrently`` for a ``...Batches`` stream: the items of every request batch
    are handled concurrently, and each response batch holds the answers that were ready when
    it was sent (completion order, bounded like ``petrel.rpc.take_ready``)."""

    async def items() -> AsyncIterator[Req]:
        async for batch in batches:
            for item in batch.items:  # type: ignore[attr-defined]
                yield item

    async for ready in _answer_groups(items(), handle, window):
        for run in split_bounded(ready):
            response = make_batch()
            response.items.extend(run)  # type: ignore[attr-defined]
            yield response


async def _answer_groups(requests: AsyncIterable[Req],
                         handle: Callable[[Req], Awaitable[Resp]],
                         window: int) -> AsyncIterator[list[Resp]]:
    """The answers of ``requests`` in completion order, grouped by what was ready at once;
    a group's window slots are released when the consumer asks for the next group."""
    answers: asyncio.Queue[object] = asyncio.Queue()
    slots = asyncio.Semaphore(window)
    tasks: set[asyncio.Task[None]] = set()

    async def answer(request: Req) -> None:
        try:
            answers.put_nowait(await handle(request))
        except Exception as exc:
            answers.put_nowait(_Failed(exc))

    async def read() -> None:
        try:
            async for request in requests:
                await slots.acquire()
                task = asyncio.create_task(answer(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.wait(set(tasks))
        except Exception as exc:
            answers.put_nowait(_Failed(exc))
        finally:
            answers.put_nowait(_END)

    reader = asyncio.create_task(read())
    try:
        ended = False
        while not ended:
            item = await answers.get()
            ready: list[Resp] = []
            while True:
                if item is _END:
                    ended = True
                    break
                if isinstance(item, _Failed):
                    raise item.error
                ready.append(item)  # type: ignore[arg-type]
                try:
                    item = answers.get_nowait()
                except asyncio.QueueEmpty:
                    break
            if ready:
                yield ready
                for _ in ready:
                    slots.release()
        await reader
    finally:
        reader.cancel()
        for task in list(tasks):
            task.cancel()
