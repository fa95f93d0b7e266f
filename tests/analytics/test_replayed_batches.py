"""Batches stored again (a sink that died between its insert and its ack, a chunk read twice) on both
backends: DuckDB inserts plainly first and redoes a batch that meets a stored key with INSERT OR IGNORE
or the mirror's upsert (docs/analytics.md, "Ingest as the table grows"), so every replay below goes
through that second path; each must store every event once and leave the mirror as one insert would."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.ids import new_ids
from schemas.segments import SegmentQuery
from schemas.subscriber_chunks import NewMembers
from tests.analytics.test_erasure import total_events

WS, LIST = "ws_replay", "lst_replay"
NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
CREATED_MS = int(datetime(2026, 12, 7, 11, tzinfo=UTC).timestamp() * 1000)


def chunk(ids: list[str]) -> NewMembers:
    found = NewMembers(WS, LIST, "subscribed", CREATED_MS)
    for sub_id in ids:
        found.add(sub_id, f"{sub_id}@example.com", None, {"n": 1})
    return found


async def members(store) -> list[str]:
    page = await store.segment_members(WS, SegmentQuery(lists=(LIST,)), limit=100, now=NOW)
    return sorted(m.id for m in page.data)


async def test_a_replayed_chunk_stores_nothing_twice_and_a_mixed_one_adds_its_new_rows(store):
    ids = new_ids("sub", 6)
    first = chunk(ids[:4])
    assert await store.insert([], [first]) == 8  # subscriber.created and list.subscribed each
    assert await total_events(store) == 8
    await store.insert([], [first])  # whole chunk again
    assert await total_events(store) == 8
    assert await members(store) == sorted(ids[:4])

    mixed = chunk(ids[2:])  # two stored, two new
    await store.insert([], [mixed])
    assert await total_events(store) == 12
    assert await members(store) == sorted(ids)


async def test_a_replayed_chunk_does_not_bring_back_an_erased_subscriber(store):
    ids = new_ids("sub", 3)
    first = chunk(ids)
    await store.insert([], [first])
    await store.erase_subscriber(WS, f"{ids[0]}@example.com", ids[0])
    await store.insert([], [first])  # the tombstone's version is higher than the chunk's rows
    assert await members(store) == sorted(ids[1:])
