"""New subscribers cross the event stream as one columnar chunk per write (schemas/subscriber_chunks.py).
Through a real Redis, the real event sink and both analytics backends: every per-subscriber event is
stored as if it had been appended one by one, the mirror holds the newest version, a replayed chunk
changes nothing, and a chunk row about an erased address is dropped."""

from __future__ import annotations

import time

from actors.event_sink.body import EventSinkLoop
from analytics.mirror import CHUNK_CONSTANTS
from analytics.queries import EventsQuery, SummaryQuery
from schemas.audience import ListRecord, SubscriberInput
from schemas.events import Event
from schemas.segments import SegmentQuery
from store import keyspace
from store.event_entries import entry_events
from store.subscribers import SubscriberStore
from tests.analytics.conftest import chdb_path, store  # noqa: F401  (fixtures: both backends)

WS = "ws_chunks"
LIST = ListRecord(id="lst_chunks", workspace=WS, name="n", created_ms=0, updated_ms=0)


async def stream_events(redis) -> list:
    return [e for _, fields in await redis.xrange(keyspace.EVENT_STREAM) for e in entry_events(fields)]


async def stored(store, kind: str) -> dict[str, Event]:  # noqa: F811
    """The stored events of one type (the API's `type` filter names no `subscriber.created`: all of them,
    then by type)."""
    page = await store.events_page(WS, EventsQuery(limit=1000))
    assert not page.has_more
    return {e.id: e for e in page.data if e.type == kind}


async def population(store, **filters) -> set[str]:  # noqa: F811
    query = SegmentQuery(lists=(LIST.id,), filter=filters.get("filter"))
    page = await store.segment_members(WS, query, limit=100)
    return {m.email for m in page.data}


async def test_chunks_are_stored_and_mirrored_like_their_events(redis, store) -> None:  # noqa: F811
    subscribers = SubscriberStore(redis)
    now_ms = int(time.time() * 1000)
    people = [
        SubscriberInput(email="ana@example.com", name='Ana "Q" é', attributes={"plan": "free", "n": 1}),
        SubscriberInput(email="bo@example.com", attributes={"tags": ["a", 2]}),
        SubscriberInput(email="cy@example.com", status="unsubscribed"),
    ]
    plan = await subscribers.upsert(LIST, people, mode="upsert", now_ms=now_ms)
    assert plan.outcomes == ["created"] * 3
    [(chunk_id, chunk_fields)] = [
        (i, f) for i, f in await redis.xrange(keyspace.EVENT_STREAM) if keyspace.EVENT_CHUNK_FIELD in f
    ][:1]
    # a later write updates ana: an ordinary event at version 3
    update = [SubscriberInput(email="ana@example.com", attributes={"plan": "pro"})]
    await subscribers.upsert(LIST, update, mode="upsert", now_ms=now_ms + 1)
    expected = await stream_events(redis)
    assert [e.type for e in expected].count("subscriber.created") == 3
    assert len(expected) == 7  # 2 per new subscriber (two chunks: subscribed, unsubscribed) + the update

    sink = EventSinkLoop(redis, store, consumer="c1")
    assert await sink.run_until_idle() == 7
    for kind in ("subscriber.created", "list.subscribed", "subscriber.unsubscribed", "subscriber.updated"):
        wanted = {e.id: e for e in expected if e.type == kind}
        assert await stored(store, kind) == wanted, kind
    # the columns no event reads back are stored as the per-event path stores them too
    constants = ", ".join(CHUNK_CONSTANTS)
    rows = await store._run(store._query, f"SELECT DISTINCT {constants} FROM events", {})
    assert [tuple(list(v) if isinstance(v, list | tuple) else v for v in r) for r in rows] == [
        tuple(CHUNK_CONSTANTS.values())
    ]
    totals = (await store.summary(WS, SummaryQuery())).totals
    assert totals.unsubscribed == 1
    assert await population(store) == {"ana@example.com", "bo@example.com", "cy@example.com"}
    pro = {"attribute": "plan", "op": "eq", "value": "pro"}
    assert await population(store, filter=pro) == {"ana@example.com"}

    # the same chunk delivered again (a crash before the ack): nothing changes, ana stays at version 3
    await redis.xadd(keyspace.EVENT_STREAM, chunk_fields)
    assert chunk_id is not None
    await sink.run_until_idle()
    for kind in ("subscriber.created", "list.subscribed"):
        assert await stored(store, kind) == {e.id: e for e in expected if e.type == kind}
    assert await population(store, filter=pro) == {"ana@example.com"}


async def test_a_chunk_row_about_an_erased_address_is_dropped(redis, store) -> None:  # noqa: F811
    subscribers = SubscriberStore(redis)
    sink = EventSinkLoop(redis, store, consumer="c1")
    now_ms = int(time.time() * 1000) - 5_000
    people = [SubscriberInput(email="ana@example.com"), SubscriberInput(email="bo@example.com")]
    await subscribers.upsert(LIST, people, mode="upsert", now_ms=now_ms)
    # ana is erased before the sink read the chunk that created her
    await sink.erase_subscriber(WS, "ana@example.com", "sub_whatever")
    await sink.run_until_idle()
    created = await stored(store, "subscriber.created")
    assert [e.data["subscriber"]["email"] for e in created.values()] == ["bo@example.com"]
    assert await population(store) == {"bo@example.com"}
    # a chunk all of whose rows are about erased addresses stores nothing (and fails nothing)
    await subscribers.upsert(LIST, [SubscriberInput(email="cy@example.com")], mode="upsert", now_ms=now_ms)
    await sink.erase_subscriber(WS, "cy@example.com", "sub_whatever")
    await sink.run_until_idle()
    assert (await redis.xpending(keyspace.EVENT_STREAM, "analytics"))["pending"] == 0
    assert await population(store) == {"bo@example.com"}
