"""Messages as the send pipeline leaves them, sending servers in the store, and what Redis recorded."""

from __future__ import annotations

import asyncio
import inspect
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from schemas.events import Event, EventMessage
from schemas.ids import new_id
from schemas.messages import Address, OutboundMessage
from schemas.servers import CreateSendingServer, ServerRecord
from schemas.settings import load_settings
from store import keyspace
from store.event_entries import entry_events
from store.messages import MessageMeta, MessageStore, NewMessage, StoredMessage
from store.servers import ServerStore

SECRET_KEY = "s" * 40  # what tests/conftest.py's make_settings gives the app


def outbound(*to: str, workspace: str) -> OutboundMessage:
    return OutboundMessage(
        id=new_id("msg"),
        workspace=workspace,
        from_=Address("hello@acme.test", "Acme"),
        to=[Address(a) for a in to],
        subject="Hello",
        html="<p>Hello</p>",
        text="Hello",
        tags=["welcome"],
        metadata={"user_id": "42"},
    )


async def store_message(redis: aioredis.Redis, message: OutboundMessage, server_id: str) -> None:
    """Write the message as the ingress does (hash, timeline with message.accepted, index), already
    taken by the provider: status `sent` puts nothing on a dispatch stream."""
    now = datetime.now(UTC)
    accepted = Event(
        id=new_id("evt"),
        type="message.accepted",
        created_at=now,
        workspace=message.workspace,
        message=EventMessage(id=message.id, to=message.to[0].email, from_=message.from_.email),
    )
    new = NewMessage(
        message=message,
        meta=MessageMeta(created_ms=int(now.timestamp() * 1000)),
        status="sent",
        server=server_id,
        events=[accepted],
    )
    assert await MessageStore(redis).enqueue([new]) == [None]


async def record_provider_id(
    redis: aioredis.Redis, message: OutboundMessage, provider: str, provider_id: str
) -> None:
    """What the Dispatcher records for a Sent outcome: pmid on the hash and the provider id mapping."""
    key = keyspace.message(message.workspace, message.id)
    await redis.hset(key, mapping={"prv": provider, "pmid": provider_id})
    await redis.set(
        keyspace.provider_message(provider, provider_id.strip("<>")), f"{message.workspace}|{message.id}"
    )


async def create_server(
    redis: aioredis.Redis,
    provider: str,
    *,
    workspace: str,
    server_id: str | None = None,
    config: dict[str, Any] | None = None,
    inbound: dict[str, Any] | None = None,
) -> ServerRecord:
    store = ServerStore.for_settings(redis, load_settings({}, secret_key=SECRET_KEY))
    body = CreateSendingServer(name=provider, provider=provider, config=config or {}, inbound=inbound or {})  # type: ignore[arg-type]
    record = store.build(workspace, body, server_id=server_id)
    await store.create(record)
    return record


async def stored(redis: aioredis.Redis, message: OutboundMessage) -> StoredMessage:
    found = await MessageStore(redis).get(message.workspace, message.id)
    assert found is not None
    return found


async def stream_events(redis: aioredis.Redis, message_id: str | None = None) -> list[Event]:
    entries = await redis.xrange(keyspace.EVENT_STREAM)
    events = [e for _, fields in entries for e in entry_events(fields)]
    return [e for e in events if message_id is None or (e.message is not None and e.message.id == message_id)]


async def unmatched(redis: aioredis.Redis, provider: str) -> int:
    return int(await redis.hget(keyspace.INBOUND_UNMATCHED, provider) or 0)


async def wait_until(predicate, *, within: float = 10.0) -> None:
    """Poll `predicate` (plain or async) until it is true."""
    async with asyncio.timeout(within):
        while not (await result if inspect.isawaitable(result := predicate()) else result):
            await asyncio.sleep(0.02)
