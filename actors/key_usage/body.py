"""KeyUsage's body: folds a batch of API key uses and writes it to Redis in one pipeline.

Losing the counts of a batch in flight when a process dies is acceptable: they are statistics, not
state anything depends on. The work arrives as calls (`record`); nothing runs between them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from actors.stepping import until_idle
from store import keyspace

Use = tuple[str, int]  # (key id, used at in epoch milliseconds)


class KeyUsageBody:
    def __init__(self, redis: aioredis.Redis, *, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.clock = clock  # the uses carry their own times; kept so every body has the same shape

    async def record(self, uses: list[Use]) -> int:
        """Add each key's count and keep its latest use; returns how many keys were written."""
        folded: dict[str, tuple[int, int]] = {}
        for key_id, used_ms in uses:
            count, last = folded.get(key_id, (0, 0))
            folded[key_id] = (count + 1, max(last, used_ms))
        async with self.redis.pipeline(transaction=False) as pipe:
            for key_id, (count, last) in folded.items():
                pipe.hincrby(keyspace.key_usage(key_id), "count", count)
                pipe.hset(keyspace.key_usage(key_id), "last_used_ms", last)
            await pipe.execute()
        return len(folded)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def step(self) -> int:
        """Nothing runs between calls: every step is idle."""
        return 0

    async def run_until_idle(self) -> int:
        return await until_idle(self.step)

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
