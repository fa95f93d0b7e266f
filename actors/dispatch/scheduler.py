"""Moves due messages (send_at reached, retry delay over, quota refilled) onto their server's stream."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from actors.dispatch.records import DispatchRecords

log = logging.getLogger("mailers.scheduler")


def run_scheduler(redis: aioredis.Redis, *, interval: float = 0.05, batch: int = 500,
                  clock: Callable[[], float] = time.time) -> Callable[[asyncio.Event], Awaitable[None]]:
    records = DispatchRecords(redis)

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
