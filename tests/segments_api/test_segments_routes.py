"""`POST /v1/events` and `/v1/segments` over HTTP, on a real DuckDB store fed by the real event sink."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from actors.event_sink.body import EventSinkLoop
from analytics.store import open_store
from ingress.routes.analytics import ANALYTICS_READER
from schemas.audience import ListRecord
from schemas.events import Event
from schemas.ids import new_id
from store import keyspace
from store.lists import ListStore
from tests.analytics.segment_dataset import L1

_encode = msgspec.msgpack.Encoder().encode


@pytest.fixture
async def store(tmp_path):
    opened = open_store(f"duckdb://{tmp_path / 'a.duckdb'}")
    await opened.migrate()
    yield opened
    await opened.close()


@pytest.fixture
async def api(app_client, store, redis):
    client = await app_client(app_hook=lambda app: app.__setitem__(ANALYTICS_READER, store))
    sink = EventSinkLoop(redis, store, consumer="test")
    return client, sink


async def add_subscribers(redis, workspace: str) -> dict[str, str]:
    ids, events = {}, []
    for email, plan in [("ana@example.com", "pro"), ("bo@example.com", "free"), ("cy@example.com", "pro")]:
        sid = ids[email] = new_id("sub")
        now = datetime.now(UTC)
        record = {
            "id": sid,
            "email": email,
            "name": "",
            "attributes": {"plan": plan},
            "status": "active",
            "created_at": now.isoformat(),
        }
        events.append(
            Event(
                id=new_id("evt"),
                type="subscriber.created",
                created_at=now,
                workspace=workspace,
                data={"subscriber": record, "version": 1},
            )
        )
        events.append(
            Event(
                id=new_id("evt"),
                type="list.subscribed",
                created_at=now,
                workspace=workspace,
                data={"subscriber": sid, "email": email, "list": L1, "status": "subscribed", "version": 2},
            )
        )
    await redis.xadd(keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: _encode(events)})
    return ids


async def add_list(redis, workspace: str, list_id: str = L1) -> None:
    record = ListRecord(id=list_id, workspace=workspace, name="Main", created_ms=0, updated_ms=0)
    await ListStore(redis).save(record, new=True)


async def test_custom_events_reach_analytics_and_segments(api, redis, make_key, workspace):
    client, sink = api
    await add_list(redis, workspace)
    send = await make_key(["send"])
    ids = await add_subscribers(redis, workspace)
    one = {"name": "order.completed", "email": "Ana@Example.com", "properties": {"total": 42}}
    response = await client.post("/v1/events", json=one, headers=send)
    assert response.status == 202, await response.text()
    batch = {"events": [dict(one), {"name": "order.completed", "email": "cy@example.com"}]}
    assert (await client.post("/v1/events", json=batch, headers=send)).status == 202
    await sink.run_until_idle()

    reader = await make_key(["read:events", "write:lists"])
    page = await (
        await client.get("/v1/analytics/events", params={"type": "order.completed"}, headers=reader)
    ).json()
    assert [e["data"]["email"] for e in page["data"]].count("ana@example.com") == 2
    assert page["data"][0]["data"]["properties"] in ({"total": 42}, {})

    segment = {
        "name": "Loyal pros",
        "lists": [L1],
        "filter": {
            "all": [
                {"attribute": "plan", "op": "eq", "value": "pro"},
                {"event": "order.completed", "within_days": 30, "count_gte": 2},
            ]
        },
    }
    created = await client.post("/v1/segments", json=segment, headers=reader)
    assert created.status == 201, await created.text()
    seg = await created.json()
    count = await (await client.get(f"/v1/segments/{seg['id']}/count", headers=reader)).json()
    assert count == {"count": 1, "object": "segment_count"}
    members = await (await client.get(f"/v1/segments/{seg['id']}/subscribers", headers=reader)).json()
    assert [m["id"] for m in members["data"]] == [ids["ana@example.com"]]

    patch = {"filter": {"attribute": "plan", "op": "eq", "value": "pro"}}
    assert (await client.patch(f"/v1/segments/{seg['id']}", json=patch, headers=reader)).status == 200
    first = await (
        await client.get(f"/v1/segments/{seg['id']}/subscribers", params={"limit": "1"}, headers=reader)
    ).json()
    assert first["has_more"] and first["next_cursor"]
    rest = await (
        await client.get(
            f"/v1/segments/{seg['id']}/subscribers",
            params={"limit": "1", "cursor": first["next_cursor"]},
            headers=reader,
        )
    ).json()
    assert {first["data"][0]["id"], rest["data"][0]["id"]} == {ids["ana@example.com"], ids["cy@example.com"]}
    assert not rest["has_more"]
    listed = await (await client.get("/v1/segments", headers=reader)).json()
    assert [s["id"] for s in listed["data"]] == [seg["id"]]
    assert (await client.delete(f"/v1/segments/{seg['id']}", headers=reader)).status == 200
    assert (await client.get(f"/v1/segments/{seg['id']}", headers=reader)).status == 404


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"name": "message.opened", "email": "a@example.com"}, "#/name"),
        ({"name": "Order", "email": "a@example.com"}, "#/name"),
        ({"name": "order.completed", "email": "not an address"}, "#/email"),
        (
            {"events": [{"name": "a.b", "email": "a@example.com"}, {"name": "a.b", "email": "x"}]},
            "#/events/1/email",
        ),
        (
            {
                "name": "a.b",
                "email": "a@example.com",
                "timestamp": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
            },
            "#/timestamp",
        ),
        (
            {
                "name": "a.b",
                "email": "a@example.com",
                "properties": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}},
            },
            "#/properties",
        ),
        ({"name": "a.b", "email": "a@example.com", "properties": {"x": "y" * 20000}}, "#/properties"),
        ({"name": "a.b", "email": "a@example.com", "properties": [1, 2]}, "#/properties"),
        (
            {"events": [{"name": "a.b", "email": "a@example.com", "properties": {"l": [[]] * 20000}}]},
            "#/events/0/properties",
        ),
        ({"name": "a.b", "email": "a@example.com", "colour": "red"}, "#/colour"),
    ],
)
async def test_invalid_events_are_refused_with_a_pointer(api, make_key, redis, body, pointer):
    client, _ = api
    response = await client.post("/v1/events", json=body, headers=await make_key(["write:events"]))
    assert response.status == 422, await response.text()
    assert pointer in [e["pointer"] for e in (await response.json())["errors"]]
    assert await redis.xlen(keyspace.EVENT_STREAM) == 0


async def test_event_scopes(api, make_key):
    client, _ = api
    body = {"name": "a.b", "email": "a@example.com"}
    assert (await client.post("/v1/events", json=body, headers=await make_key(["read:lists"]))).status == 403
    assert (
        await client.post("/v1/events", json=body, headers=await make_key(["write:events"]))
    ).status == 202


@pytest.mark.parametrize(
    ("condition", "pointer", "code"),
    [
        ({"attribute": "plan", "op": "like", "value": "x"}, "#/filter/op", "unknown_op"),
        (
            {"all": [{"attribute": "plan", "op": "eq", "value": "x", "extra": 1}]},
            "#/filter/all/0/extra",
            "unknown_field",
        ),
        (
            {"any": [{"event": "no_such_event", "within_days": 3}]},
            "#/filter/any/0/event",
            "unknown_event_type",
        ),
        (
            {"not": {"attribute": "plan", "op": "eq", "value": {"a": 1}}},
            "#/filter/not/value",
            "invalid_value",
        ),
        (
            {"attribute": "created_at", "op": "eq", "value": "2026-01-01T00:00:00Z"},
            "#/filter/op",
            "unknown_op",
        ),
        (
            {"attribute": "x'); DROP TABLE t", "op": "eq", "value": 1},
            "#/filter/attribute",
            "invalid_condition",
        ),
        ({"event": "message.opened", "within_days": 0}, "#/filter/within_days", "invalid_value"),
        (
            {"not": {"not": {"not": {"not": {"not": {"not": {"not": {"not": {"event": "a.b"}}}}}}}}},
            "#/filter/not/not/not/not/not/not/not/not",
            "filter_too_deep",
        ),
    ],
)
async def test_invalid_filters_are_refused_with_a_pointer(api, make_key, condition, pointer, code):
    client, _ = api
    body = {"name": "s", "filter": condition}
    response = await client.post("/v1/segments", json=body, headers=await make_key(["write:lists"]))
    assert response.status == 422, await response.text()
    [error] = (await response.json())["errors"]
    assert (error["pointer"], error["code"]) == (pointer, code)


async def test_segment_lists_must_exist_in_the_workspace(api, redis, make_key, workspace):
    client, _ = api
    await add_list(redis, workspace)
    headers = await make_key(["write:lists"])
    missing = "lst_" + "9" * 26
    body = {"name": "s", "lists": [L1, missing]}
    response = await client.post("/v1/segments", json=body, headers=headers)
    assert response.status == 422, await response.text()
    [error] = (await response.json())["errors"]
    assert (error["pointer"], error["code"]) == ("#/lists/1", "unknown_list")

    created = await client.post("/v1/segments", json={"name": "s", "lists": [L1, L1]}, headers=headers)
    assert created.status == 201, await created.text()
    seg = await created.json()
    assert seg["lists"] == [L1]
    patched = await client.patch(f"/v1/segments/{seg['id']}", json={"lists": [missing]}, headers=headers)
    assert patched.status == 422, await patched.text()
    assert (await patched.json())["errors"][0]["pointer"] == "#/lists/0"
    await add_list(redis, "another-workspace", missing)  # someone else's list is no list of ours
    patched = await client.patch(f"/v1/segments/{seg['id']}", json={"lists": [missing]}, headers=headers)
    assert patched.status == 422, await patched.text()
