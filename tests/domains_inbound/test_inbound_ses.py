"""Amazon SES events through the SNS simulator: signed envelopes, a certificate fetched over HTTP, the
subscription confirmed in the background, events correlated by the SES message id alone."""

from __future__ import annotations

import asyncio

import msgspec
import redis.asyncio as aioredis

from ingress.context import SERVICES
from providers.simulators.sns import SNS, SnsOptions, create_app, ses_event
from schemas.ids import new_id
from store.suppressions import SuppressionStore

from .helpers import create_server, outbound, record_provider_id, store_message, stored, wait_until


def trust_sns_simulator(client, base: str) -> None:
    """The operator's MAILERS_SNS_TRUSTED_URL_PREFIXES, set once the simulator's port is known."""
    services = client.app[SERVICES]
    services.settings = msgspec.structs.replace(services.settings, sns_trusted_url_prefixes=(base,))


async def test_ses_via_sns(ws: str, client, aiohttp_server, redis: aioredis.Redis) -> None:
    server_id = new_id("srv")
    simulator = create_app(
        SnsOptions(webhook_url=str(client.make_url(f"/v1/inbound/amazon-ses/{server_id}")))
    )
    base = str((await aiohttp_server(simulator)).make_url("/"))
    trust_sns_simulator(client, base)
    sns = simulator[SNS]
    await create_server(
        redis,
        "amazon-ses",
        workspace=ws,
        server_id=server_id,
        config={"region": "us-east-1"},
        inbound={
            "sns_topic_arn": SnsOptions().topic_arn,
            "sns_trust": {"allow_aws_hosts": False, "url_prefixes": [base]},
        },
    )

    async with client.session.post(base + "_sim/subscribe") as response:
        assert response.status == 200
    await wait_until(lambda: bool(sns.tokens) and all(sns.tokens.values()))

    message = outbound("ana@example.com", workspace=ws)
    await store_message(redis, message, server_id)
    await record_provider_id(redis, message, "amazon-ses", "ses-0001")
    for kind in ("Send", "Delivery", "Complaint"):  # no mailers_message_id tag: the SES id must do
        sns.publish(
            ses_event(kind, message_id="ses-0001", source="hello@acme.test", destination=["ana@example.com"]),
            base,
        )
    async with asyncio.timeout(10):
        await sns.webhooks.drain()
    assert [status for status, _ in sns.webhooks.delivered] == [200] * 4

    recorded = await stored(redis, message)
    assert [e.type for e in recorded.events] == [
        "message.accepted",
        "message.delivered",
        "message.complained",
    ]
    assert recorded.status == "complained"
    assert recorded.events[2].message.server == server_id
    assert await SuppressionStore(redis).is_suppressed(ws, "ana@example.com", "workspace")


async def test_an_untrusted_certificate_host_is_refused(
    ws: str, client, aiohttp_server, redis: aioredis.Redis
) -> None:
    server_id = new_id("srv")
    simulator = create_app(
        SnsOptions(webhook_url=str(client.make_url(f"/v1/inbound/amazon-ses/{server_id}")))
    )
    base = str((await aiohttp_server(simulator)).make_url("/"))
    trust_sns_simulator(client, base)
    await create_server(
        redis,
        "amazon-ses",
        workspace=ws,
        server_id=server_id,
        config={},
        inbound={"sns_topic_arn": SnsOptions().topic_arn},
    )  # only real AWS hosts are trusted
    message = outbound("ana@example.com", workspace=ws)
    await store_message(redis, message, server_id)
    simulator[SNS].publish(
        ses_event(
            "Delivery",
            message_id="ses-2",
            source="hello@acme.test",
            destination=["ana@example.com"],
            tags={"mailers_message_id": message.id},
        ),
        base,
    )
    async with asyncio.timeout(10):
        await simulator[SNS].webhooks.drain()
    assert [status for status, _ in simulator[SNS].webhooks.delivered] == [401]
    assert [e.type for e in (await stored(redis, message)).events] == ["message.accepted"]
