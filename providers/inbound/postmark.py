"""Postmark webhooks: one record per request, unsigned; authenticated by HTTP Basic credentials
that the operator puts in the webhook URL (`https://user:pass@host/v1/inbound/postmark/<server>`).

Verified: the `Authorization: Basic` user and password equal the configured ones (constant-time,
both compared). Postmark sends no event id; a stable one is derived from the record.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any

import msgspec

from providers.inbound.errors import InvalidSignature, MalformedPayload
from providers.inbound.timestamps import from_iso
from schemas.inbound_config import InboundConfig
from schemas.provider_events import (
    OUR_MESSAGE_ID_KEY,
    InboundResult,
    ProviderEvent,
    bounce_data,
    engagement_data,
    reason_data,
    stable_event_id,
)

PROVIDER = "postmark"

# Bounce record `Type`s (Postmark's bounce type table) and what each one means for us.
HARD_BOUNCES = frozenset({"HardBounce", "BadEmailAddress"})
SOFT_BOUNCES = frozenset({"SoftBounce", "DnsError", "Blocked", "Unknown", "DMARCPolicy"})
FAILURES = frozenset({"ManuallyDeactivated", "SMTPApiError", "TemplateRenderingFailed"})
DEFERRALS = frozenset({"Transient"})
# AutoResponder, AddressChange, Subscribe, ChallengeVerification, VirusNotification, … carry no
# delivery outcome and are ignored.


class PostmarkGeo(msgspec.Struct):
    ip: str | None = msgspec.field(name="IP", default=None)


class PostmarkRecord(msgspec.Struct, rename="pascal", kw_only=True):
    record_type: str
    message_id: str | None = msgspec.field(name="MessageID", default=None)
    recipient: str | None = None
    email: str | None = None
    type: str | None = None
    type_code: int | None = None
    details: str | None = None
    description: str | None = None
    delivered_at: str | None = None
    bounced_at: str | None = None
    received_at: str | None = None
    changed_at: str | None = None
    original_link: str | None = None
    user_agent: str | None = None
    geo: PostmarkGeo | None = None
    suppress_sending: bool | None = None
    suppression_reason: str | None = None
    metadata: dict[str, Any] = {}


_decoder = msgspec.json.Decoder(PostmarkRecord)


def decode(body: bytes) -> PostmarkRecord:
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise MalformedPayload(f"not a Postmark webhook record: {exc}") from None


def verify(headers: Mapping[str, str], *, config: InboundConfig) -> None:
    """`headers` keys are lower case."""
    if not config.postmark_user or not config.postmark_password:
        raise InvalidSignature("no Postmark credentials configured for this server")
    user, password = _basic_credentials(headers.get("authorization", ""))
    user_ok = hmac.compare_digest(user, config.postmark_user.encode())
    password_ok = hmac.compare_digest(password, config.postmark_password.encode())
    if not (user_ok and password_ok):
        raise InvalidSignature("wrong Postmark webhook credentials")


def _basic_credentials(header: str) -> tuple[bytes, bytes]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise InvalidSignature("missing HTTP Basic credentials")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise InvalidSignature("unreadable HTTP Basic credentials") from None
    user, separator, password = decoded.partition(b":")
    if not separator:
        raise InvalidSignature("unreadable HTTP Basic credentials")
    return user, password


def parse(headers: Mapping[str, str], body: bytes, *, config: InboundConfig) -> InboundResult:
    verify(headers, config=config)
    return InboundResult(events=normalise(decode(body)))


def normalise(record: PostmarkRecord) -> list[ProviderEvent]:
    mapped = _classify(record)
    if mapped is None:
        return []
    kind, data, when = mapped
    if when is None:
        raise MalformedPayload(f"Postmark {record.record_type} record without its timestamp")
    recipient = record.recipient or record.email
    hint = record.metadata.get(OUR_MESSAGE_ID_KEY)
    return [
        ProviderEvent(
            provider=PROVIDER,
            provider_message_id=record.message_id,
            recipient=recipient,
            provider_event_id=stable_event_id(record.record_type, record.message_id, recipient, when),
            our_message_id=hint if isinstance(hint, str) else None,
            type=kind,
            occurred_at=from_iso(when),
            data=data,
        )
    ]


def _classify(record: PostmarkRecord) -> tuple[Any, dict[str, Any], str | None] | None:
    ip = record.geo.ip if record.geo else None
    match record.record_type:
        case "Delivery":
            return "message.delivered", {}, record.delivered_at
        case "Bounce":
            return _classify_bounce(record)
        case "SpamComplaint":
            return "message.complained", {}, record.bounced_at
        case "Open":
            return "message.opened", engagement_data(record.user_agent, ip), record.received_at
        case "Click":
            data = engagement_data(record.user_agent, ip, record.original_link)
            return "message.clicked", data, record.received_at
        case "SubscriptionChange" if (
            record.suppress_sending and record.suppression_reason == "ManualSuppression"
        ):
            # HardBounce/SpamComplaint suppressions arrive as their own Bounce/SpamComplaint records.
            return "subscriber.unsubscribed", {}, record.changed_at
    return None


def _classify_bounce(record: PostmarkRecord) -> tuple[Any, dict[str, Any], str | None] | None:
    bounce_type, at = record.type or "", record.bounced_at
    diagnostic = record.details or record.description
    if bounce_type in HARD_BOUNCES:
        return "message.bounced", bounce_data("hard", bounce_type, diagnostic), at
    if bounce_type in SOFT_BOUNCES:
        return "message.bounced", bounce_data("soft", bounce_type, diagnostic), at
    if bounce_type in DEFERRALS:
        return "message.deferred", reason_data(diagnostic, bounce_type), at
    if bounce_type in FAILURES:
        return "message.failed", reason_data(diagnostic, bounce_type), at
    if bounce_type == "SpamComplaint":
        return "message.complained", {}, at
    if bounce_type == "Unsubscribe":
        return "subscriber.unsubscribed", {}, at
    return None
