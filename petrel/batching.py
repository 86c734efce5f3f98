"""Group commit: many concurrent submitters, one flush per batch.

``GroupCommitter(flush)`` collects items submitted while the previous flush runs (or within
``max_delay``) and hands them to ``flush(items)`` together — typically in a worker thread that
writes and syncs once. Each submitter is resumed only after the flush covering its item
returned, with that item's result, or with the flush's exception.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from petrel import telemetry

T = TypeVar("T")
R = TypeVar("R")


class GroupCommitter(Generic[T, R]):
    def __init__(self, flush: Callable[[list[T]], Awaitable[Sequence[R]]], *,
                 max_batch: int = 1024, max_delay: float = 0.0) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        return await self._enter(item)

    async def submit_many(self, items: Sequence[T]) -> list[R | Exception]:
        """``submit`` for several items at once, without a task per item: each item's result,
        or the exception of the flush that covered it (items may span flushes)."""
        futures = [self._enter(item) for item in items]
        results: list[R | Exception] = []
        for future in futures:  # after the first, the rest are usually done already
            try:
                results.append(await future)
            except Exception as exc:
                results.append(exc)
        return results

    def _enter(self, item: T) -> asyncio.Future[R]:
        if self._task is None or self._task.done():
            with telemetry.detached():  # the task flushes everyone's items, not this trace's
                self._task = asyncio.create_task(self._run(), name="group-commit")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._wakeup.set()
        return future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if self._max_delay and len(self._queue) < self._max_batch:
                await asyncio.sleep(self._max_delay)
            batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
            if not self._queue:
                self._wakeup.clear()
            if not batch:
                continue
            try:
                results = await self._flush([item for item, _ in batch])
            except Exception as exc:  # every submitter of the batch learns the failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
