"""`GET /v1/campaigns/:id/report`: the report of a campaign that really ran, read through the API from a
DuckDB store fed by the event sink loop (the numbers themselves are checked exactly, on both backends, in
tests/analytics/test_campaign_report.py)."""

from __future__ import annotations

import pytest

from actors.event_sink.body import EventSinkLoop
from analytics.store import open_store
from ingress.routes.analytics import ANALYTICS_READER
from tests.campaigns.conftest import (
    SCOPES,
    drive,
    make_audience,
    make_campaign,
    make_template,
    runner,
    settle,
    smtp,
)


@pytest.fixture
async def analytics(tmp_path):
    opened = open_store(f"duckdb://{tmp_path / 'report.duckdb'}")
    await opened.migrate()
    yield opened
    await opened.close()


async def test_the_report_of_a_campaign_that_ran(app_client, make_key, sink, redis, analytics):
    client = await app_client(
        public_url="https://mailers.test", app_hook=lambda app: app.__setitem__(ANALYTICS_READER, analytics)
    )
    headers = await make_key(SCOPES)
    await smtp(client, headers, sink)
    list_id, emails = await make_audience(client, headers, 30)
    campaign_id = await make_campaign(client, headers, list_id, await make_template(client, headers))
    body = runner(client)
    await drive(body, client, headers, campaign_id)
    await settle(redis, body)
    await EventSinkLoop(redis, analytics, consumer="report-test").run_until_idle()

    got = await client.get(f"/v1/campaigns/{campaign_id}/report", headers=headers)
    assert got.status == 200, await got.text()
    report = await got.json()
    assert report["totals"]["sent"] == len(emails) and report["totals"]["failed"] == 0
    assert [(d["domain"], d["sent"]) for d in report["domains"]] == [("example.com", len(emails))]
    assert sum(bucket["sent"] for bucket in report["timeline"]) == len(emails)

    # Another workspace's key sees no such campaign; a window that ends before it began counts nothing.
    other = await make_key(["read:campaigns"], workspace="someone-else")
    assert (await client.get(f"/v1/campaigns/{campaign_id}/report", headers=other)).status == 404
    early = await client.get(
        f"/v1/campaigns/{campaign_id}/report", params={"to": "2020-01-01T00:00:00Z"}, headers=headers
    )
    assert early.status == 200 and (await early.json())["totals"]["sent"] == 0
    bad = await client.get(f"/v1/campaigns/{campaign_id}/report", params={"to": "soon"}, headers=headers)
    assert bad.status == 422


async def test_the_report_without_an_analytics_store_is_503(app_client, make_key, sink):
    client = await app_client(analytics_url="clickhouse://127.0.0.1:1/none")
    headers = await make_key(SCOPES)
    await smtp(client, headers, sink)
    list_id, _ = await make_audience(client, headers, 1)
    campaign_id = await make_campaign(
        client, headers, list_id, await make_template(client, headers), launch=False
    )
    got = await client.get(f"/v1/campaigns/{campaign_id}/report", headers=headers)
    assert got.status == 503 and got.headers["Retry-After"] == "5"
