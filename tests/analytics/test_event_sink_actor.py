"""The EventSink actor on the session's local Ray: events flow from Redis into DuckDB and answer queries."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import msgspec
import pytest

from analytics.errors import InvalidQuery
from analytics.queries import EventsQuery, ExportQuery, SummaryQuery
from schemas.settings import load_settings
from store import keyspace
from tests.analytics.events_factory import NOW, event

_encode = msgspec.msgpack.Encoder().encode


async def test_events_flow_from_the_stream_into_the_actor_store(ray_session, redis, redis_url, tmp_path):
    import ray

    from actors.event_sink.client import EventSinkClient, start_event_sink

    settings = load_settings({}, data_dir=str(tmp_path), redis_url=redis_url, ray_namespace="mailers-test")
    handle = start_event_sink(settings, redis_url=redis_url, name="event-sink-test", max_latency=0.05)
    try:
        client = EventSinkClient(handle)
        assert await handle.ready.remote()
        events = [
            event("message.sent", NOW - timedelta(minutes=i), message_id=f"msg_{i}") for i in range(1, 301)
        ]
        for start in range(0, 300, 100):
            await redis.xadd(
                keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: _encode(events[start : start + 100])}
            )
        query = SummaryQuery(from_=NOW - timedelta(days=1), to=NOW)
        async with asyncio.timeout(30):
            while (await client.summary("acme", query, now=NOW)).totals.sent < 300:
                await asyncio.sleep(0.1)
        page = await client.events_page("acme", EventsQuery(limit=5), now=NOW)
        assert [e.message.id for e in page.data] == [f"msg_{i}" for i in range(1, 6)] and page.has_more
        assert [e.id for e in await client.message_events("acme", "msg_7")] == [events[6].id]
        chunks = [
            c async for c in client.export_events("acme", ExportQuery(from_=NOW - timedelta(days=1)), now=NOW)
        ]
        assert b"".join(chunks).count(b"\n") == 300
        with pytest.raises(InvalidQuery) as caught:
            await client.summary("acme", SummaryQuery(from_=NOW, to=NOW - timedelta(hours=1)), now=NOW)
        assert caught.value.pointer == "#/from"
        assert (await handle.stats.remote())["events"] == 300
        # The sink's DuckDB file is limited to MAILERS_DUCKDB_MEMORY_MB (128 by default), not DuckDB's 80%
        # of the machine's memory.
        memory = await handle.memory.remote()
        assert memory["limit"] == "128.0 MiB" and 0 < memory["used_bytes"] <= 128 * 2**20
        assert (await redis.xpending(keyspace.EVENT_STREAM, "analytics"))["pending"] == 0
    finally:
        await handle.shutdown.remote()
        ray.kill(handle)


async def test_segments_and_erasure_cross_ray_through_the_actor(ray_session, redis, redis_url, tmp_path):
    import ray

    from actors.event_sink.client import EventSinkClient, start_event_sink
    from schemas.segments import SegmentQuery
    from tests.analytics.segment_dataset import IDS, L1, WS, build
    from tests.analytics.segment_dataset import NOW as SEGMENT_NOW

    settings = load_settings({}, data_dir=str(tmp_path), redis_url=redis_url, ray_namespace="mailers-test")
    handle = start_event_sink(settings, redis_url=redis_url, name="event-sink-segments", max_latency=0.05)
    try:
        client = EventSinkClient(handle)
        assert await handle.ready.remote()
        await redis.xadd(keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: _encode(build()[0])})
        query = SegmentQuery(lists=(L1,), filter={"attribute": "plan", "op": "eq", "value": "pro"})
        async with asyncio.timeout(30):
            while await client.segment_count(WS, query, now=SEGMENT_NOW) < 2:
                await asyncio.sleep(0.1)
        page = await client.segment_members(WS, query, limit=1, now=SEGMENT_NOW)
        assert [m.id for m in page.data] == [IDS["cy"]] and page.has_more
        with pytest.raises(InvalidQuery) as caught:
            await client.segment_count(WS, SegmentQuery(filter={"attribute": "plan", "op": "like"}))
        assert caught.value.pointer == "#/filter/op"
        await client.erase_subscriber(WS, "ANA@example.com", IDS["ana"])
        assert await client.segment_count(WS, query, now=SEGMENT_NOW) == 1
        assert await redis.hlen(keyspace.erased_emails(WS)) == 1
    finally:
        await handle.shutdown.remote()
        ray.kill(handle)
