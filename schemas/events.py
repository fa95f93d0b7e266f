"""The one normalised event schema every provider's events are turned into (API.md, "Events")."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

import msgspec

EventType = Literal[
    "message.accepted",
    "message.scheduled",
    "message.sent",
    "message.delivered",
    "message.deferred",
    "message.bounced",
    "message.complained",
    "message.opened",
    "message.clicked",
    "message.failed",
    "message.suppressed",
    "message.canceled",
    "subscriber.unsubscribed",
    "automation.triggered",
    "automation.step_completed",
    "automation.run_ended",
    "campaign.launched",
    "campaign.completed",
    "webhook.endpoint_disabled",
    "campaign.paused",
]

EVENT_TYPES: tuple[str, ...] = get_args(EventType)

ProviderName = Literal["amazon-ses", "mailgun", "sendgrid", "resend", "postmark", "smtp", "sandbox"]


class EventMessage(msgspec.Struct, kw_only=True, omit_defaults=False):
    id: str
    to: str
    from_: str = msgspec.field(name="from", default="")
    provider: str | None = None
    server: str | None = None
    tags: list[str] = []
    metadata: dict[str, str] = {}
    campaign_id: str | None = None


class Event(msgspec.Struct, kw_only=True):
    id: str
    type: str
    created_at: datetime
    workspace: str
    message: EventMessage | None = None
    data: dict[str, Any] = {}


event_encoder = msgspec.json.Encoder()
event_decoder = msgspec.json.Decoder(Event)
event_msgpack_encoder = msgspec.msgpack.Encoder()
event_msgpack_decoder = msgspec.msgpack.Decoder(Event)
events_msgpack_decoder = msgspec.msgpack.Decoder(list[Event])
