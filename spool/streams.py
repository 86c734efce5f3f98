"""Answering a bidi stream's requests concurrently, each response carrying its request's seq.

Requests of one stream are independent (callers multiplex over it with ``StreamCaller``), so a
slow item must not hold back the others: each request is handled in its own task and answered
as soon as it is done, in completion order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

Req = TypeVar("Req")
Resp = TypeVar("Resp")


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
        while True:
            item = await answers.get()
            if item is _END:
                break
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
            slots.release()
        await reader
    finally:
        reader.cancel()
        for task in list(tasks):
            task.cancel()
