"""`/v1/send`, `/v1/send/bulk` and `/v1/messages` bodies (API.md, "Sending")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
MetaKey = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
MetaValue = Annotated[str, msgspec.Meta(max_length=500)]
IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[\x20-\x7e]+$")]
AddressText = Annotated[str, msgspec.Meta(min_length=3, max_length=998)]
# Bounds on every repeated or free-size field, so no body can make validation or MIME building
# arbitrarily expensive (issue #11); they show in /v1/openapi.json.
MAX_REPLY_TO = 10
MAX_HEADERS = 50
HeaderName = Annotated[str, msgspec.Meta(min_length=1, max_length=76)]
HeaderValue = Annotated[str, msgspec.Meta(max_length=998)]
MessageStatus = Literal[
    "scheduled",
    "queued",
    "sent",
    "delivered",
    "deferred",
    "bounced",
    "complained",
    "failed",
    "suppressed",
    "canceled",
]


# A recipient's template variables stay raw JSON until the render checks their size and decodes them
# (ingress/templating.template_variables): decoded with the body as `dict[str, Any]`, 9 MB of
# `[[],[],...]` had cost the ingress loop seconds (three million lists; issue #11).
MAX_TEMPLATE_VARIABLES_BYTES = 64 * 1024
TemplateVariables = Annotated[
    msgspec.Raw,
    msgspec.Meta(
        extra_json_schema={
            "type": "object",
            "description": "The template's variables: a JSON object of at most "
            f"{MAX_TEMPLATE_VARIABLES_BYTES:,} bytes (422 `variables_too_large`)",
        }
    ),
]


def no_variables() -> msgspec.Raw:
    return msgspec.Raw(b"{}")


class TemplateRef(msgspec.Struct, forbid_unknown_fields=True):
    """Send with a stored template: rendered at accept time; `version` pins one (default: the newest)."""

    id: str
    variables: TemplateVariables = msgspec.field(default_factory=no_variables)
    version: Annotated[int, msgspec.Meta(ge=1)] | None = None


class AttachmentIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    filename: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    content: str
    content_type: Annotated[str, msgspec.Meta(pattern=r"^[\w.+-]+/[\w.+-]+$")] = "application/octet-stream"
    content_id: Annotated[str, msgspec.Meta(max_length=255)] | None = None


class RoutingIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    purpose: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    server: str | None = None


class TrackingIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    opens: bool = False
    clicks: bool = False


class SendRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    from_: AddressText = msgspec.field(name="from")
    to: AddressText | Annotated[list[AddressText], msgspec.Meta(max_length=50)]
    cc: Annotated[list[AddressText], msgspec.Meta(max_length=50)] = []
    bcc: Annotated[list[AddressText], msgspec.Meta(max_length=50)] = []
    reply_to: AddressText | Annotated[list[AddressText], msgspec.Meta(max_length=MAX_REPLY_TO)] | None = None
    subject: Annotated[str, msgspec.Meta(max_length=998)] = ""
    html: str | None = None
    text: str | None = None
    template: TemplateRef | None = None
    headers: Annotated[dict[HeaderName, HeaderValue], msgspec.Meta(max_length=MAX_HEADERS)] = {}
    attachments: Annotated[list[AttachmentIn], msgspec.Meta(max_length=100)] = []
    tags: Annotated[list[Tag], msgspec.Meta(max_length=10)] = []
    metadata: Annotated[dict[MetaKey, MetaValue], msgspec.Meta(max_length=20)] = {}
    routing: RoutingIn = RoutingIn()
    tracking: TrackingIn = TrackingIn()
    unsubscribe: bool = False
    send_at: datetime | None = None
    idempotency_key: IdempotencyKey | None = None


class BulkEnvelope(msgspec.Struct, forbid_unknown_fields=True):
    """Items stay raw so each one is validated on its own and errors point into `#/messages/<i>`."""

    messages: list[msgspec.Raw]
    validation: Literal["strict", "permissive"] = "strict"


class SendAccepted(msgspec.Struct, kw_only=True):
    id: str
    status: MessageStatus
    created_at: datetime
    object: str = "message"


class BulkItem(msgspec.Struct, kw_only=True, omit_defaults=True):
    index: int
    id: str | None = None
    status: MessageStatus | None = None
    error: dict[str, Any] | None = None


class BulkAccepted(msgspec.Struct, kw_only=True):
    data: list[BulkItem]
    accepted: int
    rejected: int
    object: str = "list"


class MessageEvent(msgspec.Struct, kw_only=True):
    id: str
    type: str
    created_at: datetime
    data: dict[str, Any] = {}


class MessageView(msgspec.Struct, kw_only=True):
    id: str
    status: MessageStatus
    created_at: datetime
    from_: str = msgspec.field(name="from")
    to: list[str]
    subject: str
    tags: list[str]
    metadata: dict[str, str]
    server: str | None
    provider: str | None
    provider_message_id: str | None
    attempts: int
    send_at: datetime | None
    campaign_id: str | None
    events: list[MessageEvent]
    object: str = "message"


class MessageListQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    cursor: str | None = None
    status: MessageStatus | None = None
    tag: str | None = None
    campaign_id: str | None = None
    to: str | None = None
    from_: datetime | None = msgspec.field(name="from", default=None)
    until: datetime | None = None


class MessageSummary(msgspec.Struct, kw_only=True):
    id: str
    status: MessageStatus
    created_at: datetime
    to: list[str]
    subject: str
    tags: list[str]
    server: str | None
    object: str = "message"


class MessageList(msgspec.Struct, kw_only=True):
    data: list[MessageSummary]
    has_more: bool
    next_cursor: str | None
    object: str = "list"
