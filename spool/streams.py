"""Answering a bidi stream's requests concurrently, each response carrying its request's seq
(one item per stream message, or batches of items for the ``...Batches`` methods).

Requests of one stream are independent (callers multiplex over it with ``StreamCaller``), so a
slow request must not hold back the others: each request, or each request batch of a
``...Batches`` method (whose items go to the store together, one group commit or one read
hand-off), is handled in its own task and answered as soon as it is done, in completion
order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

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

    async def units() -> AsyncIterator[Sequence[Req]]:
        async for request in requests:
            yield (request,)

    async def handle_unit(unit: Sequence[Req]) -> list[Resp]:
        return [await handle(unit[0])]

    async for ready in _answer_groups(units(), handle_unit, window):
        for response in ready:
            yield response


async def answer_batches(batches: AsyncIterable[Batch],
                         handle_items: Callable[[Sequence[Req]], Awaitable[list[Resp]]],
                         window: int, make_batch: Callable[[], RespBatch],
                         ) -> AsyncIterator[RespBatch]:
    """``answer_concurrently`` for a ``...Batches`` stream: the items of a request batch are
    handled together by one ``handle_items`` call (one answer per item, in order), batches
    concurrently; each response batch holds the answers that were ready when it was sent
    (bounded like ``petrel.rpc.take_ready``). ``window`` counts items."""

    async def units() -> AsyncIterator[Sequence[Req]]:
        async for batch in batches:
            yield batch.items  # type: ignore[attr-defined]

    async for ready in _answer_groups(units(), handle_items, window):
        for run in split_bounded(ready):
            response = make_batch()
            response.items.extend(run)  # type: ignore[attr-defined]
            yield response


async def _answer_groups(units: AsyncIterable[Sequence[Req]],
                         handle: Callable[[Sequence[Req]], Awaitable[list[Resp]]],
                         window: int) -> AsyncIterator[list[Resp]]:
    """The answers of the requests in ``units`` (each unit handled by one ``handle`` call in
    a task of its own), in completion order, grouped by what was ready at once; a group's
    window slots (one per item) are released when the consumer asks for the next group."""
    answers: asyncio.Queue[object] = asyncio.Queue()
    slots = asyncio.Semaphore(window)
    tasks: set[asyncio.Task[None]] = set()

    async def answer(unit: Sequence[Req], held: int) -> None:
        try:
            answers.put_nowait((await handle(unit), held))
        except Exception as exc:
            answers.put_nowait(_Failed(exc))

    async def read() -> None:
        try:
            async for unit in units:
                held = min(len(unit), window)  # a unit larger than the window takes it all
                for _ in range(held):
                    await slots.acquire()
                task = asyncio.create_task(answer(unit, held))
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
            held = 0
            while True:
                if item is _END:
                    ended = True
                    break
                if isinstance(item, _Failed):
                    raise item.error
                answered, unit_held = cast(tuple[list[Resp], int], item)
                ready.extend(answered)
                held += unit_held
                try:
                    item = answers.get_nowait()
                except asyncio.QueueEmpty:
                    break
            if ready:
                yield ready
            for _ in range(held):
                slots.release()
        await reader
    finally:
        reader.cancel()
        for task in list(tasks):
            task.cancel()
