"""GroupReader on a real Redis: the one place consumer groups are created and pending entries reclaimed."""

from __future__ import annotations

from store.group_reader import START, GroupReader, walk_ended

STREAM = "test:stream"


def reader(redis, consumer: str = "c1", **options) -> GroupReader:
    values = {"count": 10, "block_ms": 10, "reclaim_idle_ms": 0, **options}
    return GroupReader(redis, STREAM, "g", consumer, **values)


async def test_ensure_group_creates_once_and_the_start_decides_what_is_read(redis):
    await redis.xadd(STREAM, {b"f": b"history"})
    assert await reader(redis).ensure_group("0") is True
    assert await reader(redis).ensure_group("0") is False  # BUSYGROUP: another process made it
    assert [f[b"f"] for _, f in await reader(redis).read()] == [b"history"]
    late = GroupReader(redis, STREAM, "late", "c1", count=10, block_ms=10, reclaim_idle_ms=60_000)
    assert await late.ensure_group("$") is True
    await redis.xadd(STREAM, {b"f": b"new"})
    assert [f[b"f"] for _, f in await late.read()] == [b"new"]


async def test_ensure_group_makes_the_stream(redis):
    assert await reader(redis).ensure_group() is True
    assert await redis.exists(STREAM) == 1


async def test_reclaim_walks_a_dead_consumers_entries_page_by_page(redis):
    await reader(redis).ensure_group()
    ids = [await redis.xadd(STREAM, {b"n": str(i).encode()}) for i in range(5)]
    assert len(await reader(redis, "dead").read_new()) == 5
    await redis.xdel(STREAM, ids[0])  # trimmed while pending: acknowledged, not handed out
    successor = reader(redis, "successor")
    cursor, first = await successor.reclaim(2)  # the trimmed entry counts towards the page's COUNT
    assert [entry_id for entry_id, _ in first] == ids[1:2] and not walk_ended(cursor)
    cursor, rest = await successor.reclaim(10, cursor)
    assert [entry_id for entry_id, _ in rest] == ids[2:] and walk_ended(cursor)
    assert successor.reclaimed == 4
    pending = await redis.xpending_range(STREAM, "g", min="-", max="+", count=10)
    assert {p["consumer"] for p in pending} == {b"successor"} and len(pending) == 4


async def test_own_pending_entries_come_first_until_none_are_left(redis):
    own = reader(redis, reclaim_idle_ms=60_000)
    await own.ensure_group()
    first = await redis.xadd(STREAM, {b"n": b"1"})
    assert [i for i, _ in await own.read()] == [first]  # new: read, then the consumer "crashes"
    restarted = reader(redis, reclaim_idle_ms=60_000)
    assert [i for i, _ in await restarted.read_own()] == [first]
    await redis.xack(STREAM, "g", first)
    assert await restarted.read_own() == [] and await restarted.read_own() == []
    assert START == "0-0"


async def test_an_entry_between_the_empty_read_and_the_wait_ends_the_wait_at_once(redis):
    """The idle wait's mark is taken before the group read: an entry that lands after the read found
    nothing, but before the wait began, ends the wait at once instead of being missed for `block_ms`
    (a wait from `$` would sleep the whole block here)."""
    import asyncio

    one = reader(redis)
    await one.ensure_group()
    await redis.xadd(STREAM, {b"f": b"old"})
    assert len(await one.read_new()) == 1
    mark = await one.last_id()
    assert await one.read_new() == []  # nothing new: the consumer would now wait
    await redis.xadd(STREAM, {b"f": b"between"})  # lands before the wait starts
    assert await asyncio.wait_for(one.wait_for_entry(120_000, after=mark), 10) is True
    assert [f[b"f"] for _, f in await one.read_new()] == [b"between"]
    mark = await one.last_id()
    assert await one.wait_for_entry(50, after=mark) is False  # none after it: the time runs out


async def test_the_mark_of_an_empty_stream_waits_for_its_first_entry(redis):
    one = reader(redis)
    await one.ensure_group()
    assert await one.last_id() == "0-0"
    await redis.xadd(STREAM, {b"f": b"first"})
    assert await one.wait_for_entry(50, after="0-0") is True
