"""Mailgun event webhooks: `{"signature": {...}, "event-data": {...}}`, one event per request.

Verified: hex HMAC-SHA256(webhook signing key, timestamp + token) equals `signature.signature`;
the timestamp is within the tolerance; the token was never used before (consumed only after the
HMAC checked out, so a forged request cannot burn a genuine token).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import msgspec

from providers.inbound.errors import InvalidSignature, MalformedPayload
from providers.inbound.replay import ReplayGuard, claim_once
from providers.inbound.timestamps import from_epoch, require_fresh, signed_seconds
from schemas.inbound_config import InboundConfig
from schemas.provider_events import (
    OUR_MESSAGE_ID_KEY,
    InboundResult,
    ProviderEvent,
    bounce_data,
    engagement_data,
    reason_data,
)

PROVIDER = "mailgun"


class MailgunSignature(msgspec.Struct):
    timestamp: str
    token: str
    signature: str


class MailgunHeaders(msgspec.Struct, rename="kebab"):
    message_id: str | None = None


class MailgunMessage(msgspec.Struct):
    headers: MailgunHeaders = msgspec.field(default_factory=MailgunHeaders)


class MailgunDeliveryStatus(msgspec.Struct):
    code: int | str | None = None
    message: str | None = None
    description: str | None = None


class MailgunClientInfo(msgspec.Struct, rename="kebab"):
    user_agent: str | None = None


class MailgunEventData(msgspec.Struct, rename="kebab", kw_only=True):
    event: str
    id: str
    timestamp: float
    recipient: str | None = None
    severity: str | None = None
    reason: str | None = None
    url: str | None = None
    ip: str | None = None
    message: MailgunMessage = msgspec.field(default_factory=MailgunMessage)
    delivery_status: MailgunDeliveryStatus = msgspec.field(default_factory=MailgunDeliveryStatus)
    client_info: MailgunClientInfo = msgspec.field(default_factory=MailgunClientInfo)
    user_variables: dict[str, Any] = {}


class MailgunWebhook(msgspec.Struct, rename="kebab"):
    signature: MailgunSignature
    event_data: MailgunEventData


_decoder = msgspec.json.Decoder(MailgunWebhook)


def decode(body: bytes) -> MailgunWebhook:
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise MalformedPayload(f"not a Mailgun webhook: {exc}") from None


def check_signature(
    signature: MailgunSignature, *, signing_key: str | None, now: float, tolerance: float
) -> None:
    """The pure part of verification: HMAC and freshness (no token bookkeeping)."""
    if not signing_key:
        raise InvalidSignature("no Mailgun signing key configured for this server")
    signed = (signature.timestamp + signature.token).encode()
    expected = hmac.new(signing_key.encode(), signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.signature.encode()):
        raise InvalidSignature("Mailgun signature does not verify")
    require_fresh(signed_seconds(signature.timestamp), now=now, tolerance=tolerance)


async def verify(
    signature: MailgunSignature,
    *,
    config: InboundConfig,
    server_id: str,
    now: float,
    replay_guard: ReplayGuard | None,
) -> None:
    tolerance = config.timestamp_tolerance
    check_signature(signature, signing_key=config.mailgun_signing_key, now=now, tolerance=tolerance)
    await claim_once(replay_guard, PROVIDER, server_id, signature.token, tolerance)


async def parse(
    body: bytes, *, config: InboundConfig, server_id: str, now: float, replay_guard: ReplayGuard | None
) -> InboundResult:
    webhook = decode(body)
    await verify(webhook.signature, config=config, server_id=server_id, now=now, replay_guard=replay_guard)
    return InboundResult(events=normalise(webhook))


def normalise(webhook: MailgunWebhook) -> list[ProviderEvent]:
    data = webhook.event_data
    mapped = _classify(data)
    if mapped is None:
        return []
    kind, details = mapped
    hint = data.user_variables.get(OUR_MESSAGE_ID_KEY)
    return [
        ProviderEvent(
            provider=PROVIDER,
            provider_event_id=data.id,
            provider_message_id=_message_id(data),
            our_message_id=hint if isinstance(hint, str) else None,
            type=kind,
            recipient=data.recipient,
            occurred_at=from_epoch(data.timestamp),
            data=details,
        )
    ]


def _classify(data: MailgunEventData) -> tuple[Any, dict[str, Any]] | None:
    status = data.delivery_status
    diagnostic = status.description or status.message or data.reason
    match data.event:
        case "accepted":
            return "message.sent", {}
        case "delivered":
            return "message.delivered", {}
        case "failed" if data.severity == "temporary":
            return "message.deferred", reason_data(diagnostic, status.code)
        case "failed":
            return "message.bounced", bounce_data("hard", status.code, diagnostic)
        case "rejected":
            return "message.failed", reason_data(data.reason or diagnostic)
        case "opened":
            return "message.opened", engagement_data(data.client_info.user_agent, data.ip)
        case "clicked":
            return "message.clicked", engagement_data(data.client_info.user_agent, data.ip, data.url)
        case "unsubscribed":
            return "subscriber.unsubscribed", {}
        case "complained":
            return "message.complained", {}
    return None


def _message_id(data: MailgunEventData) -> str | None:
    # The send API answers `<id@domain>`; event headers carry the bare `id@domain`. Keep the bare form.
    raw = data.message.headers.message_id
    return raw.strip().strip("<>") if raw else None
