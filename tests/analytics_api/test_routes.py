"""/v1/analytics/* and the message fallback over HTTP, against a real DuckDB analytics store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from analytics.store import open_store
from ingress.routes.analytics import ANALYTICS_READER
from schemas.events import Event, EventMessage
from schemas.ids import new_id

NOW = datetime.now(UTC).replace(microsecond=0)


def event(workspace: str, kind: str, message_id: str, to: str, minutes_ago: float, **data) -> Event:
    return Event(
        id=new_id("evt"),
        type=kind,
        created_at=NOW - timedelta(minutes=minutes_ago),
        workspace=workspace,
        data=data,
        message=EventMessage(
            id=message_id, to=to, from_="hello@acme.com", provider="smtp", server="srv_1", tags=["news"]
        ),
    )


@pytest.fixture
async def store(tmp_path):
    opened = open_store(f"duckdb://{tmp_path / 'a.duckdb'}")
    await opened.migrate()
    yield opened
    await opened.close()


@pytest.fixture
async def api(app_client, store, workspace):
    m1, m2 = "msg_" + "1" * 26, "msg_" + "2" * 26
    await store.insert(
        [
            event(workspace, "message.sent", m1, "ana@example.com", 50),
            event(workspace, "message.delivered", m1, "ana@example.com", 40),
            event(workspace, "message.opened", m1, "ana@example.com", 30),
            event(workspace, "message.opened", m1, "ana@example.com", 20),
            event(workspace, "message.sent", m2, "bo@example.org", 50),
            event(
                workspace,
                "message.bounced",
                m2,
                "bo@example.org",
                45,
                bounce={"type": "hard", "code": "550", "diagnostic": "unknown"},
            ),
            event("other-ws", "message.sent", "msg_" + "3" * 26, "cy@example.net", 10),
        ]
    )
    client = await app_client(app_hook=lambda app: app.__setitem__(ANALYTICS_READER, store))
    return client, m1, m2


async def test_events_page_filters_and_wildcards(api, admin):
    client, m1, _ = api
    response = await client.get(
        "/v1/analytics/events", params={"type": "message.*", "limit": "3"}, headers=admin
    )
    assert response.status == 200, await response.text()
    page = await response.json()
    assert [e["type"] for e in page["data"]] == ["message.opened", "message.opened", "message.delivered"]
    assert page["has_more"] and page["next_cursor"]
    rest = await (
        await client.get(
            "/v1/analytics/events",
            params={"type": "message.*", "limit": "3", "cursor": page["next_cursor"]},
            headers=admin,
        )
    ).json()
    assert len(rest["data"]) == 3 and not rest["has_more"]
    only = await (
        await client.get(
            "/v1/analytics/events", params={"message_id": m1, "type": "message.opened"}, headers=admin
        )
    ).json()
    assert len(only["data"]) == 2 and {e["message"]["id"] for e in only["data"]} == {m1}
    domain = await (
        await client.get("/v1/analytics/events", params={"recipient_domain": "example.org"}, headers=admin)
    ).json()
    assert {e["message"]["to"] for e in domain["data"]} == {"bo@example.org"}


async def test_ndjson_export_streams_every_event(api, admin):
    client, *_ = api
    response = await client.get("/v1/analytics/events", headers={**admin, "Accept": "application/x-ndjson"})
    assert response.status == 200 and response.content_type == "application/x-ndjson"
    lines = [msgspec.json.decode(line) for line in (await response.read()).splitlines() if line]
    assert len(lines) == 6 and all(line["workspace"] != "other-ws" for line in lines)


async def test_summary_counts_and_rates(api, admin):
    client, *_ = api
    response = await client.get("/v1/analytics/summary", params={"interval": "day"}, headers=admin)
    assert response.status == 200, await response.text()
    totals = (await response.json())["totals"]
    assert totals["sent"] == 2 and totals["delivered"] == 1 and totals["bounced_hard"] == 1
    assert totals["opened"] == 2 and totals["opened_unique"] == 1


async def test_bad_windows_and_cursors(api, admin):
    client, *_ = api
    later, earlier = (NOW + timedelta(hours=1)).isoformat(), NOW.isoformat()
    bad = await client.get("/v1/analytics/summary", params={"from": later, "to": earlier}, headers=admin)
    assert bad.status == 422
    assert (await bad.json())["errors"][0]["pointer"].startswith("#/query/")
    cursor = await client.get("/v1/analytics/events", params={"cursor": "nonsense"}, headers=admin)
    assert cursor.status == 400 and (await cursor.json())["code"] == "invalid_cursor"
    empty = await client.get(
        "/v1/analytics/summary",
        params={"from": (NOW - timedelta(days=30)).isoformat(), "to": (NOW - timedelta(days=29)).isoformat()},
        headers=admin,
    )
    assert empty.status == 200 and (await empty.json())["totals"]["sent"] == 0


async def test_a_message_no_longer_in_redis_is_read_from_the_store(api, admin):
    client, m1, m2 = api
    view = await (await client.get(f"/v1/messages/{m1}", headers=admin)).json()
    assert view["status"] == "delivered" and view["server"] == "srv_1" and view["provider"] == "smtp"
    assert [e["type"] for e in view["events"]] == [
        "message.sent",
        "message.delivered",
        "message.opened",
        "message.opened",
    ]
    assert (await (await client.get(f"/v1/messages/{m2}", headers=admin)).json())["status"] == "bounced"
    missing = await client.get("/v1/messages/msg_" + "9" * 26, headers=admin)
    assert missing.status == 404
    other = await client.get("/v1/messages/msg_" + "3" * 26, headers=admin)
    assert other.status == 404


def test_mailers_migrate_applies_then_reports_up_to_date(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    mailers = str(Path(sys.executable).parent / "mailers")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILERS_")}
    env.update(MAILERS_DATA_DIR=str(tmp_path), MAILERS_ANALYTICS_URL=f"duckdb://{tmp_path / 'm.duckdb'}")
    first = subprocess.run([mailers, "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("duckdb: schema at migrations [1, ")
    again = subprocess.run([mailers, "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == first.stdout  # idempotent
