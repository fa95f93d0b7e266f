"""parse_inbound's own contract: provider names, unconfigured servers, the replay guard on Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from providers.inbound import (
    INBOUND_PROVIDERS,
    InboundConfig,
    InvalidSignature,
    UnsupportedProvider,
    parse_inbound,
)
from store import keyspace
from store.inbound_replay import RedisReplayGuard

from .signing import NOW


async def test_unknown_provider_is_unsupported() -> None:
    with pytest.raises(UnsupportedProvider):
        await parse_inbound(
            "smtp",
            headers={},
            body=b"{}",
            config=InboundConfig(),
            server_id="srv_1",
            now=NOW,
            replay_guard=None,
            cert_fetcher=None,
        )


@pytest.mark.parametrize("provider", sorted(INBOUND_PROVIDERS - {"amazon-ses", "mailgun"}))
async def test_a_server_without_secrets_rejects_every_provider(provider: str) -> None:
    with pytest.raises(InvalidSignature):
        await parse_inbound(
            provider,
            headers={"Authorization": "Basic Og=="},
            body=b"[]",
            config=InboundConfig(),
            server_id="srv_1",
            now=NOW,
            replay_guard=None,
            cert_fetcher=None,
        )


async def test_sns_without_a_configured_topic_rejects() -> None:
    body = (
        b'{"Type":"Notification","MessageId":"m","TopicArn":"arn:aws:sns:us-east-1:1:t","Message":"{}",'
        b'"Timestamp":"2024-05-20T10:15:33.012Z","SignatureVersion":"2","Signature":"",'
        b'"SigningCertURL":"https://sns.us-east-1.amazonaws.com/c.pem"}'
    )
    with pytest.raises(InvalidSignature):
        await parse_inbound(
            "amazon-ses",
            headers={},
            body=body,
            config=InboundConfig(),
            server_id="srv_1",
            now=NOW,
            replay_guard=None,
            cert_fetcher=None,
        )


async def test_redis_replay_guard_claims_once_with_expiry(redis: aioredis.Redis) -> None:
    guard = RedisReplayGuard(redis)
    assert await guard.claim("mailgun", "srv_1", "tok", 600) is True
    assert await guard.claim("mailgun", "srv_1", "tok", 600) is False
    assert await guard.claim("mailgun", "srv_2", "tok", 600) is True
    assert 590 < await redis.ttl(keyspace.inbound_replay("mailgun", "srv_1", "tok")) <= 600


def test_inbound_config_decodes_from_json_and_refuses_unknown_fields() -> None:
    import msgspec

    config = msgspec.json.decode(
        b'{"sns_topic_arn": "arn:aws:sns:us-east-1:1:t", "sns_trust": {"url_prefixes": ["http://127.0.0.1:9/"]}}',
        type=InboundConfig,
    )
    assert config.sns_trust.allows("http://127.0.0.1:9/cert.pem")
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"mailgun_key": "x"}', type=InboundConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"sns_trust": {"url_prefixes": ["ftp://x/"]}}', type=InboundConfig)
