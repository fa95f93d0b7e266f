"""Moves due messages (send_at reached, retry delay over, quota refilled) onto their server's stream."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from store.ledger import MessageLedger
from store.stream_trim import StreamTrimmer

log = logging.getLogger("mailers.scheduler")
SCHEDULER_BATCH = 500  # due messages moved per script call
# Consumed stream entries live at most about this long. Every 5 s, `m:events` held 20-60 MB of consumed
# events while a campaign sent 5,000 messages a second (a tenth of a 1M campaign's 300 MB); a trim is
# one short script a stream (store/stream_trim.py).
STREAM_TRIM_SECONDS = 1.0


def run_scheduler(
    redis: aioredis.Redis,
    *,
    interval: float = 0.05,
    batch: int = SCHEDULER_BATCH,
    clock: Callable[[], float] = time.time,
) -> Callable[[asyncio.Event], Awaitable[None]]:
    records = MessageLedger(redis)

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                moved = await records.move_due(int(clock() * 1000), batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler step failed")
                moved = 0
            if moved < batch:
                try:
                    await asyncio.wait_for(stop.wait(), interval)
                except TimeoutError:
                    pass

    return run


def run_index_trim(
    redis: aioredis.Redis,
    retention_seconds: int,
    *,
    interval: float = 60.0,
    clock: Callable[[], float] = time.time,
) -> Callable[[asyncio.Event], Awaitable[None]]:
    """Every `interval`, drop ids older than the retention from each workspace's message index (the
    messages themselves expire on their own once finished)."""
    return _every(
        interval,
        lambda: trim_message_indexes(redis, int((clock() - retention_seconds) * 1000)),
        "message index trim",
    )


def run_stream_trim(
    redis: aioredis.Redis, *, interval: float = STREAM_TRIM_SECONDS
) -> Callable[[asyncio.Event], Awaitable[None]]:
    """Every `interval`, the entries of `m:events` and of the dispatch streams that every consumer group
    has consumed are removed (store/stream_trim.py: nothing while one of the groups is missing)."""
    return _every(interval, StreamTrimmer(redis).trim_all, "stream trim")


def _every(
    interval: float, work: Callable[[], Awaitable[object]], what: str
) -> Callable[[asyncio.Event], Awaitable[None]]:
    """`work` every `interval` until `stop`; a failure is logged and the next round comes as usual."""

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed", what)
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass

    return run


async def trim_message_indexes(redis: aioredis.Redis, before_ms: int) -> int:
    """Drop ids older than `before_ms` from every workspace's message index (the ledger's)."""
    return await MessageLedger(redis).trim_indexes(before_ms)
