"""A hand-built day of events, with the numbers worked out by hand, on both backends."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from analytics.metrics import Metrics
from analytics.queries import CampaignReportQuery, EventsQuery, SummaryQuery
from schemas.campaign_report import COUNTS
from tests.analytics.events_factory import NOW, at, event

A = dict(
    message_id="msg_a",
    to="ana@example.com",
    provider="smtp",
    server="srv_1",
    tags=["welcome"],
    campaign_id="cmp_1",
)
B = dict(
    message_id="msg_b",
    to="bo@Example.org",
    provider="amazon-ses",
    server="srv_2",
    tags=["welcome", "promo"],
    campaign_id="cmp_1",
)
C = dict(message_id="msg_c", to="cy@example.com", provider="amazon-ses", server="srv_2")
D = dict(message_id="msg_d", to="di@gmail.com", provider=None, server=None)
E = dict(message_id="msg_e", to="ed@example.com", provider="smtp", server="srv_1")
FA = dict(message_id="msg_f", to="fa@x.com", provider="smtp", server="srv_1", tags=["promo"])
FB = dict(FA, to="fb@x.com")


def day_of_events():
    return [
        event("message.accepted", at("09:09"), **A),
        event("message.sent", at("09:10"), **A),
        event("message.delivered", at("09:12"), **A),
        event("message.opened", at("10:05"), **A),
        event("message.opened", at("10:30"), **A),
        event("message.clicked", at("10:31"), url="https://acme.com/a", **A),
        event("message.clicked", at("11:00"), url="https://acme.com/b", **A),
        event("subscriber.unsubscribed", at("11:45"), **A),
        event("message.sent", at("09:20"), **B),
        event("message.delivered", at("09:25"), **B),
        event("message.bounced", at("09:40"), bounce={"type": "soft", "code": "452"}, **B),  # after delivery
        event("message.complained", at("11:30"), **B),
        event("message.sent", at("09:30"), **C),
        event("message.bounced", at("09:31"), bounce={"type": "hard", "code": "550"}, **C),
        event("message.suppressed", at("09:00"), **D),
        event("message.failed", at("10:00"), **E),
        event("message.sent", at("09:05"), **FA),
        event("message.sent", at("09:05"), **FB),
        event("message.delivered", at("09:06"), **FA),
        event("message.delivered", at("09:06"), **FB),
        event("message.opened", at("10:10"), **FA),
        event("message.opened", at("10:20"), **FB),
        event("message.opened", at("11:10"), **FB),
        # outside the window, another workspace: never counted below
        event("message.sent", at("09:10") - timedelta(days=1), **A),
        event("message.sent", at("09:10"), workspace="other", **A),
    ]


WINDOW = {"from_": at("09:00"), "to": at("12:00")}


def metrics(**counts) -> Metrics:
    m = Metrics(**counts)
    for rate, (part, whole) in {
        "delivery_rate": ("delivered", "sent"),
        "bounce_rate": ("bounced", "sent"),
        "complaint_rate": ("complained", "delivered"),
        "open_rate": ("opened_unique", "delivered"),
        "click_rate": ("clicked_unique", "delivered"),
    }.items():
        whole_value = getattr(m, whole)
        setattr(m, rate, getattr(m, part) / whole_value if whole_value else 0.0)
    return m


TOTALS = metrics(
    sent=5,
    delivered=4,
    bounced=2,
    bounced_hard=1,
    bounced_soft=1,
    complained=1,
    opened=5,
    opened_unique=3,
    clicked=2,
    clicked_unique=1,
    unsubscribed=1,
    suppressed=1,
    failed=1,
)
HOURS = [
    metrics(sent=5, delivered=4, bounced=2, bounced_hard=1, bounced_soft=1, suppressed=1),
    metrics(opened=4, opened_unique=3, clicked=1, clicked_unique=1, failed=1),
    metrics(opened=1, opened_unique=1, clicked=1, clicked_unique=1, complained=1, unsubscribed=1),
]


@pytest.fixture
async def loaded(store):
    events = day_of_events()
    await store.insert(events)
    await store.insert(events[3:9])  # a replayed part of the stream
    return store


async def test_summary_totals_and_hourly_buckets(loaded):
    summary = await loaded.summary("acme", SummaryQuery(interval="hour", **WINDOW), now=NOW)
    assert summary.totals == TOTALS
    assert TOTALS.delivery_rate == 0.8 and TOTALS.open_rate == 0.75 and TOTALS.complaint_rate == 0.25
    assert [b.start for b in summary.buckets] == [at("09:00"), at("10:00"), at("11:00")]
    assert [b.metrics for b in summary.buckets] == HOURS
    assert summary.groups is None


async def test_summary_by_tag_counts_untagged_as_null_and_keeps_uniques_per_group(loaded):
    summary = await loaded.summary("acme", SummaryQuery(group_by="tag", interval="day", **WINDOW), now=NOW)
    assert [g.key for g in summary.groups] == ["promo", "welcome", None]
    promo, welcome, untagged = (g.totals for g in summary.groups)
    assert promo == metrics(
        sent=3, delivered=3, bounced=1, bounced_soft=1, complained=1, opened=3, opened_unique=2
    )
    assert welcome == metrics(
        sent=2,
        delivered=2,
        bounced=1,
        bounced_soft=1,
        complained=1,
        opened=2,
        opened_unique=1,
        clicked=2,
        clicked_unique=1,
        unsubscribed=1,
    )
    assert untagged == metrics(sent=1, bounced=1, bounced_hard=1, suppressed=1, failed=1)
    assert [len(g.buckets) for g in summary.groups] == [1, 1, 1]
    assert summary.groups[0].buckets[0].metrics == promo


async def test_summary_by_provider_and_filters(loaded):
    summary = await loaded.summary("acme", SummaryQuery(group_by="provider", **WINDOW), now=NOW)
    by_key = {g.key: g.totals for g in summary.groups}
    assert set(by_key) == {"smtp", "amazon-ses", None}
    assert by_key["smtp"].sent == 3 and by_key["smtp"].failed == 1 and by_key["smtp"].opened_unique == 3
    assert by_key[None] == metrics(suppressed=1)
    filtered = await loaded.summary("acme", SummaryQuery(recipient_domain="EXAMPLE.ORG", **WINDOW), now=NOW)
    assert filtered.totals == metrics(sent=1, delivered=1, bounced=1, bounced_soft=1, complained=1)


async def test_empty_window_answers_zeros_in_every_bucket(loaded):
    summary = await loaded.summary(
        "acme",
        SummaryQuery(interval="hour", from_=NOW - timedelta(days=9), to=NOW - timedelta(days=8)),
        now=NOW,
    )
    assert summary.totals == Metrics()
    assert len(summary.buckets) == 24 and all(b.metrics == Metrics() for b in summary.buckets)


async def test_campaign_report(loaded):
    report = await loaded.campaign_report("acme", "cmp_1", now=NOW)
    # the whole history: yesterday's send of msg_a counts too
    totals = report.totals
    assert {name: getattr(totals, name) for name in COUNTS} == dict(
        sent=3,
        delivered=2,
        bounced=1,
        complained=1,
        opened=2,
        opened_unique=1,
        clicked=2,
        clicked_unique=1,
        unsubscribed=1,
        failed=0,
        suppressed=0,
    )
    assert [(link.url, link.clicks, link.clicked_unique) for link in report.links] == [
        ("https://acme.com/a", 1, 1),
        ("https://acme.com/b", 1, 1),
    ]
    assert [(d.domain, d.sent) for d in report.domains] == [("example.com", 2), ("example.org", 1)]
    assert [(p.provider, p.complained) for p in report.providers] == [("smtp", 0), ("amazon-ses", 1)]
    windowed = await loaded.campaign_report("acme", "cmp_1", CampaignReportQuery(**WINDOW), now=NOW)
    assert windowed.totals.sent == 2 and windowed.from_ == at("09:00")


async def test_message_timeline_in_order(loaded):
    timeline = await loaded.message_events("acme", "msg_a")
    assert [e.type for e in timeline] == [
        "message.sent",
        "message.accepted",
        "message.sent",
        "message.delivered",
        "message.opened",
        "message.opened",
        "message.clicked",
        "message.clicked",
        "subscriber.unsubscribed",
    ]
    clicked = timeline[6]
    assert clicked.data == {"url": "https://acme.com/a"}
    assert clicked.message.tags == ["welcome"] and clicked.message.metadata == {"user": "42"}
    assert clicked.message.campaign_id == "cmp_1" and clicked.created_at == at("10:31")
    assert await loaded.message_events("other", "msg_b") == []


async def test_events_filters(loaded):
    async def ids(**filters) -> list[str]:
        page = await loaded.events_page("acme", EventsQuery(limit=100, **WINDOW, **filters), now=NOW)
        return [f"{e.type}:{e.message.id if e.message else ''}" for e in page.data]

    assert len(await ids()) == 23
    assert await ids(type="message.bounced") == ["message.bounced:msg_b", "message.bounced:msg_c"]
    assert len(await ids(type="message.*")) == 22
    assert await ids(type="subscriber.*,message.complained") == [
        "subscriber.unsubscribed:msg_a",
        "message.complained:msg_b",
    ]
    assert await ids(recipient="fb@x.com", type="message.opened") == ["message.opened:msg_f"] * 2
    assert len(await ids(tag="promo")) == 11
    assert len(await ids(campaign_id="cmp_1")) == 12
    assert await ids(provider="amazon-ses", server="srv_2", recipient_domain="example.com") == [
        "message.bounced:msg_c",
        "message.sent:msg_c",
    ]
    assert await ids(message_id="msg_d") == ["message.suppressed:msg_d"]


async def test_export_is_the_same_json_as_the_events(loaded):
    page = await loaded.events_page("acme", EventsQuery(limit=100, **WINDOW), now=NOW)
    chunks = [c async for c in loaded.export_events("acme", EventsQuery(**WINDOW), now=NOW, chunk_rows=7)]
    assert len(chunks) == 4  # 23 lines, 7 per chunk
    lines = b"".join(chunks).splitlines()
    assert lines == [msgspec.json.encode(e) for e in reversed(page.data)]
