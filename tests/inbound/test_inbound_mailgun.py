"""Mailgun: HMAC over timestamp+token, freshness, one-time tokens in real Redis, normalisation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from providers.inbound import InboundConfig, InboundResult, InvalidSignature, MalformedPayload, parse_inbound
from store import keyspace
from store.inbound_replay import RedisReplayGuard

from .payloads import MAILGUN_EVENTS, MAILGUN_MESSAGE_ID, OUR_ID
from .signing import NOW, mailgun_signature

SIGNING_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
CONFIG = InboundConfig(mailgun_signing_key=SIGNING_KEY)
TOKEN = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"


def webhook(
    event: str = "delivered", *, token: str = TOKEN, timestamp: float = NOW, key: str = SIGNING_KEY
) -> bytes:
    signature = mailgun_signature(key, str(int(timestamp)), token)
    return json.dumps({"signature": signature, "event-data": MAILGUN_EVENTS[event]}).encode()


async def deliver(
    body: bytes, redis: aioredis.Redis, *, now: float = NOW, config: InboundConfig = CONFIG
) -> InboundResult:
    return await parse_inbound(
        "mailgun",
        headers={"Content-Type": "application/json"},
        body=body,
        config=config,
        server_id="srv_mg",
        now=now,
        replay_guard=RedisReplayGuard(redis),
        cert_fetcher=None,
    )


async def test_delivered_event_is_normalised(redis: aioredis.Redis) -> None:
    [event] = (await deliver(webhook("delivered"), redis)).events
    assert event.provider == "mailgun"
    assert event.type == "message.delivered"
    assert event.provider_event_id == "CPgfbmQMTCKtHW6uIWtuVe"
    assert event.provider_message_id == MAILGUN_MESSAGE_ID
    assert event.our_message_id == OUR_ID
    assert event.recipient == "alice@example.com"
    assert event.occurred_at == datetime.fromtimestamp(1716200131.908181, UTC)


EXPECTED: dict[str, tuple[str, dict[str, Any]]] = {
    "accepted": ("message.sent", {}),
    "failed-permanent": (
        "message.bounced",
        {
            "bounce": {
                "type": "hard",
                "code": "550",
                "diagnostic": "5.1.1 The email account that you tried to reach does not exist.",
            }
        },
    ),
    "failed-temporary": (
        "message.deferred",
        {"reason": "4.2.2 The email account that you tried to reach is over quota.", "code": "452"},
    ),
    "opened": (
        "message.opened",
        {
            "ip": "50.56.129.169",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
        },
    ),
    "clicked": (
        "message.clicked",
        {
            "ip": "50.56.129.169",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
            "url": "https://acme.example/may",
        },
    ),
    "unsubscribed": ("subscriber.unsubscribed", {}),
    "complained": ("message.complained", {}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_event_types_map_to_ours(name: str, redis: aioredis.Redis) -> None:
    [event] = (await deliver(webhook(name, token=f"token-{name}"), redis)).events
    assert (event.type, event.data) == EXPECTED[name]


async def test_a_token_is_accepted_once(redis: aioredis.Redis) -> None:
    assert len((await deliver(webhook(), redis)).events) == 1
    with pytest.raises(InvalidSignature, match="already used"):
        await deliver(webhook(), redis)
    ttl = await redis.ttl(keyspace.inbound_replay("mailgun", "srv_mg", TOKEN))
    assert 0 < ttl <= 600


async def test_tokens_are_scoped_per_server(redis: aioredis.Redis) -> None:
    await deliver(webhook(), redis)
    result = await parse_inbound(
        "mailgun",
        headers={},
        body=webhook(),
        config=CONFIG,
        server_id="srv_other",
        now=NOW,
        replay_guard=RedisReplayGuard(redis),
        cert_fetcher=None,
    )
    assert len(result.events) == 1


async def test_forged_request_does_not_consume_the_token(redis: aioredis.Redis) -> None:
    forged = webhook(key="not-the-signing-key")
    with pytest.raises(InvalidSignature, match="does not verify"):
        await deliver(forged, redis)
    assert await redis.exists(keyspace.inbound_replay("mailgun", "srv_mg", TOKEN)) == 0
    assert len((await deliver(webhook(), redis)).events) == 1


async def test_altered_timestamp_breaks_the_hmac_and_consumes_nothing(redis: aioredis.Redis) -> None:
    body = json.loads(webhook())
    body["signature"]["timestamp"] = str(int(NOW) + 1)
    with pytest.raises(InvalidSignature):
        await deliver(json.dumps(body).encode(), redis)
    assert await redis.dbsize() == 0


@pytest.mark.parametrize("signed_at", [NOW - 301, NOW + 301])
async def test_stale_or_future_timestamp_is_rejected_without_consuming(
    signed_at: float, redis: aioredis.Redis
) -> None:
    with pytest.raises(InvalidSignature, match="tolerance"):
        await deliver(webhook(timestamp=signed_at), redis)
    assert await redis.dbsize() == 0


async def test_tolerance_is_configurable(redis: aioredis.Redis) -> None:
    lenient = InboundConfig(mailgun_signing_key=SIGNING_KEY, timestamp_tolerance=3600)
    assert len((await deliver(webhook(timestamp=NOW - 1800), redis, config=lenient)).events) == 1


async def test_unconfigured_server_rejects(redis: aioredis.Redis) -> None:
    with pytest.raises(InvalidSignature):
        await deliver(webhook(), redis, config=InboundConfig())


@pytest.mark.parametrize(
    "body", [b"", b"[1, 2]", b'{"signature": {}}', b'{"event-data": {"event": "delivered"}}']
)
async def test_malformed_body(body: bytes, redis: aioredis.Redis) -> None:
    with pytest.raises(MalformedPayload):
        await deliver(body, redis)


async def test_unknown_event_kinds_are_verified_and_ignored(redis: aioredis.Redis) -> None:
    body = json.loads(webhook())
    body["event-data"]["event"] = "stored"
    assert (await deliver(json.dumps(body).encode(), redis)).events == []


async def test_replay_guard_is_required(redis: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="ReplayGuard"):
        await parse_inbound(
            "mailgun",
            headers={},
            body=webhook(),
            config=CONFIG,
            server_id="srv_mg",
            now=NOW,
            replay_guard=None,
            cert_fetcher=None,
        )
