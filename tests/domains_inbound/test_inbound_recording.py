"""InboundRecorder on the real Redis: correlation, forward-only status, dedupe under concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from providers.inbound import ProviderEvent
from store import keyspace
from store.inbound_events import SEEN_TTL_SECONDS, InboundRecorder, forward_status

from .helpers import outbound, record_provider_id, store_message, stored, stream_events, unmatched

SERVER = "srv_01JD7Z3Y8Q4W2M6N0P1R3S5T7V"
AT = datetime(2024, 5, 20, 10, 15, tzinfo=UTC)


def provider_event(
    event_id: str,
    kind: str,
    *,
    pmid: str | None = "pm-1",
    hint: str | None = None,
    recipient: str = "ana@example.com",
    data: dict | None = None,
) -> ProviderEvent:
    return ProviderEvent(
        provider="postmark",
        provider_event_id=event_id,
        provider_message_id=pmid,
        our_message_id=hint,
        type=kind,
        recipient=recipient,
        occurred_at=AT,  # type: ignore[arg-type]
        data=data or {},
    )


async def record(redis: aioredis.Redis, workspace: str, *events: ProviderEvent):
    return await InboundRecorder(redis).record(
        workspace=workspace, server_id=SERVER, provider="postmark", events=list(events)
    )


@pytest.mark.parametrize(
    ("current", "kind", "moved"),
    [
        ("sent", "message.delivered", "delivered"),
        ("queued", "message.deferred", "deferred"),
        ("deferred", "message.delivered", "delivered"),
        ("delivered", "message.bounced", "bounced"),
        ("delivered", "message.complained", "complained"),
        ("bounced", "message.delivered", None),
        ("delivered", "message.deferred", None),
        ("complained", "message.bounced", None),
        ("failed", "message.delivered", None),
        ("canceled", "message.bounced", None),
        ("sent", "message.opened", None),
    ],
)
def test_status_only_moves_forward(current: str, kind: str, moved: str | None) -> None:
    assert forward_status(current, kind) == moved


async def test_a_late_delivery_keeps_the_bounce(ws: str, redis: aioredis.Redis) -> None:
    message = outbound("ana@example.com", workspace=ws)
    await store_message(redis, message, SERVER)
    await record_provider_id(redis, message, "postmark", "pm-1")
    bounce = {"bounce": {"type": "soft", "code": "SoftBounce", "diagnostic": None}}
    assert (await record(redis, ws, provider_event("e1", "message.bounced", data=bounce))).recorded == 1
    assert (await record(redis, ws, provider_event("e2", "message.delivered"))).recorded == 1
    found = await stored(redis, message)
    assert found.status == "bounced"
    assert [e.type for e in found.events] == ["message.accepted", "message.bounced", "message.delivered"]
    assert found.events[1].data == bounce


async def test_the_hint_wins_and_a_failed_message_stays_failed(ws: str, redis: aioredis.Redis) -> None:
    hinted, mapped = outbound("ana@example.com", workspace=ws), outbound("ana@example.com", workspace=ws)
    for message in (hinted, mapped):
        await store_message(redis, message, SERVER)
    await record_provider_id(redis, mapped, "postmark", "pm-1")
    await redis.hset(keyspace.message(ws, hinted.id), "s", "failed")
    outcome = await record(redis, ws, provider_event("e1", "message.delivered", hint=hinted.id))
    assert outcome.recorded == 1 and outcome.events[0].message.id == hinted.id
    assert (await stored(redis, hinted)).status == "failed"
    assert len((await stored(redis, mapped)).events) == 1


async def test_ids_of_another_workspace_match_nothing(ws: str, redis: aioredis.Redis) -> None:
    theirs = outbound("ana@example.com", workspace=ws + "-other")
    await store_message(redis, theirs, SERVER)
    await record_provider_id(redis, theirs, "postmark", "pm-1")
    outcome = await record(
        redis,
        ws,
        provider_event("e1", "message.delivered"),
        provider_event("e2", "message.bounced", pmid=None, hint=theirs.id),
    )
    assert (outcome.recorded, outcome.unmatched) == (0, 2)
    assert (await stored(redis, theirs)).status == "sent"
    assert await unmatched(redis, "postmark") == 2
    assert [e.type for e in await stream_events(redis, theirs.id)] == ["message.accepted"]


async def test_concurrent_copies_record_once(ws: str, redis: aioredis.Redis) -> None:
    message = outbound("ana@example.com", workspace=ws)
    await store_message(redis, message, SERVER)
    await record_provider_id(redis, message, "postmark", "pm-1")
    events = [provider_event(f"e{i}", "message.opened") for i in range(5)]
    outcomes = await asyncio.gather(*(record(redis, ws, *events) for _ in range(6)))
    assert sorted(o.recorded for o in outcomes) == [0] * 5 + [5]
    assert sum(o.duplicates for o in outcomes) == 25
    assert len((await stored(redis, message)).events) == 6
    assert len(await stream_events(redis, message.id)) == 6
    ttl = await redis.ttl(keyspace.inbound_event_seen("postmark", SERVER, "e3"))
    assert SEEN_TTL_SECONDS - 5 < ttl <= SEEN_TTL_SECONDS and SEEN_TTL_SECONDS >= 7 * 24 * 3600


async def test_event_ids_are_stable_and_the_providers_sent_is_not_recorded(
    ws: str, redis: aioredis.Redis
) -> None:
    message = outbound("ana@example.com", workspace=ws)
    await store_message(redis, message, SERVER)
    await record_provider_id(redis, message, "postmark", "pm-1")
    outcome = await record(
        redis,
        ws,
        provider_event("e1", "message.sent"),
        provider_event("e1", "message.sent"),
        provider_event("e2", "message.clicked"),
    )
    assert (outcome.received, outcome.recorded, outcome.not_recorded, outcome.duplicates) == (3, 1, 1, 1)
    await redis.delete(
        keyspace.inbound_event_seen("postmark", SERVER, "e2")
    )  # as if the dedupe key had expired
    again = await record(redis, ws, provider_event("e2", "message.clicked"))
    assert again.events[0].id == outcome.events[0].id  # downstream consumers drop the copy by id
    assert (await stored(redis, message)).status == "sent"


async def test_inbound_dedup_is_keyed_per_server(redis: aioredis.Redis) -> None:
    """Finding: dedup keyed by provider and event id only let one tenant's server (or a forged event
    id) swallow another tenant's events. The same provider event id on two servers is two events."""
    first = outbound("ana@example.com", workspace="ws_tenant_a")
    second = outbound("bob@example.com", workspace="ws_tenant_b")
    other_server = "srv_01JD7Z3Y8Q4W2M6N0P1R3S5T7W"
    await store_message(redis, first, SERVER)
    await store_message(redis, second, other_server)
    recorder = InboundRecorder(redis)
    taken = await recorder.record(
        workspace="ws_tenant_a",
        server_id=SERVER,
        provider="postmark",
        events=[provider_event("shared-id", "message.opened", pmid=None, hint=first.id)],
    )
    theirs = await recorder.record(
        workspace="ws_tenant_b",
        server_id=other_server,
        provider="postmark",
        events=[provider_event("shared-id", "message.opened", pmid=None, hint=second.id)],
    )
    assert (taken.recorded, theirs.recorded, theirs.duplicates) == (1, 1, 0)
    assert theirs.events[0].id != taken.events[0].id  # downstream dedupe by event id must not merge them
