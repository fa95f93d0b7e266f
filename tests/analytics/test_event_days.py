"""`event_days`, what segment event conditions read (migrations: DuckDB 0004, ClickHouse 0006): on both
backends it holds exactly the stored events, each once, however batches are replayed; the migration's
backfill rebuilds it from the events; erasure removes the person's rows; DuckDB's purge recounts the
day it cuts through."""

from __future__ import annotations

import random
from datetime import timedelta

from analytics.migrations import load
from tests.analytics.conftest import rows_of
from tests.analytics.segment_dataset import NOW, WS, build, custom


def _keyed(store) -> tuple[str, str]:
    """(the day table's recipient key, the same key computed from an event's recipient)."""
    return store.json.day_key, store.json.event_key


async def day_counts(store) -> set[tuple]:
    """(type, recipient key, day, campaign, events) from event_days, each stored event counted once."""
    key, _ = _keyed(store)
    column, _, total = store.json.day_events()
    return await rows_of(
        store,
        f"SELECT type, k, day, campaign_id, {total} FROM (SELECT type, {key} AS k, day, campaign_id, "
        f"{column} AS n FROM event_days WHERE workspace = '{WS}') AS d GROUP BY type, k, day, campaign_id",
    )


async def event_counts(store) -> set[tuple]:
    """The same, counted from the events table (distinct ids: ClickHouse may hold unmerged replays)."""
    _, key = _keyed(store)
    day = "toDate(created_at)" if store.backend == "clickhouse" else "CAST(created_at AS DATE)"
    return await rows_of(
        store,
        f"SELECT type, {key} AS k, {day} AS day, campaign_id, count(DISTINCT id) FROM events "
        f"WHERE workspace = '{WS}' GROUP BY type, k, day, campaign_id",
    )


async def test_day_counts_hold_each_stored_event_once(store):
    first, later = build()
    shuffled = first[:]
    random.Random(7).shuffle(shuffled)
    for batch in (shuffled[:20], later, shuffled[20:], later, first[:5]):
        await store.insert(batch)
    expected = await event_counts(store)
    assert len(expected) > 20
    assert await day_counts(store) == expected


async def test_the_backfill_rebuilds_the_day_counts_from_the_events(store):
    first, later = build()
    await store.insert(first)
    await store.insert(later)
    expected = await day_counts(store)
    await store._run(store._query, "DELETE FROM event_days WHERE 1 = 1", {})
    assert await day_counts(store) == set()
    migration = next(m for m in load(store.backend) if "event_days" in m.name or "segment_keys" in m.name)
    backfill = next(s for s in migration.statements if s.startswith("INSERT INTO event_days"))
    await store._run(store._query, backfill, {})
    assert await day_counts(store) == expected


async def test_erasure_removes_the_persons_dayrows_of(store):
    first, _ = build()
    await store.insert(first)
    key, _ = _keyed(store)
    address = "cityHash64('ana@example.com')" if store.backend == "clickhouse" else "'ana@example.com'"
    ((ana,),) = await rows_of(store, f"SELECT {address}")
    before = await day_counts(store)
    assert any(row[1] == ana for row in before)
    await store.erase_subscriber(WS, "ana@example.com", "sub_" + "1".zfill(26))
    assert await day_counts(store) == {row for row in before if row[1] != ana}  # the others' stay


async def test_duckdb_purge_recounts_the_day_it_cuts(tmp_path, chdb_path):
    from analytics.store import open_store
    from tests.analytics.conftest import store_url

    store = open_store(store_url("duckdb", tmp_path, chdb_path))
    await store.migrate()
    # Four events on the cutoff's calendar day (two before the cutoff instant, two after), one older.
    cutoff = NOW - timedelta(days=30)
    hours = (-5, -1, 1, 5, -48)
    await store.insert([custom("ana", "trial.started", 30 - h / 24) for h in hours])
    assert await store.purge_expired(timedelta(days=30), now=NOW) == 3
    assert await day_counts(store) == await event_counts(store)
    assert {row[4] for row in await day_counts(store)} == {2}
    assert cutoff.hour == 12  # the cut falls inside a day, as the test means
    await store.close()
