"""Resend webhooks, delivered and signed by Svix.

Verified: one of the space-separated `v1,<base64>` entries of `svix-signature` equals
base64(HMAC-SHA256(base64decode(secret minus `whsec_`), "{svix-id}.{svix-timestamp}.{body}"));
`svix-timestamp` is within the tolerance. `svix-id` is stable across Svix's retries, so it is the
event id (deduped downstream), never a replay token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import msgspec

from providers.inbound.errors import InvalidSignature, MalformedPayload
from providers.inbound.timestamps import from_iso, require_fresh, signed_seconds
from schemas.inbound_config import InboundConfig
from schemas.provider_events import (
    OUR_MESSAGE_ID_KEY,
    InboundResult,
    ProviderEvent,
    bounce_data,
    engagement_data,
    fan_out_ids,
    reason_data,
)

PROVIDER = "resend"
SECRET_PREFIX = "whsec_"


class ResendBounce(msgspec.Struct, rename="camel"):
    message: str | None = None
    type: str | None = None
    sub_type: str | None = None


class ResendEngagement(msgspec.Struct, rename="camel"):
    ip_address: str | None = None
    user_agent: str | None = None
    link: str | None = None


class ResendFailure(msgspec.Struct):
    reason: str | None = None


class ResendTag(msgspec.Struct):
    name: str
    value: str


class ResendData(msgspec.Struct, kw_only=True):
    email_id: str
    to: list[str] = []
    bounce: ResendBounce | None = None
    click: ResendEngagement | None = None
    open: ResendEngagement | None = None
    failed: ResendFailure | None = None
    tags: dict[str, str] | list[ResendTag] = {}


class ResendWebhook(msgspec.Struct):
    type: str
    created_at: str
    data: ResendData


_decoder = msgspec.json.Decoder(ResendWebhook)


def decode(body: bytes) -> ResendWebhook:
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise MalformedPayload(f"not a Resend webhook: {exc}") from None


def verify(headers: Mapping[str, str], body: bytes, *, config: InboundConfig, now: float) -> str:
    """Checks the Svix signature (`headers` keys lower case); returns the svix-id."""
    if not config.resend_secret:
        raise InvalidSignature("no Resend signing secret configured for this server")
    svix_id, timestamp = headers.get("svix-id"), headers.get("svix-timestamp")
    if not svix_id:
        raise InvalidSignature("missing svix-id")
    signed_at = signed_seconds(timestamp)
    expected = base64.b64encode(_mac(config.resend_secret, f"{svix_id}.{timestamp}.".encode() + body))
    offered = [
        value
        for version, _, value in (entry.partition(",") for entry in headers.get("svix-signature", "").split())
        if version == "v1"
    ]
    if not any(hmac.compare_digest(expected, candidate.encode()) for candidate in offered):
        raise InvalidSignature("Svix signature does not verify")
    require_fresh(signed_at, now=now, tolerance=config.timestamp_tolerance)
    return svix_id


def _mac(secret: str, content: bytes) -> bytes:
    try:
        encoded = secret.removeprefix(SECRET_PREFIX)
        # Svix secrets are sometimes shown without base64 padding.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise InvalidSignature("configured Resend secret is not base64") from None
    return hmac.new(key, content, hashlib.sha256).digest()


def parse(headers: Mapping[str, str], body: bytes, *, config: InboundConfig, now: float) -> InboundResult:
    svix_id = verify(headers, body, config=config, now=now)
    return InboundResult(events=normalise(decode(body), svix_id))


def normalise(webhook: ResendWebhook, svix_id: str) -> list[ProviderEvent]:
    mapped = _classify(webhook)
    if mapped is None:
        return []
    kind, data, per_recipient = mapped
    recipients = webhook.data.to if per_recipient else [_sole_recipient(webhook.data.to)]
    at, hint = from_iso(webhook.created_at), _our_message_id(webhook.data.tags)
    return [
        ProviderEvent(
            provider=PROVIDER,
            provider_event_id=event_id,
            provider_message_id=webhook.data.email_id,
            our_message_id=hint,
            type=kind,
            recipient=recipient,
            occurred_at=at,
            data=data,
        )
        for event_id, recipient in zip(fan_out_ids(svix_id, len(recipients)), recipients, strict=True)
    ]


def _classify(webhook: ResendWebhook) -> tuple[Any, dict[str, Any], bool] | None:
    """(our type, data, whether the event applies to each recipient in `to`)."""
    data = webhook.data
    match webhook.type:
        case "email.sent":
            return "message.sent", {}, True
        case "email.delivered":
            return "message.delivered", {}, True
        case "email.delivery_delayed":
            return "message.deferred", reason_data(None), True
        case "email.bounced":
            bounce = data.bounce or ResendBounce()
            return "message.bounced", bounce_data("hard", bounce.sub_type, bounce.message), True
        case "email.complained":
            return "message.complained", {}, True
        case "email.failed":
            return "message.failed", reason_data(data.failed.reason if data.failed else None), True
        case "email.opened":
            opened = data.open or ResendEngagement()
            return "message.opened", engagement_data(opened.user_agent, opened.ip_address), False
        case "email.clicked":
            click = data.click or ResendEngagement()
            return "message.clicked", engagement_data(click.user_agent, click.ip_address, click.link), False
    return None


def _sole_recipient(to: list[str]) -> str | None:
    return to[0] if len(to) == 1 else None


def _our_message_id(tags: dict[str, str] | list[ResendTag]) -> str | None:
    if isinstance(tags, dict):
        return tags.get(OUR_MESSAGE_ID_KEY)
    return next((tag.value for tag in tags if tag.name == OUR_MESSAGE_ID_KEY), None)
