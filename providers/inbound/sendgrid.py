"""SendGrid Event Webhook: a JSON array of events, signed with the account's ECDSA P-256 key.

Verified: `X-Twilio-Email-Event-Webhook-Signature` (base64 DER ECDSA/SHA-256) over the bytes of
`X-Twilio-Email-Event-Webhook-Timestamp` followed by the raw body, with the server's verification
key (base64 DER SubjectPublicKeyInfo); the timestamp is within the tolerance (SendGrid documents no
window; without one a captured request could be replayed forever).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from providers.inbound.errors import InvalidSignature, MalformedPayload
from providers.inbound.timestamps import from_epoch, require_fresh, signed_seconds
from schemas.inbound_config import InboundConfig
from schemas.provider_events import (
    BounceKind,
    InboundResult,
    ProviderEvent,
    bounce_data,
    engagement_data,
    reason_data,
)

PROVIDER = "sendgrid"
SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"


class SendGridEvent(msgspec.Struct, kw_only=True):
    email: str
    timestamp: float
    event: str
    sg_event_id: str
    sg_message_id: str | None = None
    type: str | None = None  # bounce: "bounce" | "blocked"
    status: str | None = None
    reason: str | None = None
    response: str | None = None
    url: str | None = None
    useragent: str | None = None
    ip: str | None = None
    # Our custom_args come back as top-level keys of each event.
    mailers_message_id: str | None = None


_decoder = msgspec.json.Decoder(list[SendGridEvent])


def decode(body: bytes) -> list[SendGridEvent]:
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise MalformedPayload(f"not a SendGrid event array: {exc}") from None


def verify(headers: Mapping[str, str], body: bytes, *, config: InboundConfig, now: float) -> None:
    """`headers` keys are lower case."""
    if not config.sendgrid_public_key:
        raise InvalidSignature("no SendGrid verification key configured for this server")
    timestamp = headers.get(TIMESTAMP_HEADER)
    signed_at = signed_seconds(timestamp)
    key = _public_key(config.sendgrid_public_key)
    try:
        signature = base64.b64decode(headers.get(SIGNATURE_HEADER) or "", validate=True)
        key.verify(signature, str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, CryptoInvalidSignature):
        raise InvalidSignature("SendGrid signature does not verify") from None
    require_fresh(signed_at, now=now, tolerance=config.timestamp_tolerance)


@lru_cache(maxsize=64)
def _public_key(encoded: str) -> ec.EllipticCurvePublicKey:
    try:
        if encoded.lstrip().startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(encoded.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(encoded, validate=True))
    except (ValueError, binascii.Error):
        raise InvalidSignature("configured SendGrid verification key is unreadable") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidSignature("configured SendGrid verification key is not ECDSA P-256")
    return key


def parse(headers: Mapping[str, str], body: bytes, *, config: InboundConfig, now: float) -> InboundResult:
    verify(headers, body, config=config, now=now)
    return InboundResult(events=normalise(decode(body)))


def normalise(events: list[SendGridEvent]) -> list[ProviderEvent]:
    normalised = []
    for event in events:
        mapped = _classify(event)
        if mapped is None:
            continue
        kind, data = mapped
        normalised.append(
            ProviderEvent(
                provider=PROVIDER,
                provider_event_id=event.sg_event_id,
                provider_message_id=sendgrid_message_id(event.sg_message_id),
                our_message_id=event.mailers_message_id,
                type=kind,
                recipient=event.email,
                occurred_at=from_epoch(event.timestamp),
                data=data,
            )
        )
    return normalised


def sendgrid_message_id(sg_message_id: str | None) -> str | None:
    """`sg_message_id` is the send answer's X-Message-Id plus `.filter…` suffixes; keep the prefix."""
    if not sg_message_id:
        return None
    return sg_message_id.split(".", 1)[0]


def _classify(event: SendGridEvent) -> tuple[Any, dict[str, Any]] | None:
    match event.event:
        case "processed":
            return "message.sent", {}
        case "delivered":
            return "message.delivered", {}
        case "deferred":
            return "message.deferred", reason_data(event.response or event.reason, event.status)
        case "bounce":
            kind: BounceKind = "soft" if event.type == "blocked" else "hard"
            return "message.bounced", bounce_data(kind, event.status, event.reason)
        case "dropped":
            return "message.failed", reason_data(event.reason, event.status)
        case "open":
            return "message.opened", engagement_data(event.useragent, event.ip)
        case "click":
            return "message.clicked", engagement_data(event.useragent, event.ip, event.url)
        case "spamreport":
            return "message.complained", {}
        case "unsubscribe" | "group_unsubscribe":
            return "subscriber.unsubscribed", {}
    return None
