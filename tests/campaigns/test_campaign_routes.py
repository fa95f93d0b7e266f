"""`/v1/campaigns` over HTTP (real app, real Redis): the lifecycle, its events, and every bad input
answered with its documented code and nothing changed."""

from __future__ import annotations

from store import keyspace
from store.event_entries import entry_events

KEY_SCOPES = ["write:campaigns", "write:lists", "write:templates"]


async def _setup(client, headers, *, members: int = 3) -> tuple[str, str]:
    made = await client.post("/v1/lists", json={"name": "News"}, headers=headers)
    assert made.status == 201, await made.text()
    list_id = (await made.json())["id"]
    if members:
        people = [
            {"email": f"p{i}@example.com", "attributes": {"first_name": f"P{i}"}} for i in range(members)
        ]
        added = await client.post(
            f"/v1/lists/{list_id}/subscribers", json={"subscribers": people}, headers=headers
        )
        assert added.status == 200, await added.text()
    template = {
        "name": "News",
        "subject": "Hi {{ first_name }}",
        "html": "<p>Hello {{ first_name }}</p>",
        "variables": {"first_name": {"type": "string", "required": True}},
    }
    made = await client.post("/v1/templates", json=template, headers=headers)
    assert made.status == 201, await made.text()
    return list_id, (await made.json())["id"]


def _campaign(list_id: str, template_id: str, **extra) -> dict:
    return {
        "name": "December news",
        "from": "Acme <news@acme.test>",
        "template": {"id": template_id, "version": None},
        "audience": {"lists": [list_id], "segments": [], "exclude_lists": []},
        **extra,
    }


async def _problem(
    response, status: int, code: str, pointer: str | None = None, field_code: str | None = None
):
    assert response.status == status, await response.text()
    body = await response.json()
    assert body["code"] == code, body
    if pointer is not None:
        assert body["errors"][0]["pointer"] == pointer, body
    if field_code is not None:
        assert body["errors"][0]["code"] == field_code, body
    return body


async def _campaign_events(redis, campaign_id: str) -> list[str]:
    entries = await redis.xrange(keyspace.EVENT_STREAM)
    kinds = []
    for _, fields in entries:
        for event in entry_events(fields):
            if event.type.startswith("campaign.") and event.data["campaign"]["id"] == campaign_id:
                kinds.append(event.type)
    return kinds


async def test_lifecycle_draft_launch_pause_resume_cancel(client, make_key, redis, workspace):
    headers = await make_key(KEY_SCOPES)
    list_id, template_id = await _setup(client, headers)
    made = await client.post("/v1/campaigns", json=_campaign(list_id, template_id), headers=headers)
    assert made.status == 201, await made.text()
    campaign = await made.json()
    assert campaign["status"] == "draft" and campaign["id"].startswith("cmp_")
    assert set(campaign["counters"]) == {
        "audience",
        "queued",
        "sent",
        "delivered",
        "failed",
        "suppressed",
        "remaining",
    }
    cid = campaign["id"]

    patched = await client.patch(
        f"/v1/campaigns/{cid}", json={"name": "Renamed", "tags": ["news"]}, headers=headers
    )
    assert patched.status == 200 and (await patched.json())["name"] == "Renamed"

    launched = await client.post(f"/v1/campaigns/{cid}/launch", headers=headers)
    assert launched.status == 200, await launched.text()
    body = await launched.json()
    assert body["status"] == "sending" and body["template"]["version"] == 1  # pinned at launch
    assert body["launched_at"] is not None
    assert await redis.sismember(keyspace.CAMPAIGNS_ACTIVE, f"{workspace}|{cid}")

    await _problem(
        await client.patch(f"/v1/campaigns/{cid}", json={"name": "x"}, headers=headers),
        409,
        "invalid_campaign_status",
    )
    await _problem(
        await client.post(f"/v1/campaigns/{cid}/launch", headers=headers), 409, "invalid_campaign_status"
    )
    await _problem(
        await client.post(f"/v1/campaigns/{cid}/resume", headers=headers), 409, "invalid_campaign_status"
    )

    paused = await client.post(f"/v1/campaigns/{cid}/pause", headers=headers)
    assert paused.status == 200 and (await paused.json())["status"] == "paused"
    resumed = await client.post(f"/v1/campaigns/{cid}/resume", headers=headers)
    assert resumed.status == 200 and (await resumed.json())["status"] == "sending"
    cancelled = await client.post(f"/v1/campaigns/{cid}/cancel", headers=headers)
    assert cancelled.status == 200 and (await cancelled.json())["status"] == "cancelled"
    assert (await cancelled.json())["completed_at"] is not None

    # A finished campaign: pause, resume, cancel and retry are refused, and nothing changes.
    for action in ("pause", "resume", "cancel", "retry-failed"):
        await _problem(
            await client.post(f"/v1/campaigns/{cid}/{action}", headers=headers),
            409,
            "invalid_campaign_status",
        )
    got = await (await client.get(f"/v1/campaigns/{cid}", headers=headers)).json()
    assert got["status"] == "cancelled"
    assert await _campaign_events(redis, cid) == ["campaign.launched", "campaign.paused"]
    assert not await redis.sismember(keyspace.CAMPAIGNS_ACTIVE, f"{workspace}|{cid}")


async def test_scheduled_launch_and_listing(client, make_key):
    headers = await make_key(KEY_SCOPES)
    list_id, template_id = await _setup(client, headers)
    ids = []
    for n in range(3):
        body = _campaign(list_id, template_id, name=f"c{n}", send_at="2099-01-01T09:00:00Z")
        ids.append((await (await client.post("/v1/campaigns", json=body, headers=headers)).json())["id"])
    launched = await (await client.post(f"/v1/campaigns/{ids[0]}/launch", headers=headers)).json()
    assert launched["status"] == "scheduled"
    first = await (await client.get("/v1/campaigns", params={"limit": "2"}, headers=headers)).json()
    assert [c["id"] for c in first["data"]] == ids[:0:-1] and first["has_more"]
    rest = await (
        await client.get(
            "/v1/campaigns", params={"limit": "2", "cursor": first["next_cursor"]}, headers=headers
        )
    ).json()
    assert [c["id"] for c in rest["data"]] == [ids[0]] and not rest["has_more"]


async def test_bad_input_is_refused_with_its_code_and_nothing_written(client, make_key, redis, workspace):
    headers = await make_key(KEY_SCOPES)
    list_id, template_id = await _setup(client, headers)
    missing_list = "lst_" + "0" * 26
    cases = [
        (
            _campaign(list_id, template_id, audience={"lists": [list_id, missing_list]}),
            "#/audience/lists/1",
            "unknown_list",
        ),
        (
            _campaign(list_id, template_id, audience={"lists": [list_id], "exclude_lists": ["nope"]}),
            "#/audience/exclude_lists/0",
            "unknown_list",
        ),
        (
            _campaign(list_id, template_id, audience={"segments": ["seg_" + "0" * 26]}),
            "#/audience/segments/0",
            "unknown_segment",
        ),
        (_campaign(list_id, "tpl_" + "0" * 26), "#/template/id", "unknown_template"),
        (
            _campaign(list_id, template_id, template={"id": template_id, "version": 7}),
            "#/template/id",
            "unknown_template",
        ),
        (
            _campaign(list_id, template_id, window={"timezone": "Mars/Olympus"}),
            "#/window/timezone",
            "invalid_timezone",
        ),
        (
            _campaign(list_id, template_id, window={"timezone": "../../etc/passwd"}),
            "#/window/timezone",
            "invalid_timezone",
        ),
        (
            _campaign(list_id, template_id, window={"start": "09:00", "end": "09:00"}),
            "#/window/end",
            "invalid_window",
        ),
        (_campaign(list_id, template_id, html="<p>x</p>"), "#/template", "invalid_content"),
    ]
    for body, pointer, code in cases:
        await _problem(
            await client.post("/v1/campaigns", json=body, headers=headers),
            422,
            "validation_error",
            pointer,
            code,
        )
    await _problem(
        await client.post(
            "/v1/campaigns", json={**_campaign(list_id, template_id), "surprise": 1}, headers=headers
        ),
        422,
        "validation_error",
    )
    await _problem(
        await client.post(
            "/v1/campaigns", json=_campaign(list_id, template_id, rate={"per_second": 0}), headers=headers
        ),
        422,
        "validation_error",
    )
    assert await redis.zcard(keyspace.campaign_index(workspace)) == 0

    # Launch: an empty list, no audience, no content — each refused, the campaign stays a draft.
    empty = (await (await client.post("/v1/lists", json={"name": "Empty"}, headers=headers)).json())["id"]
    launches = [
        (_campaign(empty, template_id), "#/audience", "empty_audience"),
        (_campaign(list_id, template_id, audience={}), "#/audience", "empty_audience"),
        (
            {**_campaign(list_id, template_id), "template": None, "subject": "S"},
            "#/template",
            "missing_content",
        ),
        (
            {**_campaign(list_id, template_id), "template": None, "html": "<p>x</p>"},
            "#/subject",
            "missing_subject",
        ),
    ]
    for body, pointer, code in launches:
        made = await client.post("/v1/campaigns", json=body, headers=headers)
        assert made.status == 201, await made.text()
        cid = (await made.json())["id"]
        await _problem(
            await client.post(f"/v1/campaigns/{cid}/launch", headers=headers),
            422,
            "validation_error",
            pointer,
            code,
        )
        state = await (await client.get(f"/v1/campaigns/{cid}", headers=headers)).json()
        assert state["status"] == "draft" and state["launched_at"] is None
        assert not await redis.sismember(keyspace.CAMPAIGNS_ACTIVE, f"{workspace}|{cid}")
        assert await _campaign_events(redis, cid) == []
    await _problem(await client.get("/v1/campaigns/cmp_" + "0" * 26, headers=headers), 404, "not_found")
