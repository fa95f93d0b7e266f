"""The adaptive batcher: one call at low load, growing batches under load, bounded queue."""

from __future__ import annotations

import asyncio

import pytest

from store.coalescer import Backpressure, Coalescer


async def test_items_submitted_while_a_call_runs_leave_together():
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def send(items: list[int]) -> list[int]:
        batches.append(items)
        await release.wait()
        return [i * 10 for i in items]

    coalescer = Coalescer(send, max_in_flight=1)
    first = asyncio.create_task(coalescer.submit(1))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(coalescer.submit(i)) for i in range(2, 50)]
    await asyncio.sleep(0)
    release.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [i * 10 for i in range(2, 50)]
    assert batches == [[1], list(range(2, 50))]


async def test_batches_respect_max_batch_and_in_flight():
    in_flight = peak = 0

    async def send(items: list[int]) -> list[int]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0)  # a yield lets the other lane start: overlap without a clock
        in_flight -= 1
        assert len(items) <= 7
        return items

    coalescer = Coalescer(send, max_in_flight=2, max_batch=7)
    assert await coalescer.submit_many(list(range(100))) == list(range(100))
    assert peak == 2 and coalescer.calls == 15


async def test_errors_reach_every_waiter_of_the_batch():
    async def send(items: list[int]) -> list[int]:
        raise ConnectionError("actor died")

    coalescer = Coalescer(send)
    results = await asyncio.gather(coalescer.submit(1), coalescer.submit(2), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_bounded_queue_pushes_back():
    async def send(items: list[int]) -> list[int]:
        await asyncio.Event().wait()  # never answers: the queue behind it only fills
        return items

    coalescer = Coalescer(send, max_in_flight=1, max_pending=3)
    coalescer.submit_nowait(0)  # in flight
    for i in range(3):
        coalescer.submit_nowait(i)
    with pytest.raises(Backpressure):
        coalescer.submit_nowait(99)


async def test_inline_alone_sends_a_lone_item_in_the_submitting_task_and_queues_what_comes_meanwhile():
    senders: list[asyncio.Task | None] = []
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def send(items: list[int]) -> list[int]:
        senders.append(asyncio.current_task())
        batches.append(items)
        await release.wait()
        return [i * 10 for i in items]

    coalescer = Coalescer(send, max_in_flight=1, inline_alone=True)
    first = asyncio.create_task(coalescer.submit(1))
    await asyncio.sleep(0)
    assert senders == [first]  # crossed in its own task: no batch Task
    rest = [asyncio.create_task(coalescer.submit(i)) for i in range(2, 6)]
    await asyncio.sleep(0)
    release.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [20, 30, 40, 50]
    assert batches == [[1], [2, 3, 4, 5]]  # those that came while it was in flight left as one batch
    assert senders[1] not in (first, *rest)  # ... from a batch Task of the coalescer's
    assert coalescer.calls == 2
    await coalescer.drain()
