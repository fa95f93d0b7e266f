"""/v1/suppressions over HTTP, with the writes going through real SuppressionShards."""

from __future__ import annotations

import uuid

import pytest
import ray

from actors.suppression.client import SuppressionClient
from schemas.ids import new_id
from schemas.settings import load_settings
from schemas.suppressions import Suppressed, SuppressionEntry
from store.suppressions import GLOBAL, SuppressionStore

LIST = new_id("lst")


@pytest.fixture
async def shards(gateway, redis, redis_url, monkeypatch):
    client = SuppressionClient.start(
        load_settings({}, ray_namespace=f"sup-{uuid.uuid4().hex[:8]}", suppression_shards=2), redis_url
    )
    monkeypatch.setattr(gateway, "suppressions", client, raising=False)
    yield client
    await client.drain()
    for shard in client.shards:
        ray.kill(shard, no_restart=True)


async def post(client, headers, **body):
    return await client.post("/v1/suppressions", json=body, headers=headers)


async def test_add_list_filter_and_delete(workspace, client, shards, make_key):
    writer = await make_key(["write:suppressions"])
    response = await post(client, writer, emails=["Ana@Example.com", "bo@example.com"], reason="bounce")
    assert response.status == 201, await response.text()
    created = await response.json()
    assert created["created"] == 2
    assert [(s["email"], s["scope"], s["reason"], s["object"]) for s in created["data"]] == [
        ("ana@example.com", "workspace", "bounce", "suppression"),
        ("bo@example.com", "workspace", "bounce", "suppression"),
    ]
    domain = await post(
        client, writer, email="ana@example.com", scope="domain", scope_value="Acme.test", reason="complaint"
    )
    assert domain.status == 201 and (await domain.json())["data"][0]["scope_value"] == "acme.test"
    listed = await post(
        client, writer, email="cy@example.com", scope="list", scope_value=LIST, reason="unsubscribe"
    )
    assert listed.status == 201
    assert await shards.check(
        workspace, "news.acme.test", [LIST], ["ANA@example.com", "cy@example.com", "x@y.z"]
    ) == [
        Suppressed("ANA@example.com", "workspace", "bounce"),
        Suppressed("cy@example.com", "list", "unsubscribe"),
    ]

    listed = await (await client.get("/v1/suppressions", headers=writer)).json()
    assert [(s["email"], s["scope"]) for s in listed["data"]] == [
        ("cy@example.com", "list"),
        ("ana@example.com", "domain"),
        ("bo@example.com", "workspace"),
        ("ana@example.com", "workspace"),
    ]
    by_email = await (await client.get("/v1/suppressions?email=ANA@example.com", headers=writer)).json()
    assert [s["scope"] for s in by_email["data"]] == ["domain", "workspace"]
    by_reason = await (
        await client.get("/v1/suppressions?reason=bounce&scope=workspace", headers=writer)
    ).json()
    assert [s["email"] for s in by_reason["data"]] == ["bo@example.com", "ana@example.com"]

    one = await (await client.get("/v1/suppressions?limit=1&reason=bounce", headers=writer)).json()
    two = await (
        await client.get(
            f"/v1/suppressions?limit=1&reason=bounce&cursor={one['next_cursor']}", headers=writer
        )
    ).json()
    assert [s["email"] for s in one["data"] + two["data"]] == ["bo@example.com", "ana@example.com"]
    assert two["has_more"] is False
    mismatch = await client.get(f"/v1/suppressions?limit=1&cursor={one['next_cursor']}", headers=writer)
    assert mismatch.status == 400 and (await mismatch.json())["code"] == "invalid_cursor"

    scoped = await client.delete(
        "/v1/suppressions/ana@example.com?scope=domain&scope_value=acme.test", headers=writer
    )
    assert scoped.status == 200
    assert [s["scope"] for s in (await scoped.json())["deleted"]] == ["domain"]
    everywhere = await client.delete("/v1/suppressions/ANA%40example.com", headers=writer)
    assert everywhere.status == 200 and (await everywhere.json())["email"] == "ana@example.com"
    assert await shards.check(workspace, "acme.test", [], ["ana@example.com", "bo@example.com"]) == [
        Suppressed("bo@example.com", "workspace", "bounce")
    ]
    assert (await client.delete("/v1/suppressions/ana@example.com", headers=writer)).status == 404


async def test_validation_scopes_and_isolation(client, shards, make_key, admin, redis):
    writer = await make_key(["write:suppressions"])
    cases = [
        ({"emails": ["ok@example.com", "nope"]}, "#/emails/1"),
        ({"email": "a@example.com", "emails": ["b@example.com"]}, "#/email"),
        ({}, "#/email"),
        ({"email": "a@example.com", "scope": "domain"}, "#/scope_value"),
        ({"email": "a@example.com", "scope": "domain", "scope_value": "bad..domain"}, "#/scope_value"),
        ({"email": "a@example.com", "scope": "list", "scope_value": "newsletter"}, "#/scope_value"),
        ({"email": "a@example.com", "scope_value": "acme.test"}, "#/scope_value"),
        ({"email": "a@example.com", "reason": "boredom"}, "#/reason"),
    ]
    for body, pointer in cases:
        response = await post(client, writer, **body)
        assert response.status == 422, body
        assert [e["pointer"] for e in (await response.json())["errors"]] == [pointer], body

    assert (await post(client, writer, email="g@example.com", scope="global")).status == 403
    assert (await client.get("/v1/suppressions?scope=global", headers=writer)).status == 403
    reader = await make_key(["read:suppressions"])
    assert (await post(client, reader, email="r@example.com")).status == 403
    # global entries are the operator's (`mailers suppressions global`): even an admin key is refused
    assert (await post(client, admin, email="g@example.com", scope="global")).status == 403
    await SuppressionStore(redis).add(
        GLOBAL, [SuppressionEntry(email="g@example.com", scope="global", reason="complaint")]
    )

    await post(client, writer, email="own@example.com")
    other = await make_key(["write:suppressions"], workspace="globex")
    assert (await (await client.get("/v1/suppressions", headers=other)).json())["data"] == []
    assert (await client.delete("/v1/suppressions/own@example.com", headers=other)).status == 404
    # the global entry applies to the other workspace too; its own entries do not leak
    assert await shards.check("globex", "globex.test", [], ["g@example.com", "own@example.com"]) == [
        Suppressed("g@example.com", "global", "complaint")
    ]
    assert (await client.get("/v1/suppressions", headers=reader)).status == 200
