"""SendGrid: ECDSA P-256 over timestamp + raw body, the whole documented event array."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from providers.inbound import InboundConfig, InboundResult, InvalidSignature, MalformedPayload, parse_inbound

from .payloads import OUR_ID, SENDGRID_EVENTS, SENDGRID_X_MESSAGE_ID
from .signing import NOW, ec_key, sendgrid_headers, sendgrid_verification_key

BODY = json.dumps(SENDGRID_EVENTS).encode()


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec_key()


@pytest.fixture(scope="module")
def config(key: ec.EllipticCurvePrivateKey) -> InboundConfig:
    return InboundConfig(sendgrid_public_key=sendgrid_verification_key(key))


async def deliver(
    headers: dict[str, str], body: bytes, config: InboundConfig, now: float = NOW
) -> InboundResult:
    return await parse_inbound(
        "sendgrid",
        headers=headers,
        body=body,
        config=config,
        server_id="srv_sg",
        now=now,
        replay_guard=None,
        cert_fetcher=None,
    )


async def test_documented_event_array_is_normalised(
    key: ec.EllipticCurvePrivateKey, config: InboundConfig
) -> None:
    result = await deliver(sendgrid_headers(key, str(int(NOW)), BODY), BODY, config)
    assert [(e.type, (e.data.get("bounce") or {}).get("type")) for e in result.events] == [
        ("message.sent", None),
        ("message.deferred", None),
        ("message.delivered", None),
        ("message.opened", None),
        ("message.clicked", None),
        ("message.bounced", "hard"),
        ("message.bounced", "soft"),
        ("message.failed", None),
        ("message.complained", None),
        ("subscriber.unsubscribed", None),
        ("subscriber.unsubscribed", None),
    ]  # group_resubscribe carries no outcome and is dropped
    assert {e.provider_message_id for e in result.events} == {SENDGRID_X_MESSAGE_ID}
    assert {e.our_message_id for e in result.events} == {OUR_ID}
    assert {e.recipient for e in result.events} == {"example@test.com"}
    assert [e.provider_event_id for e in result.events] == [e["sg_event_id"] for e in SENDGRID_EVENTS[:-1]]
    assert result.events[0].occurred_at == datetime.fromtimestamp(1716200131, UTC)


async def test_event_details(key: ec.EllipticCurvePrivateKey, config: InboundConfig) -> None:
    events = (await deliver(sendgrid_headers(key, str(int(NOW)), BODY), BODY, config)).events
    by_id = {e.provider_event_id: e for e in events}
    assert by_id["t7LEShmowp86DTdUW8M-GQ=="].data == {"reason": "400 try again later", "code": None}
    assert by_id["kCAi1KttyQdEKHhdC-nuEA=="].data == {
        "user_agent": "Mozilla/4.0 (compatible; MSIE 6.1; Windows XP)",
        "ip": "255.255.255.255",
        "url": "http://www.sendgrid.com/",
    }
    assert by_id["6g4ZI7SA-xmRDv57GoPIPw=="].data == {
        "bounce": {"type": "hard", "code": "5.0.0", "diagnostic": "500 unknown recipient"}
    }
    assert by_id["1bvyg-bDnEkeYj0Ugy5D3g=="].data == {
        "bounce": {"type": "soft", "code": "5.7.1", "diagnostic": "550 blocked by policy"}
    }
    assert by_id["zmzJhfJgAfUSOW80yEbPyw=="].data == {"reason": "Bounced Address", "code": "5.0.0"}


async def test_pem_verification_key_is_accepted(key: ec.EllipticCurvePrivateKey) -> None:
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    result = await deliver(
        sendgrid_headers(key, str(int(NOW)), BODY), BODY, InboundConfig(sendgrid_public_key=pem)
    )
    assert len(result.events) == 11


async def test_tampered_body_is_rejected(key: ec.EllipticCurvePrivateKey, config: InboundConfig) -> None:
    headers = sendgrid_headers(key, str(int(NOW)), BODY)
    with pytest.raises(InvalidSignature):
        await deliver(headers, BODY.replace(b"bounce", b"delivered"), config)


async def test_timestamp_is_part_of_the_signed_content(
    key: ec.EllipticCurvePrivateKey, config: InboundConfig
) -> None:
    headers = sendgrid_headers(key, str(int(NOW)), BODY)
    headers["X-Twilio-Email-Event-Webhook-Timestamp"] = str(int(NOW) + 1)
    with pytest.raises(InvalidSignature):
        await deliver(headers, BODY, config)


async def test_other_key_is_rejected(config: InboundConfig) -> None:
    with pytest.raises(InvalidSignature):
        await deliver(sendgrid_headers(ec_key(), str(int(NOW)), BODY), BODY, config)


async def test_stale_timestamp_is_rejected(key: ec.EllipticCurvePrivateKey, config: InboundConfig) -> None:
    headers = sendgrid_headers(key, str(int(NOW) - 301), BODY)
    with pytest.raises(InvalidSignature, match="tolerance"):
        await deliver(headers, BODY, config)


@pytest.mark.parametrize(
    "missing", ["X-Twilio-Email-Event-Webhook-Signature", "X-Twilio-Email-Event-Webhook-Timestamp"]
)
async def test_missing_headers_are_rejected(
    missing: str, key: ec.EllipticCurvePrivateKey, config: InboundConfig
) -> None:
    headers = sendgrid_headers(key, str(int(NOW)), BODY)
    del headers[missing]
    with pytest.raises(InvalidSignature):
        await deliver(headers, BODY, config)


async def test_non_p256_verification_key_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    p384 = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    config = InboundConfig(sendgrid_public_key=base64.b64encode(p384).decode())
    with pytest.raises(InvalidSignature, match="P-256"):
        await deliver(sendgrid_headers(key, str(int(NOW)), BODY), BODY, config)


@pytest.mark.parametrize("body", [b'{"event": "delivered"}', b"[{}]", b"not json"])
async def test_signed_but_malformed_body(
    body: bytes, key: ec.EllipticCurvePrivateKey, config: InboundConfig
) -> None:
    with pytest.raises(MalformedPayload):
        await deliver(sendgrid_headers(key, str(int(NOW)), body), body, config)
