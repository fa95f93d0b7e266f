"""Campaigns (MARKETING.md, "Campaigns"): the API bodies, the stored record and the answers.

The field names are the contract's. A campaign's configuration is one msgpack `CampaignRecord`; its
status, progress and live counters sit beside it in the same Redis hash (`store/campaigns.py`), so a
status change and the counters it implies commit together.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from schemas.send import AddressText, MetaKey, MetaValue, RoutingIn, Tag

CampaignStatus = Literal["draft", "scheduled", "sending", "paused", "sent", "cancelled", "failed"]
CAMPAIGN_STATUSES: tuple[str, ...] = CampaignStatus.__args__  # type: ignore[attr-defined]
FINISHED: tuple[str, ...] = ("sent", "cancelled", "failed")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = Weekday.__args__  # type: ignore[attr-defined]
Metric = Literal["opened_unique", "clicked_unique", "opened", "clicked", "delivered"]
RecipientStatus = Literal["failed"]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Subject = Annotated[str, msgspec.Meta(max_length=998)]
Body = Annotated[str, msgspec.Meta(max_length=512 * 1024)]
ClockTime = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
TimeZone = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
SourceId = Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
MAX_SOURCES = 50
Sources = Annotated[list[SourceId], msgspec.Meta(max_length=MAX_SOURCES)]
MAX_VARIANTS = 5


class CampaignTemplate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The template to render per recipient; `version` null: the newest at launch (then pinned)."""

    id: SourceId
    version: Annotated[int, msgspec.Meta(ge=1)] | None = None


class Audience(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    lists: Sources = []
    segments: Sources = []
    exclude_lists: Sources = []


class Window(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Send only on `days`, between `start` and `end` (local time of `timezone`, an IANA name)."""

    days: Annotated[list[Weekday], msgspec.Meta(min_length=1, max_length=7)] = msgspec.field(
        default_factory=lambda: list(WEEKDAYS)  # type: ignore[arg-type]  # WEEKDAYS is Weekday's args
    )
    start: ClockTime = "00:00"
    end: ClockTime = "23:59"
    timezone: TimeZone = "UTC"


class Rate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    per_second: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None


class CampaignTracking(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    opens: bool = True
    clicks: bool = True


class Variant(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """What differs in one A/B variant: each unset field is the campaign's own."""

    subject: Subject | None = None
    template: CampaignTemplate | None = None
    html: Body | None = None
    text: Body | None = None


class ABTest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    variants: Annotated[list[Variant], msgspec.Meta(min_length=2, max_length=MAX_VARIANTS)]
    test_fraction: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.2
    metric: Metric = "opened_unique"
    wait_minutes: Annotated[int, msgspec.Meta(ge=0, le=30 * 24 * 60)] = 60


class CreateCampaign(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Name
    from_: AddressText = msgspec.field(name="from")
    reply_to: AddressText | None = None
    subject: Subject | None = None
    template: CampaignTemplate | None = None
    html: Body | None = None
    text: Body | None = None
    audience: Audience = Audience()
    send_at: datetime | None = None
    window: Window | None = None
    rate: Rate = Rate()
    routing: RoutingIn = RoutingIn()
    tags: Annotated[list[Tag], msgspec.Meta(max_length=10)] = []
    metadata: Annotated[dict[MetaKey, MetaValue], msgspec.Meta(max_length=10)] = {}
    tracking: CampaignTracking = CampaignTracking()
    ab_test: ABTest | None = None


class UpdateCampaign(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A draft's changes: every field optional, `null` clears the nullable ones."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    from_: AddressText | msgspec.UnsetType = msgspec.field(name="from", default=msgspec.UNSET)
    reply_to: AddressText | None | msgspec.UnsetType = msgspec.UNSET
    subject: Subject | None | msgspec.UnsetType = msgspec.UNSET
    template: CampaignTemplate | None | msgspec.UnsetType = msgspec.UNSET
    html: Body | None | msgspec.UnsetType = msgspec.UNSET
    text: Body | None | msgspec.UnsetType = msgspec.UNSET
    audience: Audience | msgspec.UnsetType = msgspec.UNSET
    send_at: datetime | None | msgspec.UnsetType = msgspec.UNSET
    window: Window | None | msgspec.UnsetType = msgspec.UNSET
    rate: Rate | msgspec.UnsetType = msgspec.UNSET
    routing: RoutingIn | msgspec.UnsetType = msgspec.UNSET
    tags: Annotated[list[Tag], msgspec.Meta(max_length=10)] | msgspec.UnsetType = msgspec.UNSET
    metadata: Annotated[dict[MetaKey, MetaValue], msgspec.Meta(max_length=10)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    tracking: CampaignTracking | msgspec.UnsetType = msgspec.UNSET
    ab_test: ABTest | None | msgspec.UnsetType = msgspec.UNSET


EDITABLE_FIELDS: tuple[str, ...] = tuple(f for f in UpdateCampaign.__struct_fields__)


class CampaignRecord(msgspec.Struct, kw_only=True):
    """The configuration as stored (the `r` field of the campaign's hash). Status and progress are not
    here: they change while the campaign runs, in their own fields of the same hash."""

    id: str
    workspace: str
    name: str
    from_: str = msgspec.field(name="from")
    reply_to: str | None = None
    subject: str | None = None
    template: CampaignTemplate | None = None
    html: str | None = None
    text: str | None = None
    audience: Audience = Audience()
    send_at: datetime | None = None
    window: Window | None = None
    rate: Rate = Rate()
    routing: RoutingIn = RoutingIn()
    tags: list[str] = []
    metadata: dict[str, str] = {}
    tracking: CampaignTracking = CampaignTracking()
    ab_test: ABTest | None = None
    created_at: datetime
    updated_at: datetime
    # Set at launch: the lists whose subscribed members may get this campaign (its lists and its
    # segments' lists), the template versions pinned, and the API key that launched it.
    eligible_lists: list[str] = []
    launched_by: str | None = None


record_encoder = msgspec.msgpack.Encoder()
record_decoder = msgspec.msgpack.Decoder(CampaignRecord)


class Counters(msgspec.Struct, kw_only=True):
    audience: int = 0
    queued: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    suppressed: int = 0
    remaining: int = 0


class Progress(msgspec.Struct, kw_only=True):
    """Where the runner is: `phase` resolving → sending (→ waiting_for_winner → sending) → settling;
    `waiting` says why nothing is being sent right now (null while it sends)."""

    phase: str | None = None
    waiting: str | None = None
    winner: int | None = None
    # Why the campaign is `failed`: `template_deleted` (its pinned template is gone) or
    # `all_recipients_failed` (no message was sent and some recipients failed); null otherwise.
    failure: str | None = None


class Campaign(msgspec.Struct, kw_only=True):
    id: str
    name: str
    status: CampaignStatus
    from_: str = msgspec.field(name="from")
    reply_to: str | None
    subject: str | None
    template: CampaignTemplate | None
    html: str | None
    text: str | None
    audience: Audience
    send_at: datetime | None
    window: Window | None
    rate: Rate
    routing: RoutingIn
    tags: list[str]
    metadata: dict[str, str]
    tracking: CampaignTracking
    ab_test: ABTest | None
    counters: Counters
    progress: Progress
    created_at: datetime
    updated_at: datetime
    launched_at: datetime | None
    completed_at: datetime | None
    object: str = "campaign"


class CampaignList(msgspec.Struct, kw_only=True):
    data: list[Campaign]
    has_more: bool
    next_cursor: str | None
    object: str = "list"


class RecipientsQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    status: RecipientStatus = "failed"
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    cursor: str | None = None


class FailedRecipient(msgspec.Struct, kw_only=True):
    """One recipient the campaign could not deliver: the reason, and the message if one was made."""

    subscriber: str
    email: str
    status: str
    reason: str
    code: str
    message_id: str | None = None
    failed_at: datetime
    object: str = "campaign_recipient"


failure_encoder = msgspec.msgpack.Encoder()


class FailureRecord(msgspec.Struct, array_like=True, kw_only=True):
    email: str
    code: str
    reason: str
    message_id: str | None
    at_ms: int


failure_decoder = msgspec.msgpack.Decoder(FailureRecord)


class RecipientList(msgspec.Struct, kw_only=True):
    data: list[FailedRecipient]
    has_more: bool
    next_cursor: str | None
    object: str = "list"


class RetryAccepted(msgspec.Struct, kw_only=True):
    id: str
    retrying: int
    status: CampaignStatus
    object: str = "campaign"
