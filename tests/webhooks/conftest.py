"""Webhook fixtures: receivers, the API with loopback targets allowed, events written to the stream,
and the deliverer run as a plain asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec
import pytest
import redis.asyncio as aioredis

from actors.webhooks.config import DelivererConfig
from actors.webhooks.loop import WebhookDeliveryLoop
from schemas.events import Event, EventMessage
from schemas.ids import new_id
from store import keyspace
from tests.conftest import make_settings
from tests.webhooks.receiver import Receiver

LOOPBACK = {"allow_private_webhooks": True, "allow_http_webhooks": True}
WORKSPACE = "acme"  # explicit, whatever make_key defaults to


def event(event_type: str, *, workspace: str = WORKSPACE, message_id: str | None = None, **data) -> Event:
    message = EventMessage(id=message_id, to="ana@example.com", from_="hello@acme.com") if message_id else None
    return Event(id=new_id("evt"), type=event_type, created_at=datetime.now(UTC), workspace=workspace,
                 message=message, data=data)


async def emit(redis: aioredis.Redis, events: list[Event]) -> None:
    """What the send pipeline does: one stream entry holding a msgpack list of events."""
    await redis.xadd(keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: msgspec.msgpack.encode(events)})


@pytest.fixture
async def receivers() -> AsyncIterator:
    started: list[Receiver] = []

    async def start(answer=None, gate=None) -> Receiver:
        receiver = await Receiver(answer, gate).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.stop()


@pytest.fixture
async def api(app_client):
    return await app_client(**LOOPBACK)


@pytest.fixture
async def writer(make_key) -> dict[str, str]:
    return await make_key(["write:webhooks"], workspace=WORKSPACE)


@pytest.fixture
async def deliverers(tmp_path, redis_url) -> AsyncIterator:
    """Start WebhookDeliveryLoops (plain asyncio, no Ray) with their own Redis clients; stopped at the end."""
    running: list[tuple[asyncio.Event, asyncio.Task, aioredis.Redis]] = []

    async def start(settings_overrides: dict | None = None, **config) -> WebhookDeliveryLoop:
        settings = make_settings(tmp_path, redis_url, **{**LOOPBACK, **(settings_overrides or {})})
        client = aioredis.Redis.from_url(redis_url)
        loop = WebhookDeliveryLoop(client, DelivererConfig.from_settings(settings, **{"poll_seconds": 0.02,
                                                                                      "block_ms": 50, **config}))
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        await asyncio.wait_for(loop.started.wait(), 10)
        running.append((stop, task, client))
        return loop

    async def stop_all() -> None:
        for stop, task, client in running:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
            await client.aclose()
        running.clear()

    start.stop_all = stop_all  # type: ignore[attr-defined]
    yield start
    await stop_all()


async def create_endpoint(api, headers, url: str, events=("*",), **fields) -> dict:
    response = await api.post("/v1/webhooks", json={"url": url, "events": list(events), **fields}, headers=headers)
    assert response.status == 201, await response.text()
    return await response.json()
