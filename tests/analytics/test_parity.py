"""DuckDB and ClickHouse (chDB) give identical answers for the same events, loaded differently.

DuckDB gets the events once, in time order; ClickHouse gets them shuffled (out-of-order timestamps in
every batch), with a fifth of them replayed in later batches (duplicates, late arrivals).
"""

from __future__ import annotations

import itertools
import random
from datetime import timedelta

import msgspec
import pytest

from analytics.queries import CampaignReportQuery, EventsQuery, ExportQuery, SummaryQuery
from tests.analytics.events_factory import NOW, random_events

START = NOW - timedelta(days=10)
FILTERS = [
    {},
    {"provider": "amazon-ses"},
    {"tag": "a"},
    {"campaign_id": "cmp_1"},
    {"server": "srv_2"},
    {"recipient_domain": "example.org"},
]
WINDOW = {"from_": START, "to": NOW}


@pytest.fixture(scope="module")
def events():
    return random_events(7, 4000, start=START, days=10, workspaces=("acme", "beta"))


@pytest.fixture
async def loaded(both, events):
    duck, ch = both
    for start in range(0, len(events), 1000):
        await duck.insert(sorted(events, key=lambda e: e.created_at)[start : start + 1000])
    rng = random.Random(3)
    shuffled = events[:]
    rng.shuffle(shuffled)
    replayed = rng.sample(events, len(events) // 5)
    for batch in (shuffled[:1500], shuffled[1500:] + replayed[:300], replayed[300:]):
        await ch.insert(batch)
    return duck, ch


def same(a, b) -> bool:
    return msgspec.to_builtins(a) == msgspec.to_builtins(b)


async def test_summaries_match_for_every_grouping_interval_and_filter(loaded):
    duck, ch = loaded
    groupings = [None, "provider", "server", "tag", "campaign", "recipient_domain"]
    for group_by, filters in itertools.product(groupings, FILTERS):
        interval = "hour" if group_by in (None, "tag") else "day"
        query = SummaryQuery(group_by=group_by, interval=interval, **WINDOW, **filters)
        a, b = await duck.summary("acme", query, now=NOW), await ch.summary("acme", query, now=NOW)
        assert same(a, b), (group_by, filters)
        assert a.totals.sent > 0 and len(a.buckets) == (
            240 if interval == "hour" else 11
        )  # days: 12:00 to 12:00


async def test_event_pages_match_page_by_page(loaded, events):
    duck, ch = loaded
    acme = sum(1 for e in events if e.workspace == "acme")
    for filters in [*FILTERS, {"type": "message.opened,message.clicked"}, {"recipient": "user3@gmail.com"}]:
        query = EventsQuery(limit=100, **WINDOW, **filters)
        seen = 0
        while True:
            a, b = (
                await duck.events_page("acme", query, now=NOW),
                await ch.events_page("acme", query, now=NOW),
            )
            assert same(a, b), filters
            seen += len(a.data)
            if not a.has_more:
                break
            query = msgspec.structs.replace(query, cursor=a.next_cursor)
        assert 0 < seen <= acme
        if not filters:
            assert seen == acme


async def test_reports_timelines_and_exports_match(loaded, events):
    duck, ch = loaded
    for campaign, query in itertools.product(
        ["cmp_1", "cmp_2"], [None, CampaignReportQuery(from_=NOW - timedelta(days=3))]
    ):
        a = await duck.campaign_report("acme", campaign, query, now=NOW)
        assert same(a, await ch.campaign_report("acme", campaign, query, now=NOW))
        assert a.links and a.domains and a.providers and a.timeline
    for message_id in ["msg_0001", "msg_0017", "msg_0042"]:
        a = await duck.message_events("beta", message_id)
        assert a and same(a, await ch.message_events("beta", message_id))
    query = ExportQuery(type="message.*", **WINDOW)
    a = b"".join([c async for c in duck.export_events("acme", query, now=NOW, chunk_rows=500)])
    b = b"".join([c async for c in ch.export_events("acme", query, now=NOW, chunk_rows=500)])
    assert a == b
    expected = sum(1 for e in events if e.workspace == "acme" and e.type.startswith("message."))
    assert a.count(b"\n") == expected
