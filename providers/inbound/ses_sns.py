"""Amazon SES events delivered through an SNS topic: envelope signature, then the SES event inside.

Verified: the envelope's `TopicArn` equals the server's configured topic; `SigningCertURL` (and a
confirmation's `SubscribeURL`) pass the operator's `SnsTrust` and the server's (which can only narrow
it), before anything is fetched; the certificate is current; the RSA signature
(SignatureVersion 1 = SHA1, 2 = SHA256, PKCS#1 v1.5) covers the canonical string to sign.
SNS sends no replay token; duplicates are removed downstream by event id (the SNS MessageId).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from providers.inbound.errors import InvalidSignature, MalformedPayload
from providers.inbound.ses_events import SesEvent, SesMail, decode_ses_event
from providers.inbound.sns_certs import CertFetcher
from providers.inbound.timestamps import from_iso
from schemas.inbound_config import InboundConfig, SnsTrust
from schemas.provider_events import (
    OUR_MESSAGE_ID_KEY,
    BounceKind,
    InboundResult,
    ProviderEvent,
    bounce_data,
    engagement_data,
    fan_out_ids,
    reason_data,
)

PROVIDER = "amazon-ses"

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

# The keys of the string to sign, in the order SNS signs them.
_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


class SnsEnvelope(msgspec.Struct, kw_only=True):
    type: str = msgspec.field(name="Type")
    message_id: str = msgspec.field(name="MessageId")
    topic_arn: str = msgspec.field(name="TopicArn")
    message: str = msgspec.field(name="Message")
    timestamp: str = msgspec.field(name="Timestamp")
    signature_version: str = msgspec.field(name="SignatureVersion")
    signature: str = msgspec.field(name="Signature")
    signing_cert_url: str = msgspec.field(name="SigningCertURL")
    subject: str | None = msgspec.field(name="Subject", default=None)
    subscribe_url: str | None = msgspec.field(name="SubscribeURL", default=None)
    token: str | None = msgspec.field(name="Token", default=None)


_envelope_decoder = msgspec.json.Decoder(SnsEnvelope)


def decode(body: bytes) -> SnsEnvelope:
    try:
        envelope = _envelope_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise MalformedPayload(f"not an SNS envelope: {exc}") from None
    if envelope.type not in (NOTIFICATION, SUBSCRIPTION_CONFIRMATION, UNSUBSCRIBE_CONFIRMATION):
        raise MalformedPayload(f"unknown SNS message type {envelope.type!r}")
    return envelope


def string_to_sign(envelope: SnsEnvelope) -> bytes:
    values = {
        "Message": envelope.message,
        "MessageId": envelope.message_id,
        "Subject": envelope.subject,
        "Timestamp": envelope.timestamp,
        "TopicArn": envelope.topic_arn,
        "Type": envelope.type,
        "SubscribeURL": envelope.subscribe_url,
        "Token": envelope.token,
    }
    keys = _NOTIFICATION_KEYS if envelope.type == NOTIFICATION else _CONFIRMATION_KEYS
    if envelope.type != NOTIFICATION and (envelope.subscribe_url is None or envelope.token is None):
        raise MalformedPayload("confirmation without SubscribeURL or Token")
    return "".join(f"{key}\n{values[key]}\n" for key in keys if values[key] is not None).encode()


def trusted(url: str, config: InboundConfig, operator: SnsTrust) -> bool:
    return operator.allows(url) and config.sns_trust.allows(url)


async def verify(
    envelope: SnsEnvelope,
    *,
    config: InboundConfig,
    fetch_cert: CertFetcher | None,
    now: float,
    operator: SnsTrust = SnsTrust(),
) -> None:
    if config.sns_topic_arn is None:
        raise InvalidSignature("no SNS topic configured for this server")
    if envelope.topic_arn != config.sns_topic_arn:
        raise InvalidSignature("unexpected TopicArn")
    algorithm = _HASHES.get(envelope.signature_version)
    if algorithm is None:
        raise InvalidSignature(f"unsupported SignatureVersion {envelope.signature_version!r}")
    if not trusted(envelope.signing_cert_url, config, operator):
        raise InvalidSignature("SigningCertURL is not on a trusted host")
    if fetch_cert is None:
        raise ValueError("SNS verification needs a CertFetcher")
    key = _current_public_key(await fetch_cert(envelope.signing_cert_url), now)
    try:
        signature = base64.b64decode(envelope.signature, validate=True)
        key.verify(signature, string_to_sign(envelope), padding.PKCS1v15(), algorithm())
    except (binascii.Error, CryptoInvalidSignature):
        raise InvalidSignature("SNS signature does not verify") from None


def _current_public_key(pem: bytes, now: float) -> rsa.RSAPublicKey:
    certificate = _certificate(pem)
    if not (
        certificate.not_valid_before_utc.timestamp() <= now <= certificate.not_valid_after_utc.timestamp()
    ):
        raise InvalidSignature("SNS signing certificate is not currently valid")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise InvalidSignature("SNS signing certificate does not hold an RSA key")
    return key


@lru_cache(maxsize=16)
def _certificate(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise InvalidSignature("SNS signing certificate is not a PEM certificate") from None


def confirmation_url(
    envelope: SnsEnvelope, config: InboundConfig, operator: SnsTrust = SnsTrust()
) -> str | None:
    """The SubscribeURL of a verified SubscriptionConfirmation, if it points at a trusted host."""
    if envelope.type != SUBSCRIPTION_CONFIRMATION or envelope.subscribe_url is None:
        return None
    if not trusted(envelope.subscribe_url, config, operator):
        raise InvalidSignature("SubscribeURL is not on a trusted host")
    return envelope.subscribe_url


async def parse(
    body: bytes,
    *,
    config: InboundConfig,
    fetch_cert: CertFetcher | None,
    now: float,
    operator: SnsTrust = SnsTrust(),
) -> InboundResult:
    envelope = decode(body)
    await verify(envelope, config=config, fetch_cert=fetch_cert, now=now, operator=operator)
    if envelope.type == NOTIFICATION:
        return InboundResult(events=normalise(envelope))
    return InboundResult(confirm_url=confirmation_url(envelope, config, operator))


def normalise(envelope: SnsEnvelope) -> list[ProviderEvent]:
    """The SES event inside a verified Notification, one ProviderEvent per affected recipient."""
    event = decode_ses_event(envelope.message)
    drafts = _drafts(event)
    ids = fan_out_ids(envelope.message_id, len(drafts))
    hint = _our_message_id(event.mail)
    return [
        ProviderEvent(
            provider=PROVIDER,
            provider_event_id=event_id,
            provider_message_id=event.mail.message_id,
            our_message_id=hint,
            type=kind,
            recipient=recipient,
            occurred_at=at,
            data=data,
        )
        for event_id, (kind, recipient, at, data) in zip(ids, drafts, strict=True)
    ]


Draft = tuple[Any, str | None, datetime, dict[str, Any]]


def _drafts(event: SesEvent) -> list[Draft]:
    kind = event.event_type or event.notification_type
    build = _BUILDERS.get(kind or "")
    return build(event) if build is not None else []


def _sent(event: SesEvent) -> list[Draft]:
    at = from_iso(event.mail.timestamp)
    return [("message.sent", address, at, {}) for address in event.mail.destination]


def _delivered(event: SesEvent) -> list[Draft]:
    delivery = _required(event.delivery, "delivery")
    at = from_iso(delivery.timestamp)
    return [("message.delivered", address, at, {}) for address in delivery.recipients]


def _bounced(event: SesEvent) -> list[Draft]:
    bounce = _required(event.bounce, "bounce")
    kind: BounceKind = "hard" if bounce.bounce_type == "Permanent" else "soft"
    at = from_iso(bounce.timestamp)
    return [
        ("message.bounced", r.email_address, at, bounce_data(kind, r.status, r.diagnostic_code))
        for r in bounce.bounced_recipients
    ]


def _complained(event: SesEvent) -> list[Draft]:
    complaint = _required(event.complaint, "complaint")
    at = from_iso(complaint.timestamp)
    data = {"feedback_type": complaint.complaint_feedback_type}
    return [("message.complained", r.email_address, at, data) for r in complaint.complained_recipients]


def _deferred(event: SesEvent) -> list[Draft]:
    delay = _required(event.delivery_delay, "deliveryDelay")
    at = from_iso(delay.timestamp)
    return [
        (
            "message.deferred",
            r.email_address,
            at,
            reason_data(r.diagnostic_code or delay.delay_type, r.status),
        )
        for r in delay.delayed_recipients
    ]


def _opened(event: SesEvent) -> list[Draft]:
    opened = _required(event.open, "open")
    data = engagement_data(opened.user_agent, opened.ip_address)
    return [("message.opened", _sole_recipient(event.mail), from_iso(opened.timestamp), data)]


def _clicked(event: SesEvent) -> list[Draft]:
    click = _required(event.click, "click")
    data = engagement_data(click.user_agent, click.ip_address, click.link)
    return [("message.clicked", _sole_recipient(event.mail), from_iso(click.timestamp), data)]


def _rejected(event: SesEvent) -> list[Draft]:
    reason = event.reject.reason if event.reject is not None else None
    at = from_iso(event.mail.timestamp)
    return [("message.failed", address, at, reason_data(reason)) for address in event.mail.destination]


def _rendering_failed(event: SesEvent) -> list[Draft]:
    reason = event.failure.error_message if event.failure is not None else None
    at = from_iso(event.mail.timestamp)
    return [("message.failed", address, at, reason_data(reason)) for address in event.mail.destination]


_BUILDERS = {
    "Send": _sent,
    "Delivery": _delivered,
    "Bounce": _bounced,
    "Complaint": _complained,
    "DeliveryDelay": _deferred,
    "Open": _opened,
    "Click": _clicked,
    "Reject": _rejected,
    "Rendering Failure": _rendering_failed,
}


T = TypeVar("T")


def _required(part: T | None, name: str) -> T:
    if part is None:
        raise MalformedPayload(f"SES event without its {name!r} object")
    return part


def _sole_recipient(mail: SesMail) -> str | None:
    # Opens and clicks name no recipient; they are attributable only when the message had one.
    return mail.destination[0] if len(mail.destination) == 1 else None


def _our_message_id(mail: SesMail) -> str | None:
    values = mail.tags.get(OUR_MESSAGE_ID_KEY)
    return values[0] if values else None
