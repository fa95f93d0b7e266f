"""Pages stay stable while events arrive; one workspace never sees another's events."""

from __future__ import annotations

from datetime import timedelta

import msgspec

from analytics.queries import CampaignReportQuery, EventsQuery, ExportQuery, SummaryQuery
from tests.analytics.events_factory import NOW, event

START = NOW - timedelta(days=1)


def sent(minute: int, **kw):
    return event("message.sent", START + timedelta(minutes=minute), message_id=f"msg_{minute:04d}", **kw)


async def test_pagination_is_stable_while_events_arrive(store):
    originals = [sent(m) for m in range(250)]
    same_instant = [
        event("message.delivered", START + timedelta(minutes=200), message_id=f"msg_x{i}") for i in range(30)
    ]
    await store.insert(originals + same_instant)
    expected = sorted(originals + same_instant, key=lambda e: (e.created_at, e.id), reverse=True)
    query = EventsQuery(limit=40, from_=START, to=NOW)
    seen, late_ids, page_no = [], set(), 0
    while True:
        page = await store.events_page("acme", query, now=NOW)
        seen += [e.id for e in page.data]
        page_no += 1
        # meanwhile: newer events (above every cursor), and late arrivals from deep in the past
        newer = [sent(300 + page_no * 10 + i) for i in range(5)]
        late = [event("message.opened", START + timedelta(minutes=page_no), message_id="msg_late")]
        late_ids.update(e.id for e in late)
        await store.insert(newer + late)
        if not page.has_more:
            break
        query = msgspec.structs.replace(query, cursor=page.next_cursor)
    originals_seen = [i for i in seen if i not in late_ids]
    assert originals_seen == [e.id for e in expected]  # none skipped, none twice, in order
    assert len(seen) == len(set(seen))
    assert late_ids & set(seen)  # late arrivals behind the cursor show up, once


async def test_workspaces_are_isolated(store):
    await store.insert([sent(m, campaign_id="cmp_1") for m in range(10)])
    await store.insert(
        [sent(m, workspace="beta", campaign_id="cmp_1", event_id=f"evt_beta{m}") for m in range(3)]
    )
    window = {"from_": START, "to": NOW}
    page = await store.events_page("beta", EventsQuery(limit=100, **window), now=NOW)
    assert {e.workspace for e in page.data} == {"beta"} and len(page.data) == 3
    summary = await store.summary("beta", SummaryQuery(group_by="campaign", **window), now=NOW)
    assert summary.totals.sent == 3 and summary.groups[0].totals.sent == 3
    report = await store.campaign_report("beta", "cmp_1", CampaignReportQuery(), now=NOW)
    assert report.totals.sent == 3
    assert len(await store.message_events("beta", "msg_0005")) == 0
    assert len(await store.message_events("acme", "msg_0005")) == 1
    lines = b"".join([c async for c in store.export_events("beta", ExportQuery(**window), now=NOW)])
    assert lines.count(b"\n") == 3 and b'"workspace":"acme"' not in lines
    nobody = await store.summary("gamma", SummaryQuery(**window), now=NOW)
    assert nobody.totals.sent == 0
