"""Reading a Redis stream as one consumer of a group, the way every consumer here must.

First what this consumer already held but had not acked (after a start, or after an error: the
reply it never recorded), then, every `reclaim_idle_ms`, entries another consumer left pending that
long (it died), then new entries, blocking up to `block_ms`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio as aioredis

Entries = list[tuple[bytes, dict[bytes, bytes]]]


class GroupReader:
    def __init__(
        self,
        redis: aioredis.Redis,
        stream: str,
        group: str,
        consumer: str,
        *,
        count: int,
        block_ms: int,
        reclaim_idle_ms: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis, self.stream, self.group, self.consumer = redis, stream, group, consumer
        self.count, self.block_ms, self.reclaim_idle_ms = count, block_ms, reclaim_idle_ms
        self.clock = clock
        self._own_pending_done = False
        self._last_reclaim = 0.0

    def reread_own(self) -> None:
        """After an error: what this consumer read but did not ack is read again first."""
        self._own_pending_done = False

    async def read(self) -> Entries:
        if not self._own_pending_done:
            entries = await self._read_group("0", block=None)
            if entries:
                return entries
            self._own_pending_done = True
        now = self.clock()
        if now - self._last_reclaim > self.reclaim_idle_ms / 1000:
            self._last_reclaim = now
            _, claimed, *_ = await self.redis.xautoclaim(
                self.stream, self.group, self.consumer, self.reclaim_idle_ms, "0-0", count=self.count
            )
            if claimed:
                return [(entry_id, fields) for entry_id, fields in claimed if fields]
        return await self._read_group(">", block=self.block_ms)

    async def _read_group(self, start: str, *, block: int | None) -> Entries:
        reply = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=self.count, block=block
        )
        return (
            [(entry_id, fields) for _, items in reply for entry_id, fields in items if fields]
            if reply
            else []
        )
