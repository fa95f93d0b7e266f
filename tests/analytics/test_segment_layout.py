"""ClickHouse's copies of the subscriber mirror for segment queries (migration 0007: segment_subscribers,
segment_memberships, ordered by UInt64 keys): they hold the same newest rows as the mirror however
batches are replayed or arrive late, the migration's backfill rebuilds them from the mirror, and
erasure leaves nothing of the person in them."""

from __future__ import annotations

import random

from analytics.migrations import load
from tests.analytics.conftest import rows_of
from tests.analytics.segment_dataset import IDS, WS, build

SUBSCRIBERS = "workspace, id, email, name, attributes, status, created_at, version, deleted"
MEMBERSHIPS = "workspace, list_id, {key}, status, version"


async def mirror(store) -> tuple[set[tuple], set[tuple]]:
    """The newest rows of the 0003 tables, keyed as the segment tables are."""
    return (
        await rows_of(
            store, f"SELECT cityHash64(id), cityHash64(email), {SUBSCRIBERS} FROM subscribers FINAL"
        ),
        await rows_of(
            store, f"SELECT {MEMBERSHIPS.format(key='cityHash64(subscriber_id)')} FROM memberships FINAL"
        ),
    )


async def segment_tables(store) -> tuple[set[tuple], set[tuple]]:
    return (
        await rows_of(store, f"SELECT key, email_key, {SUBSCRIBERS} FROM segment_subscribers FINAL"),
        await rows_of(
            store, f"SELECT {MEMBERSHIPS.format(key='subscriber_key')} FROM segment_memberships FINAL"
        ),
    )


async def _load(store) -> None:
    first, later = build()
    shuffled = first[:]
    random.Random(11).shuffle(shuffled)
    # Replays and a late older update between the halves, as in the parity tests.
    for batch in (shuffled[:15], later, shuffled[15:], later[:2]):
        await store.insert(batch)


async def test_the_segment_tables_follow_the_mirror(ch):
    await _load(ch)
    subscribers, memberships = await mirror(ch)
    assert len(subscribers) == 8 and len(memberships) == 7  # 7 in acme (fay a tombstone), bo in beta
    assert await segment_tables(ch) == (subscribers, memberships)
    attributes = await rows_of(
        ch,
        f"SELECT attr_strings['plan'], attr_numbers['age'] FROM segment_subscribers FINAL "
        f"WHERE id = '{IDS['ana']}' AND workspace = '{WS}'",
    )
    assert attributes == {("pro", 34.0)}


async def test_the_backfill_rebuilds_the_segment_tables_from_the_mirror(ch):
    await _load(ch)
    expected = await mirror(ch)
    for table in ("segment_subscribers", "segment_memberships"):
        await ch._run(ch._query, f"TRUNCATE TABLE {table}", {})
    assert await segment_tables(ch) == (set(), set())
    migration = next(m for m in load("clickhouse") if m.name == "segment_layout")
    backfills = [s for s in migration.statements if s.startswith("INSERT INTO segment_")]
    assert len(backfills) == 2
    for _ in range(2):  # safe to run twice
        for statement in backfills:
            await ch._run(ch._query, statement, {})
        assert await segment_tables(ch) == expected


async def test_erasure_leaves_nothing_of_the_person_in_the_segment_tables(ch):
    await _load(ch)
    ana = IDS["ana"]
    await ch.erase_subscriber(WS, "ana@example.com", ana)
    # Every stored row, not only the newest: the person's older rows are gone, the tombstone stays.
    assert await rows_of(ch, f"SELECT email, deleted FROM segment_subscribers WHERE id = '{ana}'") == {
        ("", 1)
    }
    assert (
        await rows_of(ch, "SELECT id FROM segment_subscribers WHERE lower(email) = 'ana@example.com'")
        == set()
    )
    assert (
        await rows_of(ch, f"SELECT * FROM segment_memberships WHERE subscriber_key = cityHash64('{ana}')")
        == set()
    )
    # The others' rows stay.
    assert (
        len(
            await rows_of(
                ch, f"SELECT * FROM segment_memberships WHERE subscriber_key = cityHash64('{IDS['bo']}')"
            )
        )
        == 1
    )
