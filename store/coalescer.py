"""Adaptive batching across an expensive boundary (one Ray call costs ~1 ms of CPU on each side).

While `max_in_flight` calls are running, new items queue; when a call returns, everything queued so
far leaves as the next batch. No timer: at low load an item leaves at once, at high load batches grow
by themselves. The queue is bounded: past `max_pending` items, `submit` raises `Backpressure`.
With `inline_alone`, an item that would leave at once and alone (nothing in flight, nothing queued)
crosses in the submitting task: no Task and no future for a batch of one (issue #14: an API trigger at a
few hundred a second is that batch of one nearly always); what arrives meanwhile queues as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Backpressure(RuntimeError):
    """Too much is already waiting to cross; the caller should answer 503 with Retry-After."""


class Coalescer(Generic[Item, Result]):
    def __init__(
        self,
        send: Callable[[list[Item]], Awaitable[Sequence[Result]]],
        *,
        max_in_flight: int = 2,
        max_batch: int = 1000,
        max_pending: int = 50_000,
        inline_alone: bool = False,
    ) -> None:
        self._send = send
        self.inline_alone = inline_alone
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._pending: list[tuple[Item, asyncio.Future[Result] | None]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0

    async def submit(self, item: Item) -> Result:
        if self.inline_alone and not self._in_flight and not self._pending:
            self._in_flight += 1
            self.calls += 1
            try:
                (result,) = await self._send([item])
            finally:
                self._in_flight -= 1
                self._pump()
            return result
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._enqueue(item, future)
        return await future

    async def submit_many(self, items: Sequence[Item]) -> list[Result]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        if len(self._pending) + len(items) > self.max_pending:
            raise Backpressure(f"{len(self._pending)} items already waiting")
        self._pending.extend(zip(items, futures, strict=True))
        self._pump()
        return list(await asyncio.gather(*futures))

    def submit_nowait(self, item: Item) -> None:
        """Fire and forget: the result and any error are dropped."""
        self._enqueue(item, None)

    def _enqueue(self, item: Item, future: asyncio.Future[Result] | None) -> None:
        if len(self._pending) >= self.max_pending:
            raise Backpressure(f"{len(self._pending)} items already waiting")
        self._pending.append((item, future))
        self._pump()

    def _pump(self) -> None:
        while self._pending and self._in_flight < self.max_in_flight:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _flush(self, batch: list[tuple[Item, asyncio.Future[Result] | None]]) -> None:
        self.calls += 1
        try:
            results = await self._send([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if future is not None and not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if future is not None and not future.done():
                    future.set_result(result)
        finally:
            self._in_flight -= 1
            self._pump()

    async def drain(self) -> None:
        """Wait until everything submitted so far has crossed."""
        while self._tasks or self._pending:
            self._pump()
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
