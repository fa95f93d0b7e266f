"""EventSinkLoop: the Redis event stream into the analytics store, in batches, at least once, idempotently.

Each step reads one batch through the consumer group (first entries a dead or stuck consumer, or this
one before a restart, left pending, claimed once idle for `claim_idle` seconds; otherwise new entries),
inserts it, and only then XACKs. A crash between insert and ack redelivers the entries; the store
drops events it already holds (event id), so nothing is counted twice. A batch closes at
`batch_size` events or `max_latency` seconds after its first entry, whichever comes first — or later
when inserts are slow: the window is long enough for the inserts to take about `insert_share` (10%) of
the time, at most `max_linger` (1 s; `batch_window`); in `run`, a
batch whose latency has passed while the writer is still inserting the last one keeps growing until the
writer is free (it could not be written sooner): a backed-up stream goes in fewer, bigger inserts.

Events about an erased address (store/erasures.py) are dropped before the insert, and `erase_subscriber`
runs under the same lock as the insert, so a batch read before an erasure cannot land after it and
bring the person back. Subscriber events also fill the store's subscriber mirror (analytics/mirror.py)
within the same insert: a change is visible to segments one batch window (`max_latency`, longer while
inserts are slow, at most `max_linger`) later.

`run` also migrates the store first (retried until it works) and, where the backend has no TTL
(DuckDB), deletes expired events once an hour. The analytics store itself (backends, writer, queries)
stays in `analytics/`; this is only its feeder.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
import redis.asyncio as aioredis

from actors.stepping import until_idle
from analytics.errors import AnalyticsError
from analytics.store import AnalyticsStore
from schemas.events import Event, events_msgpack_decoder
from schemas.subscriber_chunks import NewMembers, chunk_decoder
from store import keyspace
from store.erasures import ErasureLedger
from store.group_reader import START, Entries, GroupReader, walk_ended

log = logging.getLogger("mailers.event_sink")
PURGE_EVERY_SECONDS = 3600.0


@dataclass
class Batch:
    entry_ids: list[bytes] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    # new subscribers as columnar chunks (`schemas/subscriber_chunks.py`): stored and mirrored column by
    # column, never expanded into events here
    chunks: list[NewMembers] = field(default_factory=list)
    chunk_events: int = 0  # the events the chunks stand for (two per subscriber)

    @property
    def size(self) -> int:
        return len(self.events) + self.chunk_events


@dataclass
class SinkStats:
    events: int = 0
    batches: int = 0
    claimed_entries: int = 0
    undecodable_entries: int = 0
    last_batch_at: float = 0.0


def batch_window(max_latency: float, insert_seconds: float, insert_share: float, max_linger: float) -> float:
    """How long a batch gathers after its first entry: `max_latency`, or longer when inserts are slow,
    so that the inserts' time stays near `insert_share` of the sink's (an insert has a fixed cost of tens
    of milliseconds in DuckDB, paid per batch however few events it holds; on a busy machine it takes
    longer, and the batches grow then, when the CPU is scarcest); never more than `max_linger`."""
    return max(max_latency, min(insert_seconds / insert_share, max_linger))


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class EventSinkLoop:
    def __init__(
        self,
        redis: aioredis.Redis,
        store: AnalyticsStore,
        *,
        group: str = keyspace.ANALYTICS_GROUP,
        consumer: str | None = None,
        batch_size: int = 5000,
        max_latency: float = 0.25,
        insert_share: float = 0.1,
        max_linger: float = 1.0,
        claim_idle: float = 30.0,
        read_entries: int = 500,
        stream: str = keyspace.EVENT_STREAM,
        retention_days: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis, self.store, self.clock = redis, store, clock
        self.batch_size, self.max_latency, self.read_entries = batch_size, max_latency, read_entries
        self.insert_share, self.max_linger = insert_share, max_linger
        self.insert_seconds = 0.0  # how long the last inserts took (moving average, wall time)
        # Short blocking reads for the first entries: a long one would outlast the client's socket timeout.
        self.reader = GroupReader(
            redis,
            stream,
            group,
            consumer or default_consumer(),
            count=read_entries,
            block_ms=max(1, int(min(max_latency, 1.0) * 1000)),
            reclaim_idle_ms=int(claim_idle * 1000),
            clock=clock,
        )
        self.retention = timedelta(days=retention_days) if retention_days else None
        self.stats = SinkStats()
        self.migrated = asyncio.Event()  # the store answers queries from then on
        self.erasures = ErasureLedger(redis)
        self._writing = asyncio.Lock()  # an insert and an erasure never interleave
        self._group_ready = False
        self._unfinished: Batch | None = None  # a batch whose insert or ack failed: retried first
        self._events_per_entry: float | None = None  # learnt from what was read, to size each read
        # Clear while `run`'s writer inserts a batch: the batch being read meanwhile keeps growing past
        # max_latency until the writer is free (it could not be written sooner), so a backed-up stream is
        # written in fewer, bigger inserts; each insert has a fixed cost of milliseconds (DuckDB plans
        # every statement) that small batches pay per handful of events.
        self.writer_idle = asyncio.Event()
        self.writer_idle.set()

    async def read_batch(self, *, wait: bool = True) -> Batch:
        """The next batch; `wait=False` (burst mode) never blocks nor lingers: what is there now."""
        if not self._group_ready:
            # A new group starts at "0": it reads what the stream still holds (consumed entries are trimmed
            # once every group has read them, store/stream_trim.py; the analytics store is the history).
            await self.reader.ensure_group("0")
            self._group_ready = True
        batch = Batch()
        # No `read_own` first: while the writer inserts one batch the next is read, and re-reading this
        # consumer's pending entries would read that batch again. They are reclaimed once idle instead.
        await self._claim(batch)
        if batch.entry_ids:
            return batch
        if not wait:
            self._add(batch, await self.reader.read_new(self._entries_wanted(0)))
            if not batch.entry_ids:
                return batch
        idle_until = time.monotonic() + self.max_latency
        while not batch.entry_ids:  # the first entries: short blocking reads, up to max_latency
            remaining = idle_until - time.monotonic()
            if remaining <= 0:
                return batch
            block_ms = max(1, int(min(remaining, 1.0) * 1000))
            self._add(batch, await self.reader.read_new(self._entries_wanted(0), block_ms=block_ms))
        await self._gather(batch, wait)
        return batch

    async def _gather(self, batch: Batch, wait: bool) -> None:
        """Until the batch is full or max_latency has passed since its first entry. While the stream is
        drained, sleep rather than block on it: a trickle of entries (one per dispatch chunk) then costs
        one read per batch instead of a read, a wake-up and a reply per entry. Latency is measured on
        the monotonic clock the event loop sleeps on, not on the injected wall clock."""
        deadline = time.monotonic() + batch_window(
            self.max_latency, self.insert_seconds, self.insert_share, self.max_linger
        )
        while batch.size < self.batch_size:
            wanted = self._entries_wanted(batch.size)
            entries = await self.reader.read_new(wanted)
            self._add(batch, entries)
            if len(entries) < wanted:
                remaining = deadline - time.monotonic()
                if not wait:
                    break
                if remaining <= 0:
                    if self.writer_idle.is_set():
                        break
                    await self.writer_idle.wait()  # then read what arrived meanwhile, and close
                    deadline = time.monotonic()
                    continue
                await asyncio.sleep(remaining)

    async def _claim(self, batch: Batch) -> None:
        """Entries pending longer than claim_idle (a dead consumer's), walked page by page."""
        cursor: str | bytes = START
        claimed_before = self.reader.reclaimed
        while batch.size < self.batch_size:
            cursor, entries = await self.reader.reclaim(self._entries_wanted(batch.size), cursor)
            self._add(batch, entries)
            if walk_ended(cursor):
                break
        self.stats.claimed_entries += self.reader.reclaimed - claimed_before

    def _entries_wanted(self, events_in_hand: int) -> int:
        """How many entries to read so the batch ends near batch_size (producers put many events in one)."""
        if self._events_per_entry is None:
            return 1
        return max(
            1, min(self.read_entries, math.ceil((self.batch_size - events_in_hand) / self._events_per_entry))
        )

    def _add(self, batch: Batch, entries: Entries) -> None:
        before = batch.size
        for entry_id, fields in entries:
            batch.entry_ids.append(entry_id)
            try:
                chunk = fields.get(keyspace.EVENT_CHUNK_FIELD)
                if chunk is not None:
                    batch.chunks.append(decoded := chunk_decoder.decode(chunk))
                    batch.chunk_events += 2 * len(decoded)
                else:
                    batch.events.extend(events_msgpack_decoder.decode(fields[keyspace.EVENT_FIELD]))
            except (KeyError, msgspec.DecodeError) as exc:
                # Retrying cannot fix a malformed entry: log it, ack it with the batch, move on.
                self.stats.undecodable_entries += 1
                log.error("event stream entry %r is not a msgpack list of events: %s", entry_id, exc)
        if entries:
            per_entry = max(1.0, (batch.size - before) / len(entries))
            last = self._events_per_entry
            self._events_per_entry = per_entry if last is None else 0.5 * last + 0.5 * per_entry

    async def commit(self, batch: Batch) -> int:
        """Insert, then acknowledge. Returns how many events the batch held (a chunk's two per row)."""
        if batch.events or batch.chunks:
            async with self._writing:
                events = await self.erasures.drop_erased(batch.events)
                chunks = await self.erasures.drop_erased_members(batch.chunks)
                started = time.monotonic()
                await self.store.insert(events, chunks)
                took = time.monotonic() - started
                self.insert_seconds = took if not self.insert_seconds else 0.5 * (self.insert_seconds + took)
        reader = self.reader
        for start in range(0, len(batch.entry_ids), 1000):
            await self.redis.xack(reader.stream, reader.group, *batch.entry_ids[start : start + 1000])
        if batch.entry_ids:
            self.stats.events += batch.size
            self.stats.batches += 1
            self.stats.last_batch_at = self.clock()
        return batch.size

    async def erase_subscriber(self, workspace: str, email: str, subscriber_id: str) -> None:
        """Record the erasure (so the stream cannot re-add the person), then anonymise the store."""
        async with self._writing:
            await self.erasures.record(workspace, email, int(self.clock() * 1000))
            await self.store.erase_subscriber(workspace, email, subscriber_id)

    async def step(self, *, wait: bool = True) -> int:
        """One batch: read (or reclaim), insert, ack. Returns the number of events; 0 when idle."""
        batch = self._unfinished or await self.read_batch(wait=wait)
        self._unfinished = batch
        count = await self.commit(batch)
        self._unfinished = None
        return count

    async def run_until_idle(self) -> int:
        """Steps until one finds nothing (burst mode, for tests and one-off drains); the events stored."""
        return await until_idle(functools.partial(self.step, wait=False))

    async def run(self, stop: asyncio.Event, *, retry_delay: float = 1.0) -> None:
        """Migrate, then batches until `stop` is set, then finish the batches in hand.

        A reader and a writer joined by a one-batch queue: while the store inserts one batch (off the
        event loop, mostly outside the GIL) the next is read and decoded. A failing Redis or store is
        retried after `retry_delay`, doubling up to 30 s; a batch is retried until it is stored.
        """
        await self.migrate(stop)
        purging = asyncio.create_task(self._purge_periodically(stop))
        queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=1)
        writer = asyncio.create_task(self._write_batches(queue, retry_delay))
        try:
            await self._read_batches(queue, stop, retry_delay)
        finally:
            purging.cancel()
            await queue.put(None)
            await writer

    async def migrate(self, stop: asyncio.Event) -> None:
        delay = 1.0
        while not self.migrated.is_set() and not stop.is_set():
            try:
                await self.store.migrate()
                self.migrated.set()
            except AnalyticsError as exc:
                log.warning("analytics migration failed, retrying in %.0fs: %s", delay, exc)
                await _sleep_unless(stop, delay)
                delay = min(delay * 2, 30.0)

    async def purge_expired(self) -> int | None:
        """DuckDB has no TTL: delete expired events (ClickHouse drops parts by its TTL). None: no purge."""
        purge = getattr(self.store, "purge_expired", None)
        if self.retention is None or purge is None:
            return None
        return await purge(self.retention, now=datetime.fromtimestamp(self.clock(), UTC))

    async def _purge_periodically(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                removed = await self.purge_expired()
                if removed is None:
                    return
                log.info("retention: %d events older than %s deleted", removed, self.retention)
            except AnalyticsError as exc:
                log.warning("retention purge failed: %s", exc)
            await _sleep_unless(stop, PURGE_EVERY_SECONDS)

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
                self._group_ready = False  # a restarted Redis may have lost the group
                await _sleep_unless(stop, delay)
                delay = min(delay * 2, 30.0)
                continue
            if batch.entry_ids:
                await queue.put(batch)

    async def _write_batches(self, queue: asyncio.Queue[Batch | None], retry_delay: float) -> None:
        while (batch := await queue.get()) is not None:
            delay = retry_delay
            self.writer_idle.clear()
            try:
                while True:
                    try:
                        await self.commit(batch)
                        break
                    except Exception as exc:
                        log.warning("event sink insert failed, retrying in %.1fs: %s", delay, exc)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 30.0)
            finally:
                self.writer_idle.set()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
