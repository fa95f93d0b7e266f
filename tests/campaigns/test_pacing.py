"""Time on the runner's injected clock: `send_at`, the send window (in a timezone), the rate, and the
A/B test's wait and winner. No real waiting: the clock is moved."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from actors.event_sink.body import EventSinkLoop
from analytics.campaign_report import variant_metric
from analytics.store import open_store
from schemas.events import Event, EventMessage, event_msgpack_encoder
from schemas.ids import new_id
from store import keyspace
from tests.campaigns.conftest import (
    SCOPES,
    Clock,
    campaign,
    drive,
    make_audience,
    make_campaign,
    make_template,
    parsed,
    recipients,
    runner,
    smtp,
    store_state,
)
from tests.pipeline.conftest import create_smtp_server

# Monday 7 December 2026, 07:00 UTC = 08:00 in Berlin.
MONDAY_0700_UTC = datetime(2026, 12, 7, 7, 0, tzinfo=UTC).timestamp()
BERLIN_OFFICE = {
    "days": ["mon", "tue", "wed", "thu", "fri"],
    "start": "09:00",
    "end": "17:00",
    "timezone": "Europe/Berlin",
}


async def test_send_at_waits_on_the_clock_then_sends(client, make_key, sink, redis, workspace):
    headers = await make_key(SCOPES)
    await smtp(client, headers, sink)
    list_id, emails = await make_audience(client, headers, 20)
    template_id = await make_template(client, headers)
    send_at = datetime(2099, 1, 1, 9, 0, tzinfo=UTC)
    campaign_id = await make_campaign(client, headers, list_id, template_id, send_at=send_at.isoformat())
    clock = Clock(send_at.timestamp() - 60)
    body = runner(client, clock=clock)
    await body.run_until_idle()
    state = await campaign(client, headers, campaign_id)
    assert state["status"] == "scheduled" and state["progress"]["waiting"] == "send_at"
    assert (await store_state(redis, workspace, campaign_id)).number("n:enq") == 0
    clock.now = send_at.timestamp() + 1
    done = await drive(body, client, headers, campaign_id)
    assert sorted(recipients(sink)) == sorted(emails) and done["progress"]["waiting"] is None


async def test_outside_the_window_the_campaign_waits_and_says_so(client, make_key, sink, redis, workspace):
    headers = await make_key(SCOPES)
    await smtp(client, headers, sink)
    list_id, emails = await make_audience(client, headers, 20)
    template_id = await make_template(client, headers)
    campaign_id = await make_campaign(client, headers, list_id, template_id, window=BERLIN_OFFICE)
    clock = Clock(MONDAY_0700_UTC)  # 08:00 in Berlin: before the window
    body = runner(client, clock=clock)
    await body.run_until_idle()
    state = await campaign(client, headers, campaign_id)
    assert state["status"] == "sending" and state["progress"]["waiting"] == "outside_window"
    assert state["counters"]["audience"] == 20 and state["counters"]["remaining"] == 20
    assert (await store_state(redis, workspace, campaign_id)).number("n:enq") == 0
    clock.now = MONDAY_0700_UTC + 5 * 86400  # Saturday 08:00 UTC = 09:00 Berlin, but not a window day
    await body.run_until_idle()
    assert (await campaign(client, headers, campaign_id))["progress"]["waiting"] == "outside_window"
    clock.now = MONDAY_0700_UTC + 3600 + 60  # Monday 09:01 in Berlin
    done = await drive(body, client, headers, campaign_id)
    assert sorted(recipients(sink)) == sorted(emails)
    assert done["status"] == "sent"


async def test_rate_per_second_paces_chunks_on_the_clock(client, make_key, sink, redis, workspace):
    headers = await make_key(SCOPES)
    await smtp(client, headers, sink)
    list_id, _ = await make_audience(client, headers, 50)
    template_id = await make_template(client, headers)
    campaign_id = await make_campaign(client, headers, list_id, template_id, rate={"per_second": 10})
    clock = Clock()
    body = runner(client, clock=clock, in_flight=1000)
    await body.run_until_idle()
    assert (await store_state(redis, workspace, campaign_id)).number("n:done") == 10  # one second's worth
    clock.now += 2
    await body.run_until_idle()
    assert (await store_state(redis, workspace, campaign_id)).number("n:done") == 20  # the bucket holds 1 s
    done = await drive(body, client, headers, campaign_id, clock=clock)
    assert sorted(recipients(sink)) == sorted(f"p{i}@example.com" for i in range(50))
    assert done["counters"]["sent"] == 50


@pytest.fixture
async def analytics(tmp_path):
    opened = open_store(f"duckdb://{tmp_path / 'a.duckdb'}")
    await opened.migrate()
    yield opened
    await opened.close()


@pytest.mark.parametrize("source", ["redis", "report"])
async def test_ab_test_sends_the_winner_to_the_rest_after_the_wait(
    client, make_key, sink, redis, workspace, analytics, source
):
    """The winner by the runner's own counts, or by the campaign report on a real DuckDB store fed by
    the event sink loop (`analytics.campaign_report.variant_metric`, as the runner actor uses it)."""
    asked: list[dict[str, float]] = []

    async def from_report(ws: str, cid: str, metric: str) -> dict[str, float]:
        await EventSinkLoop(redis, analytics, consumer="test").run_until_idle()
        asked.append(await variant_metric(analytics, ws, cid, metric))
        return asked[-1]

    headers = await make_key(SCOPES)
    await smtp(client, headers, sink)
    list_id, emails = await make_audience(client, headers, 200)
    template_id = await make_template(client, headers)
    ab_test = {
        "variants": [{"subject": "Variant A"}, {"subject": "Variant B"}],
        "test_fraction": 0.3,
        "metric": "opened_unique",
        "wait_minutes": 60,
    }
    campaign_id = await make_campaign(client, headers, list_id, template_id, ab_test=ab_test)
    clock = Clock()
    body = runner(client, clock=clock, variant_metric=from_report if source == "report" else None)
    await drive(body, client, headers, campaign_id, until=("sending",))
    await body.run_until_idle()
    state = await store_state(redis, workspace, campaign_id)
    tested = state.number("n:done")
    assert 30 <= tested <= 90 and state.text("phase") == "winner"  # ~30% of 200
    waiting = await campaign(client, headers, campaign_id)
    assert (
        waiting["progress"]["waiting"] == "ab_test_wait" and waiting["counters"]["remaining"] == 200 - tested
    )

    # Opens of variant B's messages arrive on the event stream (as tracking records them).
    listed = await client.get(
        "/v1/messages", params={"campaign_id": campaign_id, "limit": "100"}, headers=headers
    )
    b_ids = [m["id"] for m in (await listed.json())["data"] if m["subject"] == "Variant B"]
    assert b_ids
    opens = [
        Event(
            id=new_id("evt"),
            type="message.opened",
            created_at=datetime.now(UTC),
            workspace=workspace,
            message=EventMessage(
                id=mid, to="x@example.com", campaign_id=campaign_id, metadata={"campaign_variant": "1"}
            ),
            data={"machine_open": False},
        )
        for mid in b_ids
    ]
    await redis.xadd(keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: event_msgpack_encoder.encode(opens)})
    await body.run_until_idle()
    assert (await store_state(redis, workspace, campaign_id)).text("phase") == "winner"  # still waiting
    clock.now += 3601
    done = await drive(body, client, headers, campaign_id)
    assert done["progress"]["winner"] == 1
    if source == "report":  # the report saw the opens of variant B (and none of A)
        assert asked and asked[0].get("1", 0) == len(b_ids) and asked[0].get("0", 0) == 0
    assert sorted(recipients(sink)) == sorted(emails)
    subjects = [parsed(d)["Subject"] for d in sink.deliveries]
    assert subjects.count("Variant A") + subjects.count("Variant B") == 200
    assert subjects.count("Variant B") >= 200 - tested  # the rest all got the winner
    assert 0 < subjects.count("Variant A") < tested


async def test_a_campaign_whose_servers_are_at_quota_waits_and_says_why(client, make_key, sink):
    headers = await make_key(SCOPES)
    await create_smtp_server(client, headers, sink.port, quotas={"per_day": 3})
    list_id, _ = await make_audience(client, headers, 20)
    template_id = await make_template(client, headers)
    campaign_id = await make_campaign(client, headers, list_id, template_id)
    body = runner(client, in_flight=6, chunk=6)
    deadline = time.monotonic() + 60
    while True:
        await body.run_until_idle()
        state = await campaign(client, headers, campaign_id)
        # 6 queued, 3 sent (the quota), their events counted, 3 more queued: the window is full again.
        if state["progress"]["waiting"] == "servers_at_quota" and state["counters"]["remaining"] == 11:
            break
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.05)
    assert state["status"] == "sending" and len(sink.deliveries) == 3
    assert state["counters"]["queued"] == 6 and state["counters"]["sent"] == 3
