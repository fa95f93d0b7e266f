"""Finding: "Path ids reach Redis keys unchecked (`/v1/messages/<id>:ev` answers 500; `DELETE
/v1/sending-servers/sandbox` deletes an internal marker)": every path id is checked by the router."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import msgspec
import pytest

from ingress.app import ROUTE_TABLES, openapi_document
from ingress.routing import RouteSpec
from schemas.events import Event
from schemas.ids import id_pattern, is_id, new_id
from store import keyspace
from tests.tracking.helpers import outbound, store_sent

ID_ROUTES = [(spec.method, spec.path, spec.ids) for table in ROUTE_TABLES for spec in table.specs if spec.ids]


async def test_path_ids_reach_redis_keys_unchecked_message_timeline_key_is_404_not_500(
    client, admin, redis, workspace
):
    message = outbound(workspace=workspace)
    await store_sent(redis, message, [])
    opened = Event(id=new_id("evt"), type="message.opened", created_at=datetime.now(UTC), workspace=workspace)
    await redis.rpush(keyspace.message_events(workspace, message.id), msgspec.msgpack.encode(opened))
    for path in (f"/v1/messages/{message.id}:ev", f"/v1/messages/{message.id}%0A"):
        response = await client.get(path, headers=admin)
        assert response.status == 404, await response.text()
        assert (await response.json())["code"] == "not_found"
    assert (await client.get(f"/v1/messages/{message.id}", headers=admin)).status == 200


async def test_path_ids_reach_redis_keys_unchecked_sandbox_marker_is_not_deleted(
    client, admin, redis, workspace
):
    marker = keyspace.sandbox_server(workspace)
    await redis.set(marker, new_id("srv"))
    response = await client.delete("/v1/sending-servers/sandbox", headers=admin)
    assert response.status == 404 and (await response.json())["code"] == "not_found"
    assert await redis.exists(marker)


@pytest.mark.parametrize(("method", "path", "ids"), ID_ROUTES, ids=[f"{m} {p}" for m, p, _ in ID_ROUTES])
async def test_path_ids_reach_redis_keys_unchecked_every_declared_id_is_checked(
    client, admin, method, path, ids
):
    """Each id parameter in turn gets a malformed value (the others stay valid): 404 from the router."""
    for bad_name in ids:
        values = {name: new_id(kind) for name, kind in ids.items()}
        values[bad_name] = values[bad_name] + ":ev"
        url = re.sub(r"\{(\w+)\}", lambda m, values=values: values.get(m.group(1), "x"), path)
        response = await client.request(method, url, headers=admin, json={})
        assert response.status == 404, (method, url, await response.text())
        assert (await response.json())["detail"] == f"No such {ids[bad_name]}_… id"


def test_every_path_parameter_must_be_declared():
    async def handler(request):  # pragma: no cover - never called
        raise AssertionError

    with pytest.raises(ValueError, match="declare each path parameter"):
        RouteSpec(method="GET", path="/v1/things/{id}", handler=handler, scope=None, summary="", tag="t")
    with pytest.raises(ValueError, match="unknown id kinds"):
        RouteSpec(
            method="GET",
            path="/v1/things/{id}",
            handler=handler,
            scope=None,
            summary="",
            tag="t",
            ids={"id": "x"},
        )


def test_the_id_format_is_exact():
    good = new_id("msg")
    assert is_id(good, "msg") and re.fullmatch(id_pattern("msg"), good)
    for bad in (
        good + "\n",
        good + ":ev",
        good.lower(),
        "msg_sandbox",
        good.replace("msg", "srv"),
        "sandbox",
    ):
        assert not is_id(bad, "msg"), bad


def test_the_openapi_document_states_each_path_id_pattern():
    document = openapi_document()
    parameters = {
        (path, p["name"]): p["schema"]
        for path, operations in document["paths"].items()
        for operation in operations.values()
        for p in operation["parameters"]
        if p["in"] == "path"
    }
    assert parameters[("/v1/messages/{id}", "id")] == {"type": "string", "pattern": id_pattern("msg")}
    assert parameters[("/v1/webhooks/{id}/deliveries/{dlv}/replay", "dlv")]["pattern"] == id_pattern("dlv")
    assert parameters[("/v1/inbound/{provider}/{server_id}", "server_id")]["pattern"] == id_pattern("srv")
    # a text parameter with a pattern the router enforces (ingress/routing.RouteSpec.patterns)
    assert parameters[("/t/c/{token}/{index}", "index")] == {
        "type": "string",
        "pattern": "^(?:0|[1-9][0-9]{0,2})$",
    }
    tracking_token = {"type": "string", "pattern": "^(?:[A-Za-z0-9_-]{1,1024})$"}
    for path in ("/t/o/{token}", "/t/c/{token}", "/t/c/{token}/{index}", "/t/u/{token}"):
        assert parameters[(path, "token")] == tracking_token, path
    assert parameters[("/c/{token}", "token")] == {"type": "string", "pattern": "^(?:[A-Za-z0-9_-]{1,512})$"}
    assert parameters[("/v1/inbound/{provider}/{server_id}", "provider")] == {
        "type": "string",
        "pattern": "^(?:amazon-ses|mailgun|postmark|resend|sendgrid)$",
    }


async def test_a_path_text_off_its_pattern_is_404_before_the_handler(client) -> None:
    """`RouteSpec.patterns`: what the OpenAPI document states, the router enforces."""
    server_id = "srv_01J0000000000000000000000A"
    for method, path in (
        ("GET", "/t/o/" + "A" * 1025),
        ("GET", "/t/o/abc="),
        ("GET", "/t/c/abc/01"),
        ("POST", "/t/u/a.b"),
        ("GET", "/c/" + "A" * 513),
        ("POST", f"/v1/inbound/ses/{server_id}"),
    ):
        response = await client.request(method, path, data=b"{}")
        assert response.status == 404, path
        assert (await response.json())["code"] == "not_found"
        assert "must match" in (await response.json())["detail"], path
