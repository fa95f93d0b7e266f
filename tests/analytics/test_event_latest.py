"""`event_latest` (ClickHouse migration 0008), what segment event conditions with `count_gte` 1 read: per
(workspace, type, recipient, campaign) it holds the newest stored event's time however batches are
replayed or arrive out of order, unmerged rows included; the migration's backfill rebuilds it from the
stored events; erasure removes the person's rows; the store gives it the events' retention."""

from __future__ import annotations

import random

from analytics.migrations import load
from analytics.store import open_store
from tests.analytics.conftest import rows_of, store_url
from tests.analytics.segment_dataset import WS, build

NEWEST = (
    "SELECT workspace, type, recipient_key, campaign_id, max(last) FROM event_latest "
    "GROUP BY workspace, type, recipient_key, campaign_id"
)
FROM_EVENTS = (
    "SELECT workspace, type, cityHash64(recipient), campaign_id, max(created_at) FROM events "
    "GROUP BY workspace, type, cityHash64(recipient), campaign_id"
)


async def _load(store) -> None:
    first, later = build()
    shuffled = first[:]
    random.Random(13).shuffle(shuffled)  # newer events before older ones, replays between the halves
    for batch in (shuffled[:20], later, shuffled[20:], later, first[:5]):
        await store.insert(batch)


async def test_each_row_key_holds_the_newest_stored_event(ch):
    await _load(ch)
    expected = await rows_of(ch, FROM_EVENTS)
    assert len(expected) > 15
    assert await rows_of(ch, NEWEST) == expected
    # Several inserts left unmerged rows: segment queries read them without FINAL, which is exact
    # because each row's time is the newest of some of that key's events (never newer than the newest).
    stored = await rows_of(ch, "SELECT workspace, type, recipient_key, campaign_id, last FROM event_latest")
    newest = {row[:4]: row[4] for row in expected}
    assert all(row[4] <= newest[row[:4]] for row in stored)
    assert len(await rows_of(ch, "SELECT _part FROM event_latest")) > 1


async def test_the_backfill_rebuilds_the_table_from_the_events_and_is_safe_twice(ch):
    await _load(ch)
    expected = await rows_of(ch, NEWEST)
    await ch._run(ch._query, "TRUNCATE TABLE event_latest", {})
    assert await rows_of(ch, NEWEST) == set()
    migration = next(m for m in load("clickhouse") if m.name == "event_latest")
    (backfill,) = [s for s in migration.statements if s.startswith("INSERT INTO event_latest")]
    for _ in range(2):
        await ch._run(ch._query, backfill, {})
        assert await rows_of(ch, NEWEST) == expected


async def test_erasure_removes_the_personsrows_of(ch):
    await _load(ch)
    before = await rows_of(ch, NEWEST)
    ((ana,),) = await rows_of(ch, "SELECT cityHash64('ana@example.com')")
    assert any(row[2] == ana and row[0] == WS for row in before)
    await ch.erase_subscriber(WS, "ana@example.com", "sub_" + "1".zfill(26))
    # Every stored row of hers goes, merged or not; the others' stay.
    assert (
        await rows_of(ch, f"SELECT * FROM event_latest WHERE recipient_key = {ana} AND workspace = '{WS}'")
        == set()
    )
    assert await rows_of(ch, NEWEST) == {row for row in before if not (row[2] == ana and row[0] == WS)}


async def test_the_store_gives_it_the_events_retention(tmp_path, chdb_path):
    store = open_store(store_url("chdb", tmp_path, chdb_path), retention_days=90)
    await store.migrate()
    (engine,) = await rows_of(
        store,
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'event_latest'",
    )
    await store.close()
    assert "TTL toDateTime(last) + toIntervalDay(90)" in engine[0], engine
