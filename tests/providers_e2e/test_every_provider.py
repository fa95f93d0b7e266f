"""One workspace, one sending server per provider, one message forced through each: every message
reaches its end state through that provider's own path (sandbox: at once; SMTP: `sent` at the aiosmtpd
sink; SES: moto takes it, its events come back as signed SNS notifications; the HTTP providers: their
simulators post their own signed webhooks to the app's inbound route).

A timeline is in the order events were recorded, and a fast provider's webhook can be recorded
before the Dispatcher records its `message.sent` (seen with Mailgun here), so after
`message.accepted` the test checks which events there are, each exactly once, not their order.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
import pytest

from ingress.context import SERVICES
from providers.simulators.sns import SNS, SnsOptions, create_app, ses_event
from store import keyspace
from store.redis_server import free_port
from tests.pipeline.conftest import create_smtp_server, dispatch_idle, wait_for
from tests.providers.provider_harness import moto_messages, verify_moto_domain
from tests.smtp.sink import SmtpSink

from .helpers import (
    SENDER,
    create_server,
    inbound_url,
    message,
    message_view,
    send,
    simulated_server,
    timeline,
    wait_for_status,
)

HTTP_PROVIDERS = ("mailgun", "sendgrid", "resend", "postmark")
DELIVERED = ["message.accepted", "message.sent", "message.delivered"]


async def _final(client, headers, message_id: str) -> dict[str, Any] | None:
    view = await message_view(client, headers, message_id)
    return view if view["status"] in ("suppressed", "bounced") else None


def lifecycle(view: dict[str, Any]) -> tuple[str, list[str]]:
    """The first event, and the others sorted (see the module docstring on their order)."""
    first, *rest = timeline(view)
    return first, sorted(rest)


@pytest.fixture
def sink():
    with SmtpSink() as server:
        yield server


def trust_sns_simulator(client, base: str) -> None:
    """The operator's MAILERS_SNS_TRUSTED_URL_PREFIXES, set once the simulator's port is known."""
    services = client.app[SERVICES]
    services.settings = msgspec.structs.replace(services.settings, sns_trusted_url_prefixes=(base,))


async def ses_server(client, headers, aiohttp_server, moto_url: str) -> tuple[dict[str, Any], str]:
    """An SES server on moto, and the SNS simulator subscribed to its inbound URL (confirmed by the app)."""
    await verify_moto_domain(moto_url)
    port = free_port()
    sns_base = f"http://127.0.0.1:{port}/"
    trust_sns_simulator(client, sns_base)
    config = {
        "region": "us-east-1",
        "access_key_id": "testing",
        "secret_access_key": "testing",
        "endpoint_url": moto_url,
    }
    inbound = {
        "sns_topic_arn": SnsOptions().topic_arn,
        "sns_trust": {"allow_aws_hosts": False, "url_prefixes": [sns_base]},
    }
    server = await create_server(client, headers, "amazon-ses", config, inbound=inbound)
    simulator = create_app(SnsOptions(webhook_url=inbound_url(client, "amazon-ses", server["id"])))
    await aiohttp_server(simulator, port=port)
    async with client.session.post(sns_base + "_sim/subscribe") as response:
        assert response.status == 200
    tokens = simulator[SNS].tokens
    await wait_for(lambda: bool(tokens) and all(tokens.values()), within=10)
    return server, sns_base


async def test_one_message_through_every_provider(client, admin, aiohttp_server, sink, moto_url) -> None:
    simulated = {
        name: await simulated_server(name, client, admin, aiohttp_server, webhook_events=("delivered",))
        for name in HTTP_PROVIDERS
    }
    sandbox = await create_server(client, admin, "sandbox", {})
    smtp = await create_smtp_server(client, admin, sink.port)
    ses, sns_base = await ses_server(client, admin, aiohttp_server, moto_url)
    servers = {
        "sandbox": sandbox["id"],
        "smtp": smtp["id"],
        "amazon-ses": ses["id"],
        **{name: s.server["id"] for name, s in simulated.items()},
    }

    sent = {
        name: await send(client, admin, message(f"ana.{name}@example.com", routing={"server": server_id}))
        for name, server_id in servers.items()
    }

    # SES: moto accepted it; SES would publish Delivery to SNS, which posts it to our inbound route.
    ses_view = await wait_for_status(client, admin, sent["amazon-ses"], "sent")
    [at_moto] = [
        m for m in await moto_messages(moto_url) if m.provider_message_id == ses_view["provider_message_id"]
    ]
    assert at_moto.to == ["ana.amazon-ses@example.com"]
    event = ses_event(
        "Delivery",
        message_id=at_moto.provider_message_id,
        source="hello@acme.test",
        destination=at_moto.to,
        tags={"mailers_message_id": sent["amazon-ses"]},
    )
    async with client.session.post(sns_base + "_sim/publish", json=event) as response:
        assert response.status == 200

    ends = {name: "sent" if name == "smtp" else "delivered" for name in servers}
    views = dict(
        zip(
            servers,
            await asyncio.gather(
                *(wait_for_status(client, admin, sent[name], ends[name]) for name in servers)
            ),
            strict=True,
        )
    )
    for name, view in views.items():
        assert (view["server"], view["provider"], view["attempts"]) == (servers[name], name, 1), name
        expected = DELIVERED[:2] if name == "smtp" else DELIVERED
        assert lifecycle(view) == (expected[0], sorted(expected[1:])), (name, timeline(view))
        [sent_event] = [e for e in view["events"] if e["type"] == "message.sent"]
        assert sent_event["data"]["provider_message_id"] == view["provider_message_id"], name
    for name, sim in simulated.items():
        [recorded] = sim.state.messages
        assert recorded.to == [f"ana.{name}@example.com"] and recorded.sender == SENDER, name
    [delivery] = sink.deliveries
    assert delivery.rcpt_tos == ["ana.smtp@example.com"]
    assert delivery.parsed()["X-Mailers-Message-Id"] == sent["smtp"]
    assert views["sandbox"]["provider_message_id"] == f"sandbox-{sent['sandbox']}"


async def test_a_provider_bounce_suppresses_the_address(client, admin, redis, aiohttp_server) -> None:
    mailgun = await simulated_server("mailgun", client, admin, aiohttp_server, webhook_events=("delivered",))
    bouncing = f"bounce-{uuid.uuid4().hex[:8]}@example.com"
    message_id = await send(client, admin, message(bouncing, routing={"server": mailgun.server["id"]}))

    view = await wait_for_status(client, admin, message_id, "bounced")
    assert lifecycle(view) == ("message.accepted", ["message.bounced", "message.sent"])
    # a provider with event webhooks: its id maps back to the message (SMTP and the sandbox get no key)
    [mapped] = [key async for key in redis.scan_iter(match=keyspace.provider_message("mailgun", "*"))]
    assert (await redis.get(mapped)).decode().endswith(f"|{message_id}")
    [bounce] = [e for e in view["events"] if e["type"] == "message.bounced"]
    assert bounce["data"]["bounce"]["type"] == "hard"
    listed = await (await client.get("/v1/suppressions", params={"email": bouncing}, headers=admin)).json()
    assert [(s["email"], s["reason"], s["scope"]) for s in listed["data"]] == [
        (bouncing, "bounce", "workspace")
    ]
    outcomes: list[str] = []

    async def suppressed_now() -> bool:  # the Dispatcher's suppression shards follow Redis over pub/sub
        again = await send(client, admin, message(bouncing, routing={"server": mailgun.server["id"]}))
        view = await wait_for(lambda: _final(client, admin, again), within=10)
        outcomes.append(view["status"])
        return view["status"] == "suppressed"

    await wait_for(suppressed_now, within=20, every=0.2)
    await wait_for(lambda: dispatch_idle(redis))  # nothing else can reach the simulator now
    assert len(mailgun.state.messages) == 1 + outcomes.count("bounced")
    assert (await message_view(client, admin, message_id))["status"] == "bounced"
