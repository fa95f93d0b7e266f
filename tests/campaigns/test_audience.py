"""The audience snapshot: lists ∪ segments − exclude_lists, each subscriber once, segments answered by a
real DuckDB analytics store fed by the real event sink loop; a campaign emptied by its exclusions
completes with nobody mailed."""

from __future__ import annotations

import pytest

from actors.event_sink.body import EventSinkLoop
from analytics.store import open_store
from ingress.routes.analytics import ANALYTICS_READER
from tests.campaigns.conftest import SCOPES, drive, make_template, recipients, runner, smtp


@pytest.fixture
async def analytics(tmp_path):
    opened = open_store(f"duckdb://{tmp_path / 'a.duckdb'}")
    await opened.migrate()
    yield opened
    await opened.close()


async def _list(client, headers, name: str, people: list[dict]) -> str:
    made = await (await client.post("/v1/lists", json={"name": name}, headers=headers)).json()
    added = await client.post(
        f"/v1/lists/{made['id']}/subscribers", json={"subscribers": people}, headers=headers
    )
    assert added.status == 200, await added.text()
    return made["id"]


async def test_lists_union_segments_minus_exclusions_each_once(app_client, analytics, make_key, sink, redis):
    client = await app_client(
        public_url="https://mailers.test", app_hook=lambda app: app.__setitem__(ANALYTICS_READER, analytics)
    )
    headers = await make_key(SCOPES)
    await smtp(client, headers, sink)
    people = [
        {
            "email": f"a{i}@example.com",
            "attributes": {"first_name": f"A{i}", "plan": "pro" if i % 2 else "free"},
        }
        for i in range(20)
    ]
    main = await _list(client, headers, "Main", people)
    extra = await _list(
        client,
        headers,
        "Extra",
        [people[0], people[1], {"email": "x@example.com", "attributes": {"first_name": "X"}}],
    )
    vip = await _list(client, headers, "VIP", [people[3], people[5]])
    segment = {"name": "Pros", "lists": [main], "filter": {"attribute": "plan", "op": "eq", "value": "pro"}}
    made = await client.post("/v1/segments", json=segment, headers=headers)
    assert made.status == 201, await made.text()
    seg = (await made.json())["id"]
    await EventSinkLoop(redis, analytics, consumer="test").run_until_idle()  # the subscriber mirror

    template_id = await make_template(client, headers)
    body = {
        "name": "Pros and extras",
        "from": "Acme <news@acme.test>",
        "template": {"id": template_id},
        "audience": {"lists": [extra], "segments": [seg], "exclude_lists": [vip]},
        "tracking": {"opens": False, "clicks": False},
    }
    cid = (await (await client.post("/v1/campaigns", json=body, headers=headers)).json())["id"]
    launched = await client.post(f"/v1/campaigns/{cid}/launch", headers=headers)
    assert launched.status == 200, await launched.text()
    done = await drive(runner(client, segments=lambda: analytics), client, headers, cid)

    pros = {p["email"] for i, p in enumerate(people) if i % 2}
    expected = (pros | {people[0]["email"], people[1]["email"], "x@example.com"}) - {
        people[3]["email"],
        people[5]["email"],
    }
    assert sorted(recipients(sink)) == sorted(expected)  # a1 is in both the list and the segment: once
    assert done["counters"]["audience"] == len(expected) and done["counters"]["sent"] == len(expected)


async def test_a_campaign_emptied_by_its_exclusions_completes_sending_nothing(client, make_key, sink):
    headers = await make_key(SCOPES)
    await smtp(client, headers, sink)
    people = [{"email": f"e{i}@example.com", "attributes": {"first_name": "E"}} for i in range(5)]
    main = await _list(client, headers, "Main", people)
    everyone = await _list(client, headers, "Blocked", people)
    template_id = await make_template(client, headers)
    body = {
        "name": "Nobody",
        "from": "Acme <news@acme.test>",
        "template": {"id": template_id},
        "audience": {"lists": [main], "exclude_lists": [everyone]},
    }
    cid = (await (await client.post("/v1/campaigns", json=body, headers=headers)).json())["id"]
    assert (await client.post(f"/v1/campaigns/{cid}/launch", headers=headers)).status == 200
    done = await drive(runner(client), client, headers, cid)
    assert done["counters"]["audience"] == 0 and recipients(sink) == []


async def test_without_an_analytics_reader_resolving_a_segment_waits_and_says_why(client, make_key, sink):
    headers = await make_key(SCOPES)
    people = [{"email": f"w{i}@example.com", "attributes": {"first_name": "W"}} for i in range(3)]
    main = await _list(client, headers, "Main", people)
    segment = {"name": "All", "lists": [main], "filter": None}
    seg = (await (await client.post("/v1/segments", json=segment, headers=headers)).json())["id"]
    template_id = await make_template(client, headers)
    body = {
        "name": "Segmented",
        "from": "Acme <news@acme.test>",
        "template": {"id": template_id},
        "audience": {"lists": [main], "segments": [seg]},
    }
    cid = (await (await client.post("/v1/campaigns", json=body, headers=headers)).json())["id"]
    assert (await client.post(f"/v1/campaigns/{cid}/launch", headers=headers)).status == 200
    body_runner = runner(client, segments=lambda: None)
    await body_runner.run_until_idle()
    state = await (await client.get(f"/v1/campaigns/{cid}", headers=headers)).json()
    assert state["progress"] == {
        "phase": "resolve",
        "waiting": "analytics_unavailable",
        "winner": None,
        "failure": None,
    }
    assert state["counters"]["audience"] == 3 and recipients(sink) == []  # the list is in, the segment waits
