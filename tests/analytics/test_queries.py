"""Query-string decoding, window validation and cursors: errors carry the JSON pointer of the field."""

from __future__ import annotations

from datetime import timedelta

import pytest

from analytics.errors import InvalidCursor, InvalidQuery
from analytics.queries import (
    EventsQuery,
    SummaryQuery,
    WindowPolicy,
    expand_types,
    parse_query,
    resolve_window,
)
from analytics.rows import epoch_ms
from tests.analytics.events_factory import NOW, event


def pointer_of(call) -> str:
    with pytest.raises(InvalidQuery) as caught:
        call()
    return caught.value.pointer


def test_query_strings_decode_with_types():
    query = parse_query(EventsQuery, {"from": "2026-04-01T00:00:00Z", "limit": "50", "type": "message.*"})
    assert query.from_.isoformat() == "2026-04-01T00:00:00+00:00" and query.limit == 50
    summary = parse_query(SummaryQuery, {"interval": "hour", "group_by": "recipient_domain"})
    assert summary.group_by == "recipient_domain"


@pytest.mark.parametrize(
    "params, pointer",
    [
        ({"limit": "500"}, "#/limit"),
        ({"limit": "ten"}, "#/limit"),
        ({"from": "yesterday"}, "#/from"),
        ({"colour": "red"}, "#/colour"),
    ],
)
def test_bad_parameters_name_their_field(params, pointer):
    assert pointer_of(lambda: parse_query(EventsQuery, params)) == pointer


def test_summary_parameters_are_checked():
    assert pointer_of(lambda: parse_query(SummaryQuery, {"interval": "week"})) == "#/interval"
    assert pointer_of(lambda: parse_query(SummaryQuery, {"group_by": "colour"})) == "#/group_by"


def test_windows():
    policy = WindowPolicy(max_span=timedelta(days=31), default_span=timedelta(days=7))
    assert resolve_window(None, None, now=NOW, policy=policy) == (
        epoch_ms(NOW - timedelta(days=7)),
        epoch_ms(NOW),
    )
    assert pointer_of(lambda: resolve_window(NOW, NOW, now=NOW, policy=policy)) == "#/from"
    assert (
        pointer_of(lambda: resolve_window(NOW, NOW - timedelta(hours=1), now=NOW, policy=policy)) == "#/from"
    )
    too_long = NOW - timedelta(days=32)
    with pytest.raises(InvalidQuery) as caught:
        resolve_window(too_long, NOW, now=NOW, policy=policy)
    assert caught.value.pointer == "#/to" and caught.value.code == "window_too_large"
    assert resolve_window(None, None, now=NOW, policy=policy, default=False) == (None, None)


def test_type_patterns():
    assert expand_types("message.bounced") == ("message.bounced",)
    assert "message.opened" in expand_types("message.*") and "campaign.launched" not in expand_types(
        "message.*"
    )
    assert expand_types("subscriber.*,message.failed,message.*")[:2] == (
        "subscriber.unsubscribed",
        "message.failed",
    )
    assert pointer_of(lambda: expand_types("message.teleported")) == "#/type"
    assert pointer_of(lambda: expand_types("mess*")) == "#/type"


async def test_summary_refuses_too_many_buckets_and_bad_windows(store):
    hourly = SummaryQuery(interval="hour", from_=NOW - timedelta(days=92), to=NOW)
    with pytest.raises(InvalidQuery) as caught:
        await store.summary("acme", hourly, now=NOW)
    assert caught.value.pointer == "#/interval"
    with pytest.raises(InvalidQuery) as caught:
        await store.summary("acme", SummaryQuery(from_=NOW, to=NOW - timedelta(days=1)), now=NOW)
    assert caught.value.pointer == "#/from"


async def test_cursors_only_fit_their_filters(store):
    await store.insert([event("message.sent", NOW - timedelta(minutes=i)) for i in range(1, 6)])
    first = await store.events_page("acme", EventsQuery(limit=2, provider="smtp"), now=NOW)
    assert first.has_more and first.next_cursor
    with pytest.raises(InvalidCursor) as caught:
        await store.events_page(
            "acme", EventsQuery(limit=2, provider="mailgun", cursor=first.next_cursor), now=NOW
        )
    assert caught.value.pointer == "#/cursor" and caught.value.code == "invalid_cursor"
    with pytest.raises(InvalidCursor):
        await store.events_page("acme", EventsQuery(cursor="not-a-cursor"), now=NOW)
    # a different limit is fine: only filters are pinned
    second = await store.events_page(
        "acme", EventsQuery(limit=3, provider="smtp", cursor=first.next_cursor), now=NOW
    )
    assert len(second.data) == 3 and not second.has_more
