"""Reading a Redis stream as one consumer of a group, the way every consumer here must.

`ensure_group` creates the group (and the stream) where it does not exist yet; every consumer calls it
before its first read and again after an error (a restarted Redis may have lost both).

`read` is the usual order: first what this consumer already held but had not acked (after a start, or
after an error: the reply it never recorded), then, every `reclaim_idle_ms`, entries another consumer
left pending that long (it died), then new entries, blocking up to `block_ms`. A consumer that sizes
its own batches (the event sink) composes the same steps: `read_own`, `reclaim`, `read_new`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

import redis.asyncio as aioredis

from store.replies import group_reads

Entries = list[tuple[bytes, dict[bytes, bytes]]]
START = "0-0"  # the cursor of a walk over the pending entries that has not started, or has ended


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
        self.reclaimed = 0  # entries taken over from other consumers, for the consumers' statistics
        self._own_pending_done = False
        self._last_reclaim = 0.0

    async def ensure_group(self, start: str = "0") -> bool:
        """Create the group at `start` ("0": the stream's history is read; "$": only what comes next).
        True when it was created, False when it existed (BUSYGROUP: another process, or an earlier run)."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id=start, mkstream=True)
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    def reread_own(self) -> None:
        """After an error: what this consumer read but did not ack is read again first."""
        self._own_pending_done = False

    async def read(self) -> Entries:
        entries = await self.read_own()
        if entries:
            return entries
        now = self.clock()
        if now - self._last_reclaim > self.reclaim_idle_ms / 1000:
            self._last_reclaim = now
            _, claimed = await self.reclaim()
            if claimed:
                return claimed
        return await self.read_new(block_ms=self.block_ms)

    async def read_own(self, count: int | None = None) -> Entries:
        """This consumer's unacked entries, until a read finds none left (then [] until `reread_own`)."""
        if self._own_pending_done:
            return []
        entries = await self._read_group("0", count, block=None)
        self._own_pending_done = not entries
        return entries

    async def reclaim(
        self, count: int | None = None, cursor: str | bytes = START
    ) -> tuple[bytes | str, Entries]:
        """One page of entries pending longer than `reclaim_idle_ms`, taken over; and the cursor to walk on
        from (`START` again when the walk is over). Entries trimmed from the stream while pending are
        acknowledged: there is nothing left to process."""
        reply = await self.redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            self.reclaim_idle_ms,
            start_id=cursor,
            count=count or self.count,
        )
        following, claimed, deleted = reply[0], reply[1], (reply[2] if len(reply) > 2 else [])
        if deleted:
            await self.redis.xack(self.stream, self.group, *deleted)
        entries = [(entry_id, fields) for entry_id, fields in claimed if fields]
        self.reclaimed += len(entries)
        return following, entries

    async def read_new(self, count: int | None = None, *, block_ms: int | None = None) -> Entries:
        """Entries never delivered to any consumer; `block_ms=None` answers at once, even with none."""
        return await self._read_group(">", count, block=block_ms)

    async def last_id(self) -> bytes | str:
        """The id of the stream's newest entry ("0-0" when it has none): the mark for `wait_for_entry`,
        taken before the read that found nothing new."""
        newest = await self.redis.xrevrange(self.stream, count=1)
        return cast(bytes, newest[0][0]) if newest else "0-0"

    async def wait_for_entry(self, block_ms: int, after: bytes | str) -> bool:
        """Block until the stream has an entry after `after` (at most `block_ms`), whichever consumer of
        the group it goes to: for a consumer with duties of its own that an entry handed to another
        consumer must still wake. With `after` taken before the group read that found nothing, an entry
        added between that read and this call ends the wait at once (a `$` would miss it). Whether one
        came (False: the time ran out)."""
        return bool(await self.redis.xread({self.stream: after}, count=1, block=block_ms))

    async def _read_group(self, start: str, count: int | None, *, block: int | None) -> Entries:
        reply = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=count or self.count, block=block
        )
        return [(entry_id, fields) for _, items in group_reads(reply) for entry_id, fields in items if fields]


def walk_ended(cursor: str | bytes) -> bool:
    """Whether a `reclaim` cursor says the walk over the pending entries is over."""
    return cursor in (START, START.encode())


async def ack_and_read_new(reader: GroupReader, acks: list[bytes], *, block_ms: int | None = None) -> Entries:
    """`reader.read_new`, with the XACK of entries handled before sent in the same round trip (one
    pipeline): a consumer that acks what it read last pass at its next read pays one round trip a pass
    instead of two. Entries are acked only once handled; a crash before the next read leaves them pending,
    to be read again (`read_own`)."""
    async with reader.redis.pipeline(transaction=False) as pipe:
        if acks:
            pipe.xack(reader.stream, reader.group, *acks)
        pipe.xreadgroup(
            reader.group, reader.consumer, {reader.stream: ">"}, count=reader.count, block=block_ms
        )
        replies = await pipe.execute()
    return [
        (entry_id, fields) for _, items in group_reads(replies[-1]) for entry_id, fields in items if fields
    ]
