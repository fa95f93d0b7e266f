"""EventSinkLoop: the Redis event stream into the analytics store, in batches, at least once, idempotently.

Each pass reads one batch through the consumer group (first entries a dead or stuck consumer left
pending, claimed with XAUTOCLAIM once idle for `claim_idle` seconds; otherwise new entries), inserts
it, and only then XACKs. A crash between insert and ack redelivers the entries; the store drops events
it already holds (event id), so nothing is counted twice. A batch closes at `batch_size` events or
`max_latency` seconds after its first entry, whichever comes first.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from dataclasses import dataclass, field

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from analytics.store import AnalyticsStore
from schemas.events import Event, events_msgpack_decoder
from store import keyspace

log = logging.getLogger("mailers.analytics.sink")
Entry = tuple[bytes, dict[bytes, bytes]]


@dataclass
class Batch:
    entry_ids: list[bytes] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    claimed: bool = False


@dataclass
class SinkStats:
    events: int = 0
    batches: int = 0
    claimed_entries: int = 0
    undecodable_entries: int = 0
    last_batch_at: float = 0.0


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class EventSinkLoop:
    def __init__(
        self,
        redis: aioredis.Redis,
        store: AnalyticsStore,
        *,
        group: str = "analytics",
        consumer: str | None = None,
        batch_size: int = 5000,
        max_latency: float = 0.25,
        claim_idle: float = 30.0,
        read_entries: int = 500,
        stream: str = keyspace.EVENT_STREAM,
    ) -> None:
        self.redis, self.store, self.group, self.stream = redis, store, group, stream
        self.consumer = consumer or default_consumer()
        self.batch_size, self.max_latency = batch_size, max_latency
        self.claim_idle_ms, self.read_entries = int(claim_idle * 1000), read_entries
        self.stats = SinkStats()
        self._group_ready = False
        self._unfinished: Batch | None = None  # a batch whose insert or ack failed: retried first
        self._events_per_entry: float | None = None  # learnt from what was read, to size each read

    async def ensure_group(self) -> None:
        """Create the consumer group at the start of the stream (history is replayed; inserts dedupe)."""
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def read_batch(self) -> Batch:
        await self.ensure_group()
        batch = await self._claim()
        if batch.entry_ids:
            return batch
        idle_until = time.monotonic() + self.max_latency
        while not batch.entry_ids:  # the first entries: short blocking reads, up to max_latency
            wait = idle_until - time.monotonic()
            if wait <= 0:
                return batch
            # Short blocking reads: a long one would outlast the client's socket timeout.
            self._add(
                batch, await self._read_new(max(1, int(min(wait, 1.0) * 1000)), self._entries_wanted(0))
            )
        # Then gather until the batch is full or max_latency has passed since its first entry. While the
        # stream is drained, sleep rather than block on it: a trickle of entries (one per dispatch chunk)
        # then costs one read per batch instead of a read, a wake-up and a reply per entry.
        deadline = time.monotonic() + self.max_latency
        while len(batch.events) < self.batch_size:
            wanted = self._entries_wanted(len(batch.events))
            entries = await self._read_new(None, wanted)
            self._add(batch, entries)
            if len(entries) < wanted:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await asyncio.sleep(remaining)
        return batch

    async def _claim(self) -> Batch:
        """Entries pending longer than claim_idle (a dead consumer's, or ours from before a restart)."""
        batch, start = Batch(claimed=True), "0-0"
        while len(batch.events) < self.batch_size:
            reply = await self.redis.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                self.claim_idle_ms,
                start_id=start,
                count=self._entries_wanted(len(batch.events)),
            )
            start, entries, deleted = reply[0], reply[1], (reply[2] if len(reply) > 2 else [])
            if deleted:  # trimmed from the stream while pending: nothing left to insert
                await self.redis.xack(self.stream, self.group, *deleted)
            self._add(batch, [e for e in entries if e[1]])
            if not entries or start in (b"0-0", "0-0"):
                break
        self.stats.claimed_entries += len(batch.entry_ids)
        return batch

    def _entries_wanted(self, events_in_hand: int) -> int:
        """How many entries to read so the batch ends near batch_size (producers put many events in one)."""
        if self._events_per_entry is None:
            return 1
        return max(
            1, min(self.read_entries, math.ceil((self.batch_size - events_in_hand) / self._events_per_entry))
        )

    async def _read_new(self, block_ms: int | None, count: int) -> list[Entry]:
        """New entries; `block_ms=None` answers at once, even with none."""
        reply = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        return reply[0][1] if reply else []

    def _add(self, batch: Batch, entries: list[Entry]) -> None:
        before = len(batch.events)
        for entry_id, fields in entries:
            batch.entry_ids.append(entry_id)
            try:
                batch.events.extend(events_msgpack_decoder.decode(fields[keyspace.EVENT_FIELD]))
            except (KeyError, msgspec.DecodeError) as exc:
                # Retrying cannot fix a malformed entry: log it, ack it with the batch, move on.
                self.stats.undecodable_entries += 1
                log.error("event stream entry %r is not a msgpack list of events: %s", entry_id, exc)
        if entries:
            per_entry = max(1.0, (len(batch.events) - before) / len(entries))
            last = self._events_per_entry
            self._events_per_entry = per_entry if last is None else 0.5 * last + 0.5 * per_entry

    async def commit(self, batch: Batch) -> int:
        """Insert, then acknowledge. Returns how many events the batch held."""
        if batch.events:
            await self.store.insert(batch.events)
        for start in range(0, len(batch.entry_ids), 1000):
            await self.redis.xack(self.stream, self.group, *batch.entry_ids[start : start + 1000])
        if batch.entry_ids:
            self.stats.events += len(batch.events)
            self.stats.batches += 1
            self.stats.last_batch_at = time.time()
        return len(batch.events)

    async def run_once(self) -> int:
        """One batch: read (or reclaim), insert, ack. Returns the number of events; 0 when idle."""
        batch = self._unfinished or await self.read_batch()
        self._unfinished = batch
        count = await self.commit(batch)
        self._unfinished = None
        return count

    async def run(self, stop: asyncio.Event, *, retry_delay: float = 1.0) -> None:
        """Until `stop` is set, then finish the batches in hand.

        A reader and a writer joined by a one-batch queue: while the store inserts one batch (off the
        event loop, mostly outside the GIL) the next is read and decoded. A failing Redis or store is
        retried after `retry_delay`, doubling up to 30 s; a batch is retried until it is stored.
        """
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=1)
        writer = asyncio.create_task(self._write_batches(queue, retry_delay))
        try:
            await self._read_batches(queue, stop, retry_delay)
        finally:
            await queue.put(None)
            await writer

    async def _read_batches(
        self, queue: asyncio.Queue[Batch | None], stop: asyncio.Event, retry_delay: float
    ) -> None:
        delay = retry_delay
        while not stop.is_set():
            try:
                batch = await self.read_batch()
                delay = retry_delay
            except Exception as exc:
                log.warning("event sink read failed, retrying in %.1fs: %s", delay, exc)
                await _sleep_unless(stop, delay)
                delay = min(delay * 2, 30.0)
                continue
            if batch.entry_ids:
                await queue.put(batch)

    async def _write_batches(self, queue: asyncio.Queue[Batch | None], retry_delay: float) -> None:
        while (batch := await queue.get()) is not None:
            delay = retry_delay
            while True:
                try:
                    await self.commit(batch)
                    break
                except Exception as exc:
                    log.warning("event sink insert failed, retrying in %.1fs: %s", delay, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
