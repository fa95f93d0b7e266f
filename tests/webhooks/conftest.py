"""Webhook fixtures: receivers, the API with loopback targets allowed, events written to the stream,
and the deliverer run as a plain asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp.abc import AbstractResolver

from actors.webhooks.body import WebhookDeliveryLoop
from actors.webhooks.config import DelivererConfig
from schemas.events import Event, EventMessage
from schemas.ids import new_id
from schemas.webhooks import WebhookRecord
from security.webhook_signing import new_webhook_secret
from store import keyspace
from store.webhooks import WebhookStore, seal_secret, secret_box
from tests.conftest import make_settings
from tests.webhooks.receiver import Receiver

LOOPBACK = {"allow_private_webhooks": True, "allow_http_webhooks": True}
WORKSPACE = "acme"  # explicit, whatever make_key defaults to


def event(
    event_type: str,
    *,
    workspace: str = WORKSPACE,
    message_id: str | None = None,
    at: datetime | None = None,
    **data,
) -> Event:
    message = (
        EventMessage(id=message_id, to="ana@example.com", from_="hello@acme.com") if message_id else None
    )
    return Event(
        id=new_id("evt"),
        type=event_type,
        created_at=at or datetime.now(UTC),
        workspace=workspace,
        message=message,
        data=data,
    )


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

    async def start(settings_overrides: dict | None = None, resolver=None, **config) -> WebhookDeliveryLoop:
        settings = make_settings(tmp_path, redis_url, **{**LOOPBACK, **(settings_overrides or {})})
        client = aioredis.Redis.from_url(redis_url)
        options = {"poll_seconds": 0.02, "block_ms": 50, **config}
        loop = WebhookDeliveryLoop(
            client, DelivererConfig.from_settings(settings, **options), resolver=resolver
        )
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


class FixedDns(AbstractResolver):
    """The DNS seam: every name resolves to the given address (a rebinding attacker's answer)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        self.asked.append(host)
        return [
            {
                "hostname": host,
                "host": self.address,
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


async def stored_endpoint(redis: aioredis.Redis, url: str) -> str:
    """An endpoint written straight to the store, for URLs whose name this offline machine cannot resolve
    at creation (as if it had resolved to a public address then)."""
    now, endpoint_id = datetime.now(UTC), new_id("whk")
    sealed = seal_secret(secret_box("s" * 40), endpoint_id, new_webhook_secret())
    await WebhookStore(redis).create(
        WebhookRecord(
            id=endpoint_id,
            workspace=WORKSPACE,
            url=url,
            events=["*"],
            created_at=now,
            updated_at=now,
            sealed_secret=sealed,
        )
    )
    return endpoint_id


async def create_endpoint(api, headers, url: str, events=("*",), **fields) -> dict:
    response = await api.post(
        "/v1/webhooks", json={"url": url, "events": list(events), **fields}, headers=headers
    )
    assert response.status == 201, await response.text()
    return await response.json()
