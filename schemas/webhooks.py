"""Outbound webhooks: endpoint records, delivery views, API bodies and event-type filters."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from schemas.events import EVENT_TYPES

EventFilter = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
WebhookUrl = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
Description = Annotated[str, msgspec.Meta(max_length=500)]
DeliveryStatus = Literal["pending", "delivered", "dead"]
EVENT_CATEGORIES = frozenset(t.partition(".")[0] for t in EVENT_TYPES)


def invalid_filter(pattern: str) -> str | None:
    """Why `pattern` is not a valid filter (`*`, `category.*` or an exact event type), or None."""
    if pattern == "*" or pattern in EVENT_TYPES:
        return None
    category, dot, rest = pattern.partition(".")
    if dot and rest == "*" and category in EVENT_CATEGORIES:
        return None
    return f"{pattern!r} is not an event type, `*` or one of {sorted(c + '.*' for c in EVENT_CATEGORIES)}"


def filter_matches(patterns: list[str], event_type: str) -> bool:
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


class WebhookRecord(msgspec.Struct, kw_only=True):
    """What Redis holds for one endpoint. The secrets are sealed (SecretBox, purpose webhook-secret)."""

    id: str
    workspace: str
    url: str
    events: list[str]
    enabled: bool = True
    description: str = ""
    sealed_secret: str
    sealed_previous_secret: str | None = None
    previous_secret_until: datetime | None = None
    created_at: datetime
    updated_at: datetime
    disabled_reason: str | None = None
    disabled_at: datetime | None = None


class CreateWebhook(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: WebhookUrl
    events: Annotated[list[EventFilter], msgspec.Meta(min_length=1, max_length=50)]
    enabled: bool = True
    description: Description = ""


class UpdateWebhook(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: WebhookUrl | msgspec.UnsetType = msgspec.UNSET
    events: Annotated[list[EventFilter], msgspec.Meta(min_length=1, max_length=50)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET


class Webhook(msgspec.Struct, kw_only=True):
    id: str
    url: str
    events: list[str]
    enabled: bool
    description: str
    created_at: datetime
    updated_at: datetime
    disabled_reason: str | None
    disabled_at: datetime | None
    previous_secret_until: datetime | None
    object: str = "webhook"


class WebhookWithSecret(Webhook, kw_only=True):
    secret: str


class WebhookList(msgspec.Struct, kw_only=True):
    data: list[Webhook]
    has_more: bool
    next_cursor: str | None
    object: str = "list"


class DeletedWebhook(msgspec.Struct, kw_only=True):
    id: str
    deleted: bool = True
    object: str = "webhook"


class DeliveryAttempt(msgspec.Struct, kw_only=True):
    """One HTTP attempt. `status_code` is None when no answer came (timeout, refused, forbidden URL)."""

    at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None = None


class Delivery(msgspec.Struct, kw_only=True):
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    message_id: str | None
    status: DeliveryStatus
    created_at: datetime
    next_attempt_at: datetime | None
    attempts: list[DeliveryAttempt]
    object: str = "webhook_delivery"


class DeliveryList(msgspec.Struct, kw_only=True):
    data: list[Delivery]
    has_more: bool
    next_cursor: str | None
    object: str = "list"


class ReplayWindow(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    from_: datetime = msgspec.field(name="from")
    to: datetime


class ReplayResult(msgspec.Struct, kw_only=True):
    endpoint_id: str
    replayed: int
    object: str = "webhook_replay"


webhook_record_encoder = msgspec.msgpack.Encoder()
webhook_record_decoder = msgspec.msgpack.Decoder(WebhookRecord)
attempt_encoder = msgspec.msgpack.Encoder()
attempt_decoder = msgspec.msgpack.Decoder(DeliveryAttempt)
