"""`GET /v1/campaigns/:id/report`: the answer, as it appears in OpenAPI (docs/campaigns.md, "Report").

Every section carries the same counters and rates (`Counters`); rows add their key. The numbers come
from the analytics store (analytics/campaign_report.py), computed the same way on DuckDB and ClickHouse.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

Count = Annotated[int, msgspec.Meta(ge=0)]
Rate = Annotated[float, msgspec.Meta(ge=0)]


class Counters(msgspec.Struct, kw_only=True):
    """Event counts of the campaign and the rates derived from them; a rate is 0 when its
    denominator is 0. Unique counts are distinct (message, recipient) pairs with at least one open or
    click that tracking did not flag as a machine's (Apple Mail Privacy Protection, image proxies,
    scanners); `opened` and `clicked` count every open and click event, machines' included. A row
    (domain, provider, variant, timeline bucket) counts a pair where its *first* such open / click is
    (earliest by time, then event id; within the window when one is given), so the rows' unique counts
    add up to the totals."""

    sent: Count = 0
    delivered: Count = 0
    bounced: Count = 0
    complained: Count = 0
    opened: Count = 0
    opened_unique: Count = 0
    clicked: Count = 0
    clicked_unique: Count = 0
    unsubscribed: Count = 0
    failed: Count = 0
    suppressed: Count = 0
    delivery_rate: Annotated[Rate, msgspec.Meta(description="delivered / sent")] = 0.0
    bounce_rate: Annotated[Rate, msgspec.Meta(description="bounced / sent")] = 0.0
    complaint_rate: Annotated[Rate, msgspec.Meta(description="complained / delivered")] = 0.0
    open_rate: Annotated[Rate, msgspec.Meta(description="opened_unique / delivered")] = 0.0
    click_rate: Annotated[Rate, msgspec.Meta(description="clicked_unique / delivered")] = 0.0
    click_to_open_rate: Annotated[Rate, msgspec.Meta(description="clicked_unique / opened_unique")] = 0.0
    unsubscribe_rate: Annotated[Rate, msgspec.Meta(description="unsubscribed / delivered")] = 0.0


COUNTS: tuple[str, ...] = (
    "sent",
    "delivered",
    "bounced",
    "complained",
    "opened",
    "opened_unique",
    "clicked",
    "clicked_unique",
    "unsubscribed",
    "failed",
    "suppressed",
)
# rate -> (numerator, denominator)
RATES: dict[str, tuple[str, str]] = {
    "delivery_rate": ("delivered", "sent"),
    "bounce_rate": ("bounced", "sent"),
    "complaint_rate": ("complained", "delivered"),
    "open_rate": ("opened_unique", "delivered"),
    "click_rate": ("clicked_unique", "delivered"),
    "click_to_open_rate": ("clicked_unique", "opened_unique"),
    "unsubscribe_rate": ("unsubscribed", "delivered"),
}
METRICS: tuple[str, ...] = COUNTS + tuple(RATES)


class LinkStats(msgspec.Struct, kw_only=True):
    """One tracked link: every click event on it, and the distinct recipients who clicked it (machines'
    clicks left out)."""

    url: str
    clicks: Count
    clicked_unique: Count


class DomainStats(Counters, kw_only=True):
    """The campaign's events to one recipient domain (lower case); null for events without one."""

    domain: str | None


class ProviderStats(Counters, kw_only=True):
    """The campaign's events per sending server and its provider; both null for events of messages no
    server took (suppressed before dispatch, failed without a candidate)."""

    provider: str | None
    server: str | None


class VariantStats(Counters, kw_only=True):
    """One A/B variant (`metadata.campaign_variant` of its messages: "0", "1", ...)."""

    variant: str


class TimelineBucket(Counters, kw_only=True):
    """The events whose time falls in `[start, start + timeline_bucket_seconds)`. `opened_unique` and
    `clicked_unique` count the pairs whose first non-machine open / click falls in the bucket (a
    deliberate definition: the timeline's unique counts add up to the totals; docs/campaigns.md)."""

    start: datetime


class CampaignReport(msgspec.Struct, kw_only=True):
    campaign_id: str
    from_: datetime | None = msgspec.field(name="from", default=None)
    to: datetime | None = None
    totals: Counters
    links: list[LinkStats]
    domains: list[DomainStats]
    domains_truncated: bool = False
    providers: list[ProviderStats]
    variants: list[VariantStats]
    timeline_bucket_seconds: Annotated[
        int | None, msgspec.Meta(description="width of every timeline bucket; null when there are none")
    ] = None
    timeline: list[TimelineBucket]
