"""Driving the real app like a client: sending servers per provider (each simulator posting its signed
webhooks back to the app's inbound route), sends, and waiting on a message's status."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from providers.simulators import mailgun, postmark, resend, sendgrid
from providers.simulators.base import SIMULATOR, SimulatorOptions, SimulatorState
from store.redis_server import free_port
from tests.pipeline.conftest import wait_for

SENDER = "Acme <hello@acme.test>"  # acme.test: the identity verified in moto for SES
SIMULATORS = {"mailgun": mailgun, "sendgrid": sendgrid, "resend": resend, "postmark": postmark}
MAILGUN_KEY = "key-" + "0123456789abcdef" * 2
RESEND_SECRET = "whsec_" + base64.b64encode(b"e" * 24).decode()
POSTMARK_LOGIN = ("hooks", "s3cret-e2e")


def message(to: str | list[str], **fields: Any) -> dict[str, Any]:
    return {"from": SENDER, "to": to, "subject": "Hello", "html": "<p>Hello</p>", "text": "Hello", **fields}


async def create_server(
    client: TestClient, headers: dict[str, str], provider: str, config: dict[str, Any], **fields: Any
) -> dict[str, Any]:
    body = {"name": fields.pop("name", provider), "provider": provider, "config": config, **fields}
    response = await client.post("/v1/sending-servers", json=body, headers=headers)
    assert response.status == 201, await response.text()
    return await response.json()


async def send(client: TestClient, headers: dict[str, str], body: dict[str, Any]) -> str:
    response = await client.post("/v1/send", json=body, headers=headers)
    assert response.status == 202, await response.text()
    answer = await response.json()
    assert answer["status"] == "queued", answer
    return answer["id"]


async def message_view(client: TestClient, headers: dict[str, str], message_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/messages/{message_id}", headers=headers)
    assert response.status == 200, await response.text()
    return await response.json()


AFTER_A_SEND = frozenset({"sent", "delivered", "bounced", "complained"})


async def wait_for_status(
    client: TestClient, headers: dict[str, str], message_id: str, status: str, within: float = 30.0
) -> dict[str, Any]:
    """The view once it has `status`, and, for a status a provider's answer or event gives, once the
    dispatcher has recorded its send too: a provider's webhook (a simulator's, sent while it answers) can
    move the status on first, and the record (provider, attempt, `message.sent`) lands just after."""

    async def reached() -> dict[str, Any] | None:
        view = await message_view(client, headers, message_id)
        recorded = status not in AFTER_A_SEND or view["attempts"] >= 1
        return view if view["status"] == status and recorded else None

    return await wait_for(reached, within=within, every=0.1)


def timeline(view: dict[str, Any]) -> list[str]:
    return [event["type"] for event in view["events"]]


def inbound_url(client: TestClient, provider: str, server_id: str) -> str:
    url = str(client.make_url(f"/v1/inbound/{provider}/{server_id}"))
    if provider == "postmark":  # Postmark's only protection: Basic credentials in the webhook URL
        url = url.replace("http://", "http://{}:{}@".format(*POSTMARK_LOGIN))
    return url


def provider_config(provider: str, base_url: str) -> dict[str, str]:
    if provider == "mailgun":
        return {"api_key": "sim-key", "domain": "mg.acme.test", "base_url": base_url}
    if provider == "postmark":
        return {"server_token": "sim-key", "base_url": base_url}
    return {"api_key": "sim-key", "base_url": base_url}


def inbound_secrets(provider: str, simulator: web.Application) -> dict[str, str]:
    match provider:
        case "mailgun":
            return {"mailgun_signing_key": MAILGUN_KEY}
        case "sendgrid":
            return {"sendgrid_public_key": sendgrid.public_key(simulator)}
        case "resend":
            return {"resend_secret": RESEND_SECRET}
    return {"postmark_user": POSTMARK_LOGIN[0], "postmark_password": POSTMARK_LOGIN[1]}


@dataclass
class Simulated:
    provider: str
    server: dict[str, Any]
    base_url: str
    app: web.Application

    @property
    def state(self) -> SimulatorState:
        return self.app[SIMULATOR]


async def simulated_server(
    provider: str,
    client: TestClient,
    headers: dict[str, str],
    aiohttp_server,
    *,
    priority: int = 100,
    **options: Any,
) -> Simulated:
    """A sending server whose API is the provider's simulator, and whose simulator posts its signed
    webhooks to this server's inbound URL. The server is created first (its id is in that URL), on the
    port the simulator then starts on; the verification secrets follow by PATCH, as an operator would
    copy them from the provider's dashboard."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = await create_server(
        client,
        headers,
        provider,
        provider_config(provider, base_url),
        priority=priority,
        name=f"{provider}-{port}",
    )
    secret = {"mailgun": MAILGUN_KEY, "resend": RESEND_SECRET}.get(provider)
    simulator = SIMULATORS[provider].create_app(
        SimulatorOptions(
            webhook_url=inbound_url(client, provider, server["id"]), webhook_secret=secret, **options
        )
    )
    await aiohttp_server(simulator, port=port)
    patched = await client.patch(
        f"/v1/sending-servers/{server['id']}",
        headers=headers,
        json={"inbound": inbound_secrets(provider, simulator)},
    )
    assert patched.status == 200, await patched.text()
    return Simulated(provider, server, base_url, simulator)
