"""SES events via SNS: signature with a locally served certificate, trust rules, normalisation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.inbound import (
    CertUnavailable,
    HttpCertFetcher,
    InboundConfig,
    InboundResult,
    InvalidSignature,
    MalformedPayload,
    SnsTrust,
    parse_inbound,
)

from .payloads import (
    OUR_ID,
    SES_EVENTS,
    SES_MESSAGE_ID,
    TOPIC_ARN,
    copy_of,
    sns_confirmation,
    sns_notification,
)
from .signing import NOW, cert_valid_around_now, rsa_key, self_signed_cert, sns_sign


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa_key()


@dataclass
class CertServer:
    base: str
    fetches: list[str] = field(default_factory=list)

    def url(self, name: str = "SimpleNotificationService-0123456789abcdef.pem") -> str:
        return f"{self.base}{name}"


@pytest.fixture
async def cert_server(aiohttp_server: Any, signing_key: rsa.RSAPrivateKey) -> CertServer:
    pems = {
        "SimpleNotificationService-0123456789abcdef.pem": cert_valid_around_now(signing_key),
        "expired.pem": self_signed_cert(signing_key, valid_from=NOW - 900_000, valid_until=NOW - 1),
        "other-key.pem": cert_valid_around_now(rsa_key()),
    }
    server = CertServer(base="")

    async def serve(request: web.Request) -> web.Response:
        server.fetches.append(request.match_info["name"])
        if request.match_info["name"] == "redirect.pem":
            raise web.HTTPFound("/certs/SimpleNotificationService-0123456789abcdef.pem")
        pem = pems.get(request.match_info["name"])
        return web.Response(body=pem) if pem else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/certs/{name}", serve)
    running = await aiohttp_server(app)
    server.base = f"http://127.0.0.1:{running.port}/certs/"
    return server


@pytest.fixture
async def fetcher() -> AsyncIterator[HttpCertFetcher]:
    async with aiohttp.ClientSession() as session:
        yield HttpCertFetcher(session)


def config_for(server: CertServer, **overrides: Any) -> InboundConfig:
    settings: dict[str, Any] = {
        "sns_topic_arn": TOPIC_ARN,
        "sns_trust": SnsTrust(allow_aws_hosts=False, url_prefixes=(server.base,)),
    }
    settings.update(overrides)
    return InboundConfig(**settings)


async def deliver(
    envelope: dict[str, Any],
    server: CertServer,
    fetcher: HttpCertFetcher,
    *,
    config: InboundConfig | None = None,
    now: float = NOW,
) -> InboundResult:
    return await parse_inbound(
        "amazon-ses",
        headers={"x-amz-sns-message-type": envelope["Type"], "Content-Type": "text/plain"},
        body=json.dumps(envelope).encode(),
        config=config or config_for(server),
        server_id="srv_1",
        now=now,
        replay_guard=None,
        cert_fetcher=fetcher,
        sns_trust=SnsTrust(url_prefixes=(server.base,)),  # the operator's trust: the local cert server
    )


async def test_permanent_bounce_becomes_one_hard_bounce_per_recipient(
    cert_server: CertServer, fetcher: HttpCertFetcher, signing_key: rsa.RSAPrivateKey
) -> None:
    envelope = sns_sign(sns_notification(SES_EVENTS["Bounce"], cert_server.url()), signing_key)
    result = await deliver(envelope, cert_server, fetcher)
    assert result.confirm_url is None
    assert [(e.type, e.recipient) for e in result.events] == [
        ("message.bounced", "gone@example.com"),
        ("message.bounced", "missing@example.com"),
    ]
    first = result.events[0]
    assert first.provider == "amazon-ses"
    assert first.provider_message_id == SES_MESSAGE_ID
    assert first.our_message_id == OUR_ID
    assert first.occurred_at == datetime(2024, 5, 20, 10, 15, 32, 669000, tzinfo=UTC)
    assert first.data == {
        "bounce": {"type": "hard", "code": "5.1.1", "diagnostic": "smtp; 550 5.1.1 user unknown"}
    }
    ids = [e.provider_event_id for e in result.events]
    assert len(set(ids)) == 2 and all(i.startswith(envelope["MessageId"]) for i in ids)


EXPECTED: dict[str, tuple[str, dict[str, Any]]] = {
    "Send": ("message.sent", {}),
    "Delivery": ("message.delivered", {}),
    "TransientBounce": (
        "message.bounced",
        {"bounce": {"type": "soft", "code": "5.2.2", "diagnostic": "smtp; 552 5.2.2 mailbox full"}},
    ),
    "Complaint": ("message.complained", {"feedback_type": "abuse"}),
    "Open": ("message.opened", {"user_agent": SES_EVENTS["Open"]["open"]["userAgent"], "ip": "192.0.2.1"}),
    "Click": (
        "message.clicked",
        {
            "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
            "ip": "192.0.2.1",
            "url": "https://acme.example/may?utm_source=email",
        },
    ),
    "Reject": ("message.failed", {"reason": "Bad content", "code": None}),
    "DeliveryDelay": (
        "message.deferred",
        {"reason": "smtp; 421 4.4.1 Unable to connect to remote host", "code": "4.4.1"},
    ),
    "Rendering Failure": (
        "message.failed",
        {"reason": "Attribute 'name' is not present in the rendering data.", "code": None},
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_each_ses_event_type_maps_to_our_type(
    name: str, cert_server: CertServer, fetcher: HttpCertFetcher, signing_key: rsa.RSAPrivateKey
) -> None:
    envelope = sns_sign(sns_notification(SES_EVENTS[name], cert_server.url()), signing_key)
    [event] = (await deliver(envelope, cert_server, fetcher)).events
    assert (event.type, event.data) == EXPECTED[name]
    assert event.recipient == "recipient@example.com"
    assert event.provider_event_id == envelope["MessageId"]
    assert event.provider_message_id == SES_MESSAGE_ID


async def test_signature_version_1_with_subject_verifies_and_cert_is_fetched_once(
    cert_server: CertServer, fetcher: HttpCertFetcher, signing_key: rsa.RSAPrivateKey
) -> None:
    for _ in range(2):
        envelope = sns_notification(
            SES_EVENTS["Delivery"], cert_server.url(), version="1", subject="SES event"
        )
        [event] = (await deliver(sns_sign(envelope, signing_key), cert_server, fetcher)).events
        assert event.type == "message.delivered"
    assert cert_server.fetches == ["SimpleNotificationService-0123456789abcdef.pem"]


@pytest.mark.parametrize(
    "field_name, value",
    [
        ("Message", json.dumps(SES_EVENTS["Complaint"])),
        ("TopicArn", "arn:aws:sns:us-east-1:999999999999:attacker"),
        ("SignatureVersion", "3"),
        ("Signature", "bm90IGEgc2lnbmF0dXJl"),
    ],
)
async def test_tampered_envelope_is_rejected(
    field_name: str,
    value: str,
    cert_server: CertServer,
    fetcher: HttpCertFetcher,
    signing_key: rsa.RSAPrivateKey,
) -> None:
    envelope = sns_sign(sns_notification(SES_EVENTS["Bounce"], cert_server.url()), signing_key)
    envelope[field_name] = value
    with pytest.raises(InvalidSignature):
        await deliver(envelope, cert_server, fetcher)


async def test_unexpected_topic_is_rejected_even_when_correctly_signed(
    cert_server: CertServer, fetcher: HttpCertFetcher, signing_key: rsa.RSAPrivateKey
) -> None:
    envelope = sns_sign(sns_notification(SES_EVENTS["Bounce"], cert_server.url()), signing_key)
    other_topic = config_for(cert_server, sns_topic_arn="arn:aws:sns:us-east-1:123456789012:other-topic")
    with pytest.raises(InvalidSignature, match="TopicArn"):
        await deliver(envelope, cert_server, fetcher, config=other_topic)


async def test_certificate_on_an_untrusted_host_is_never_fetched(
    cert_server: CertServer, fetcher: HttpCertFetcher, signing_key: rsa.RSAPrivateKey
) -> None:
    envelope = sns_sign(sns_notification(SES_EVENTS["Bounce"], cert_server.url()), signing_key)
    aws_only = config_for(cert_server, sns_trust=SnsTrust())
    with pytest.raises(InvalidSignature, match="SigningCertURL"):
        await deliver(envelope, cert_server, fetcher, config=aws_only)
    assert cert_server.fetches == []


@pytest.mark.parametrize("cert_name", ["other-key.pem", "expired.pem"])
async def test_wrong_or_expired_certificate_is_rejected(
    cert_name: str, cert_server: CertServer, fetcher: HttpCertFetcher, signing_key: rsa.RSAPrivateKey
) -> None:
    envelope = sns_sign(sns_notification(SES_EVENTS["Bounce"], cert_server.url(cert_name)), signing_key)
    with pytest.raises(InvalidSignature):
        await deliver(envelope, cert_server, fetcher)


async def test_unreachable_certificate_is_reported_as_unavailable(
    cert_server: CertServer, fetcher: HttpCertFetcher, signing_key: rsa.RSAPrivateKey
) -> None:
    envelope = sns_sign(sns_notification(SES_EVENTS["Bounce"], cert_server.url("missing.pem")), signing_key)
    with pytest.raises(CertUnavailable):
        await deliver(envelope, cert_server, fetcher)


async def test_certificate_redirects_are_not_followed(
    cert_server: CertServer, fetcher: HttpCertFetcher, signing_key: rsa.RSAPrivateKey
) -> None:
    envelope = sns_sign(sns_notification(SES_EVENTS["Bounce"], cert_server.url("redirect.pem")), signing_key)
    with pytest.raises(CertUnavailable):
        await deliver(envelope, cert_server, fetcher)
    assert cert_server.fetches == ["redirect.pem"]


async def test_subscription_confirmation_returns_the_subscribe_url(
    cert_server: CertServer, fetcher: HttpCertFetcher, signing_key: rsa.RSAPrivateKey
) -> None:
    subscribe_url = cert_server.base + "?Action=ConfirmSubscription&Token=2336412f37"
    envelope = sns_sign(
        sns_confirmation("SubscriptionConfirmation", cert_server.url(), subscribe_url), signing_key
    )
    result = await deliver(envelope, cert_server, fetcher)
    assert result == InboundResult(events=[], confirm_url=subscribe_url)


async def test_subscription_confirmation_with_untrusted_subscribe_url_is_rejected(
    cert_server: CertServer, fetcher: HttpCertFetcher, signing_key: rsa.RSAPrivateKey
) -> None:
    envelope = sns_confirmation(
        "SubscriptionConfirmation", cert_server.url(), "https://attacker.example/?Action=ConfirmSubscription"
    )
    with pytest.raises(InvalidSignature, match="SubscribeURL"):
        await deliver(sns_sign(envelope, signing_key), cert_server, fetcher)


async def test_confirmation_signature_covers_the_token(
    cert_server: CertServer, fetcher: HttpCertFetcher, signing_key: rsa.RSAPrivateKey
) -> None:
    envelope = sns_sign(
        sns_confirmation("SubscriptionConfirmation", cert_server.url(), cert_server.base), signing_key
    )
    envelope["Token"] = "forged"
    with pytest.raises(InvalidSignature):
        await deliver(envelope, cert_server, fetcher)


async def test_unsubscribe_confirmation_is_verified_and_yields_nothing(
    cert_server: CertServer, fetcher: HttpCertFetcher, signing_key: rsa.RSAPrivateKey
) -> None:
    envelope = sns_sign(
        sns_confirmation("UnsubscribeConfirmation", cert_server.url(), cert_server.base), signing_key
    )
    assert await deliver(envelope, cert_server, fetcher) == InboundResult()


@pytest.mark.parametrize("body", [b"", b"{not json", b'{"Type": "Notification"}', b"[]"])
async def test_malformed_envelope(body: bytes, fetcher: HttpCertFetcher) -> None:
    with pytest.raises(MalformedPayload):
        await parse_inbound(
            "amazon-ses",
            headers={},
            body=body,
            config=InboundConfig(sns_topic_arn=TOPIC_ARN),
            server_id="srv_1",
            now=NOW,
            replay_guard=None,
            cert_fetcher=fetcher,
        )


async def test_signed_notification_whose_message_is_not_an_ses_event_is_malformed(
    cert_server: CertServer, fetcher: HttpCertFetcher, signing_key: rsa.RSAPrivateKey
) -> None:
    broken = copy_of(SES_EVENTS["Bounce"])
    del broken["bounce"]
    for message in (broken, {"eventType": "Bounce"}):
        envelope = sns_sign(sns_notification(message, cert_server.url()), signing_key)
        with pytest.raises(MalformedPayload):
            await deliver(envelope, cert_server, fetcher)


@pytest.mark.parametrize(
    "url, trusted",
    [
        ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem", True),
        ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem", True),
        ("http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem", False),
        ("https://sns.us-east-1.amazonaws.com.evil.example/cert.pem", False),
        ("https://sns.us-east-1.amazonaws.com@evil.example/cert.pem", False),
        ("https://evil.example/sns.us-east-1.amazonaws.com/cert.pem", False),
        ("https://s3.amazonaws.com/sns/cert.pem", False),
        ("https://sns.us-east-1.amazonaws.com:8443/cert.pem", False),
    ],
)
def test_default_trust_accepts_only_aws_sns_hosts_over_https(url: str, trusted: bool) -> None:
    assert SnsTrust().allows(url) is trusted


def test_trust_prefixes_are_exact_and_must_end_with_a_slash() -> None:
    trust = SnsTrust(allow_aws_hosts=False, url_prefixes=("http://127.0.0.1:8080/",))
    assert trust.allows("http://127.0.0.1:8080/cert.pem")
    assert not trust.allows("http://127.0.0.1:8081/cert.pem")
    assert not trust.allows("https://sns.us-east-1.amazonaws.com/cert.pem")
    with pytest.raises(ValueError):
        SnsTrust(url_prefixes=("http://127.0.0.1:8080",))
