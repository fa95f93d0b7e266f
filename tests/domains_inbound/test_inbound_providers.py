"""`POST /v1/inbound/{provider}/{server_id}` fed by the provider simulators' own signed webhooks.

A message is stored as the send pipeline leaves it, sent through the provider's real adapter to its
simulator (which answers with its provider id and then posts signed events to the app), and the
provider id is mapped as the Dispatcher maps it. A second message is sent but never stored: its
events match no message of ours and are only counted.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from providers.base import Sent
from providers.egress import provider_session
from providers.registry import provider_module
from providers.simulators.base import SIMULATOR, SimulatorOptions, SimulatorState, WebhookRequest
from schemas.ids import new_id
from schemas.servers import ServerRecord
from schemas.settings import load_settings
from store import keyspace
from store.servers import ServerStore
from store.suppressions import SuppressionStore
from tests.inbound.signing import basic_auth, mailgun_signature
from tests.local_egress import LOCAL
from tests.providers.provider_harness import SIMULATORS
from tests.providers_e2e.helpers import (
    MAILGUN_KEY,
    POSTMARK_LOGIN,
    RESEND_SECRET,
    inbound_secrets,
    provider_config,
)

from .helpers import (
    SECRET_KEY,
    create_server,
    outbound,
    record_provider_id,
    store_message,
    stored,
    stream_events,
    unmatched,
)

PROVIDERS = ("mailgun", "sendgrid", "resend", "postmark")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with provider_session(LOCAL) as session:
        yield session


@dataclass
class Provider:
    name: str
    server: ServerRecord
    path: str
    simulator: web.Application
    adapter: Any

    @property
    def state(self) -> SimulatorState:
        return self.simulator[SIMULATOR]

    async def drain(self) -> list[WebhookRequest]:
        async with asyncio.timeout(10):
            await self.state.webhooks.drain()
        posted = self.state.webhooks.delivered
        assert posted and [status for status, _ in posted] == [200] * len(posted)
        return [request for _, request in posted]


async def start(
    name: str, ws: str, client, aiohttp_server, redis: aioredis.Redis, http: aiohttp.ClientSession
) -> Provider:
    """The simulator posting to our endpoint for a new server, and the server's adapter to send with."""
    server_id = new_id("srv")
    path = f"/v1/inbound/{name}/{server_id}"
    url = str(client.make_url(path))
    if name == "postmark":  # Postmark's only protection: Basic credentials in the webhook URL
        url = url.replace("http://", f"http://{POSTMARK_LOGIN[0]}:{POSTMARK_LOGIN[1]}@")
    secret = {"mailgun": MAILGUN_KEY, "resend": RESEND_SECRET}.get(name)
    simulator = SIMULATORS[name].create_app(
        SimulatorOptions(webhook_url=url, webhook_secret=secret, webhook_events=("delivered",))
    )
    base_url = str((await aiohttp_server(simulator)).make_url("")).rstrip("/")
    server = await create_server(
        redis,
        name,
        workspace=ws,
        server_id=server_id,
        config=provider_config(name, base_url),
        inbound=inbound_secrets(name, simulator),
    )
    store = ServerStore.for_settings(redis, load_settings({}, secret_key=SECRET_KEY))
    adapter = provider_module(name).Adapter(store.open_config(server), http=http, egress=LOCAL)
    return Provider(name, server, path, simulator, adapter)


def auth_for(name: str) -> dict[str, str]:
    return basic_auth(*POSTMARK_LOGIN) if name == "postmark" else {}


def resigned_mailgun(request: WebhookRequest) -> bytes:
    """The same event as Mailgun sends it on a retry: a fresh timestamp and token, signed again."""
    body = json.loads(request.body)
    body["signature"] = mailgun_signature(MAILGUN_KEY, str(int(time.time())), secrets.token_hex(25))
    return json.dumps(body).encode()


def tampered(name: str, request: WebhookRequest) -> tuple[bytes, dict[str, str]]:
    """A request for a NEW event (it would be recorded if accepted) whose proof does not verify."""
    body, headers = json.loads(request.body), dict(request.headers)
    match name:
        case "mailgun":  # a fresh token under the old signature
            body["event-data"]["id"] = "forged-" + secrets.token_hex(4)
            body["signature"]["token"] = secrets.token_hex(25)
        case "sendgrid":  # the signed body, changed
            body[0]["sg_event_id"] = "forged-" + secrets.token_hex(4)
        case "resend":  # another event id under the old signature
            headers["svix-id"] = "msg_forged" + secrets.token_hex(4)
        case "postmark":  # a new record with the wrong password
            body["DeliveredAt"] = "2030-01-01T00:00:00Z"
            headers.update(basic_auth(POSTMARK_LOGIN[0], "guessed"))
            return json.dumps(body).encode(), headers
    return json.dumps(body).encode(), {**headers, **auth_for(name)}


async def post(client, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    response = await client.post(path, data=body, headers={**headers, "Content-Type": "application/json"})
    return response.status, await response.json()


@pytest.mark.parametrize("name", PROVIDERS)
async def test_signed_webhooks_are_recorded_once_and_forgeries_refused(
    name: str, ws: str, client, aiohttp_server, redis: aioredis.Redis, http: aiohttp.ClientSession
) -> None:
    provider = await start(name, ws, client, aiohttp_server, redis, http)
    known = outbound("ok@example.com", "bounce-1@example.com", workspace=ws)
    stranger = outbound("ok@example.com", workspace=ws)
    await store_message(redis, known, provider.server.id)
    [sent] = await provider.adapter.send_batch([known])
    assert isinstance(sent, Sent)
    await record_provider_id(redis, known, name, sent.provider_message_id)
    [other] = await provider.adapter.send_batch([stranger])
    assert isinstance(other, Sent)
    posted = await provider.drain()

    message = await stored(redis, known)
    inbound = sorted((e.type, e.message.to) for e in message.events if e.type != "message.accepted")
    assert inbound == [("message.bounced", "bounce-1@example.com"), ("message.delivered", "ok@example.com")]
    assert message.status == "bounced"  # whichever arrived first: a delivery never undoes a bounce
    for event in message.events[1:]:
        assert (event.message.server, event.message.provider, event.message.from_) == (
            provider.server.id,
            name,
            "hello@acme.test",
        )
        assert (event.message.tags, event.message.metadata.get("user_id")) == (["welcome"], "42")
    assert [e.id for e in await stream_events(redis, known.id)] == [e.id for e in message.events]
    suppressions = SuppressionStore(redis)
    assert await suppressions.is_suppressed(ws, "bounce-1@example.com", "workspace")
    assert not await suppressions.is_suppressed(ws, "ok@example.com", "workspace")
    assert await unmatched(redis, name) == 1
    assert await stream_events(redis, stranger.id) == []

    before = (await redis.xlen(keyspace.EVENT_STREAM), len(message.events))
    original = next(r for r in posted if known.id.encode() in r.body)
    received = len(json.loads(original.body)) if name == "sendgrid" else 1
    if name == "mailgun":  # the very same request: its one-time token is spent
        status, problem = await post(client, provider.path, original.body, original.headers)
        assert (status, problem["code"]) == (401, "invalid_signature")
        again = resigned_mailgun(original)
    else:
        again = original.body
    assert await post(client, provider.path, again, {**original.headers, **auth_for(name)}) == (
        200,
        {"received": received, "recorded": 0},
    )

    status, problem = await post(client, provider.path, *tampered(name, original))
    assert (status, problem["code"]) == (401, "invalid_signature")
    after = (await redis.xlen(keyspace.EVENT_STREAM), len((await stored(redis, known)).events))
    assert after == before and await unmatched(redis, name) == 1


async def test_unknown_server_or_provider_is_404(ws: str, client, redis: aioredis.Redis) -> None:
    server = await create_server(
        redis, "resend", workspace=ws, config={"api_key": "k"}, inbound={"resend_secret": RESEND_SECRET}
    )
    for path in (
        f"/v1/inbound/resend/{new_id('srv')}",
        f"/v1/inbound/postmark/{server.id}",
        f"/v1/inbound/smtp/{server.id}",
        f"/v1/inbound/nope/{server.id}",
    ):
        response = await client.post(path, data=b"{}")
        assert response.status == 404, path
        assert (await response.json())["code"] == "not_found"


async def test_verified_but_malformed_is_400(ws: str, client, redis: aioredis.Redis) -> None:
    server = await create_server(
        redis,
        "postmark",
        workspace=ws,
        config={"server_token": "t"},
        inbound={"postmark_user": POSTMARK_LOGIN[0], "postmark_password": POSTMARK_LOGIN[1]},
    )
    response = await client.post(
        f"/v1/inbound/postmark/{server.id}", data=b'{"RecordType": 3}', headers=basic_auth(*POSTMARK_LOGIN)
    )
    assert response.status == 400 and (await response.json())["code"] == "invalid_json"
    assert await redis.xlen(keyspace.EVENT_STREAM) == 0
