"""EventSinkLoop on a real Redis: batches, acks, reclaiming a dead consumer's entries, replays."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import msgspec
import pytest

from actors.event_sink.body import EventSinkLoop
from analytics.queries import ExportQuery, SummaryQuery
from analytics.store import open_store
from store import keyspace
from tests.analytics.conftest import store_url
from tests.analytics.events_factory import NOW, event

_encode = msgspec.msgpack.Encoder().encode
WINDOW = SummaryQuery(from_=NOW - timedelta(days=1), to=NOW)


def sends(count: int, offset: int = 0):
    return [
        event(
            "message.sent",
            NOW - timedelta(seconds=i + 1),
            message_id=f"msg_{offset + i}",
            event_id=f"evt_s{offset + i:08d}",
        )
        for i in range(count)
    ]


async def publish(redis, events, per_entry: int) -> None:
    for start in range(0, len(events), per_entry):
        await redis.xadd(
            keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: _encode(events[start : start + per_entry])}
        )


async def sent_count(store) -> int:
    return (await store.summary("acme", WINDOW, now=NOW)).totals.sent


async def pending(redis, group: str = "analytics") -> int:
    return (await redis.xpending(keyspace.EVENT_STREAM, group))["pending"]


async def test_one_pass_inserts_then_acks(redis, store):
    await publish(redis, sends(3000), per_entry=1000)
    sink = EventSinkLoop(redis, store, consumer="c1")
    assert await sink.step() == 3000
    assert await sent_count(store) == 3000
    assert await pending(redis) == 0
    assert sink.stats.events == 3000 and sink.stats.batches == 1
    assert await sink.step() == 0


async def test_batches_close_at_batch_size_and_latency(redis, store):
    await publish(redis, sends(3000), per_entry=1000)
    # EventSinkLoop reads time.monotonic itself (no clock parameter yet), so the waits here are real but
    # short; only their lower bounds are behaviour. How long they take at most is `bench --phases micro`.
    sink = EventSinkLoop(redis, store, consumer="c1", batch_size=1500, read_entries=1, max_latency=0.3)
    started = time.monotonic()
    assert await sink.step() == 2000  # two entries reach the batch size: no waiting for the latency
    assert await sink.step() == 1000  # the last entry waits max_latency for company that never comes
    assert time.monotonic() - started >= 0.3
    idle = EventSinkLoop(redis, store, consumer="c2", max_latency=0.2)
    started = time.monotonic()
    assert await idle.step() == 0
    assert time.monotonic() - started >= 0.2


async def test_crash_between_insert_and_ack_counts_nothing_twice(redis, store):
    await publish(redis, sends(1200), per_entry=400)
    crashed = EventSinkLoop(redis, store, consumer="dead")
    batch = await crashed.read_batch()
    await store.insert(batch.events)  # ... and the process dies before XACK
    assert await pending(redis) == 3
    successor = EventSinkLoop(redis, store, consumer="successor", claim_idle=0.0)
    assert await successor.step() == 1200  # reclaimed with XAUTOCLAIM, inserted again
    assert successor.stats.claimed_entries == 3
    assert await pending(redis) == 0
    assert await sent_count(store) == 1200
    lines = b"".join(
        [c async for c in store.export_events("acme", ExportQuery(from_=WINDOW.from_, to=NOW), now=NOW)]
    )
    assert lines.count(b"\n") == 1200


async def test_replaying_the_whole_stream_changes_nothing(redis, store):
    await publish(redis, sends(500), per_entry=100)
    await EventSinkLoop(redis, store, consumer="c1").step()
    # a second group reads the stream from the start, as a restored deployment would
    assert await EventSinkLoop(redis, store, group="analytics-replay", consumer="c1").step() == 500
    assert await sent_count(store) == 500


async def test_undecodable_entries_are_logged_and_acked(redis, store):
    await redis.xadd(keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: b"\xc1 not msgpack"})
    await redis.xadd(keyspace.EVENT_STREAM, {b"other": b"x"})
    await publish(redis, sends(10), per_entry=10)
    sink = EventSinkLoop(redis, store, consumer="c1")
    assert await sink.step() == 10
    assert sink.stats.undecodable_entries == 2
    assert await pending(redis) == 0


async def test_run_until_stopped(redis, store):
    sink = EventSinkLoop(redis, store, consumer="c1", max_latency=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    await publish(redis, sends(50), per_entry=25)
    async with asyncio.timeout(10):
        while sink.stats.events < 50:
            await asyncio.sleep(0.02)
    await publish(redis, sends(5, offset=50), per_entry=5)
    async with asyncio.timeout(10):
        while sink.stats.events < 55:
            await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert await sent_count(store) == 55


async def test_reads_are_sized_to_the_batch_when_entries_hold_many_events(redis, store):
    await publish(redis, sends(20_000), per_entry=1000)
    sink = EventSinkLoop(redis, store, consumer="c1", batch_size=5000)
    assert [await sink.step() for _ in range(4)] == [5000] * 4
    assert await sent_count(store) == 20_000


async def test_burst_mode_drains_every_batch_without_waiting(redis, store):
    await publish(redis, sends(2500), per_entry=500)
    sink = EventSinkLoop(redis, store, consumer="c1", batch_size=1000, max_latency=30.0)
    started = time.monotonic()
    assert await sink.run_until_idle() == 2500  # a 30 s latency would show if any read lingered
    assert time.monotonic() - started < 10.0
    assert sink.stats.batches >= 3 and await pending(redis) == 0
    assert await sent_count(store) == 2500


async def test_the_sink_creates_its_group_at_the_start_of_the_stream(redis, store):
    await publish(redis, sends(20), per_entry=10)  # appended before any consumer existed
    sink = EventSinkLoop(redis, store, consumer="c1")
    assert await sink.run_until_idle() == 20
    # Its own group, made at the stream's start (it read the 2 entries already there), nothing pending.
    groups = {g["name"]: g for g in await redis.xinfo_groups(keyspace.EVENT_STREAM)}
    assert groups[b"analytics"]["entries-read"] == 2 and groups[b"analytics"]["pending"] == 0


async def test_retention_purge_cuts_at_the_injected_clock(redis, tmp_path, chdb_path):
    store = open_store(store_url("duckdb", tmp_path, chdb_path), tmp_path)  # ClickHouse expires by TTL
    await store.migrate()
    await publish(redis, sends(10), per_entry=10)  # NOW - 1 s ... NOW - 10 s
    later = (NOW + timedelta(days=3, seconds=-5.5)).timestamp()
    sink = EventSinkLoop(redis, store, consumer="c1", retention_days=3, clock=lambda: later)
    await sink.run_until_idle()
    assert await sink.purge_expired() == 5  # the five older than 3 days before the injected now
    window = SummaryQuery(from_=NOW - timedelta(days=1), to=NOW)
    assert (await store.summary("acme", window, now=NOW)).totals.sent == 5
    assert await EventSinkLoop(redis, store, consumer="c2").purge_expired() is None  # no retention set
    await store.close()


async def test_a_batch_grows_while_the_writer_is_busy(redis, store):
    """Past max_latency a batch closes unless `run`'s writer is still inserting the last one: then it
    takes in what arrives until the writer is free (it could not have been written sooner anyway)."""
    sink = EventSinkLoop(redis, store, consumer="c1", max_latency=0.05, read_entries=100)
    await publish(redis, sends(10), per_entry=10)
    await redis.xgroup_create(keyspace.EVENT_STREAM, "analytics", id="0")  # so `pending` can ask at once
    sink.writer_idle.clear()  # as `_write_batches` does while it inserts
    reading = asyncio.create_task(sink.read_batch())
    async with asyncio.timeout(10):
        while await pending(redis) < 1:  # the first entry has been read
            await asyncio.sleep(0.01)
    # Real time (the latency is on time.monotonic): well past max_latency the batch is still open ...
    await asyncio.sleep(0.3)
    assert not reading.done()
    await publish(redis, sends(20, offset=10), per_entry=20)
    sink.writer_idle.set()  # ... and once the writer is free it closes with what arrived meanwhile
    batch = await asyncio.wait_for(reading, 5)
    assert batch.size == 30
    assert await sink.commit(batch) == 30 and await sent_count(store) == 30


def test_the_batch_window_grows_with_the_insert_time_up_to_max_linger():
    from actors.event_sink.body import batch_window

    assert batch_window(0.25, 0.0, 0.1, 1.0) == 0.25  # no insert yet, or quick ones: max_latency
    assert batch_window(0.25, 0.02, 0.1, 1.0) == 0.25
    assert batch_window(0.25, 0.04, 0.1, 1.0) == pytest.approx(0.4)  # inserts ~10% of the time
    assert batch_window(0.25, 0.5, 0.1, 1.0) == 1.0  # never past max_linger


async def test_a_slow_insert_lengthens_the_next_batch_window(redis, store):
    sink = EventSinkLoop(redis, store, consumer="c1", max_latency=0.01, insert_share=0.001, max_linger=0.5)
    await publish(redis, sends(10), per_entry=10)
    assert await sink.step() == 10
    assert sink.insert_seconds > 0  # measured on the real store
    window = min(sink.insert_seconds / 0.001, 0.5)  # far past max_latency (0.01 s)
    assert window > 0.1
    await publish(redis, sends(1, offset=10), per_entry=1)
    started = time.monotonic()
    assert await sink.step() == 1  # one entry, then the wait for company until the window ends
    assert time.monotonic() - started >= window * 0.99
