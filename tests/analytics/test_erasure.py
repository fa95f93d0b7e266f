"""GDPR erasure in the analytics store (both backends) and through the event sink: the person's rows
lose their address, the mirror keeps a tombstone only, and nothing replayed brings them back."""

from __future__ import annotations

import msgspec

from actors.event_sink.body import EventSinkLoop
from analytics.sql import Bound
from schemas.segments import SegmentQuery
from store import keyspace
from tests.analytics.segment_dataset import IDS, L1, NOW, WS, build, member, message_event, subscriber

_encode = msgspec.msgpack.Encoder().encode
ANA = "ana@example.com"


async def rows_about(store, email: str) -> int:
    bind = Bound(store.dialect)
    mentions = store.json.contains("data", bind(email))
    about = f"(recipient = {bind(email)} OR {mentions})"
    sql = f"SELECT count(*) FROM events WHERE workspace = {bind(WS)} AND {about}"
    return (await store._run(store._query, sql, bind.values))[0][0]


async def total_events(store) -> int:
    return (await store._run(store._query, "SELECT count(DISTINCT id) FROM events", {}))[0][0]


async def members(store) -> set[str]:
    page = await store.segment_members(WS, SegmentQuery(lists=(L1,)), limit=100, now=NOW)
    return {m.id for m in page.data}


async def test_erasure_anonymises_events_and_leaves_a_tombstone(store):
    first, _ = build()
    await store.insert(first)
    before = await total_events(store)
    assert await rows_about(store, ANA) > 0 and IDS["ana"] in await members(store)

    await store.erase_subscriber(WS, "Ana@Example.com", IDS["ana"])

    assert await rows_about(store, ANA) == 0
    assert await total_events(store) == before  # counts survive, the address does not
    assert IDS["ana"] not in await members(store)
    # An older copy of the record or membership arriving late cannot resurrect the person.
    await store.insert([subscriber("ana", 7, {"plan": "pro"}), member("ana", L1, "subscribed", 8)])
    assert IDS["ana"] not in await members(store)
    assert (
        await store.segment_count(
            WS, SegmentQuery(filter={"attribute": "plan", "op": "eq", "value": "pro"}), now=NOW
        )
        == 1
    )  # cy only
    # Other people are untouched.
    assert await rows_about(store, "bo@example.com") > 0


async def test_the_sink_drops_events_of_an_erased_person_still_in_the_stream(redis, store):
    first, _ = build()
    sink = EventSinkLoop(redis, store, consumer="c1")
    await redis.xadd(keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: _encode(first)})
    await sink.run_until_idle()
    assert IDS["ana"] in await members(store)
    # Events about ana were emitted before the erasure but not yet read when it happens.
    pending = [
        subscriber("ana", 9, {"plan": "pro"}),
        member("ana", L1, "subscribed", 9),
        message_event("ana", "message.opened", 0.5),
        message_event("bo", "message.opened", 0.5),
    ]
    await redis.xadd(keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: _encode(pending)})
    sink.clock = lambda: NOW.timestamp()
    await sink.erase_subscriber(WS, ANA, IDS["ana"])
    assert await sink.run_until_idle() == 4  # read and acknowledged, ana's three dropped
    assert await rows_about(store, ANA) == 0
    assert IDS["ana"] not in await members(store)
    assert await rows_about(store, "bo@example.com") == 5  # bo's own events all went in
    # Someone who signs up again after the erasure is a new record, and gets in.
    later = subscriber("ana", 1, {"plan": "pro"}, days=-0.01)
    await redis.xadd(keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: _encode([later])})
    await sink.run_until_idle()
    assert await rows_about(store, ANA) == 1
