"""Routing rules over HTTP, target checks, the 409 on deleting a targeted server, the routing cache."""

from __future__ import annotations

import asyncio
import random
import time

from aiohttp import web

from actors.policies.routing import MessageFacts, choose_servers
from ingress.context import SERVICES
from store.servers import ServerStore
from store.workspace_routing import WorkspaceRoutingCache

ROUTING_CACHE: web.AppKey[WorkspaceRoutingCache] = web.AppKey("test_routing_cache", WorkspaceRoutingCache)


async def new_server(client, headers, name="s", **fields):
    body = {"name": name, "provider": "sandbox", **fields}
    response = await client.post("/v1/sending-servers", json=body, headers=headers)
    assert response.status == 201, await response.text()
    return (await response.json())["id"]


async def new_rule(client, headers, targets, **fields):
    body = {"name": "r", "targets": [{"server": t} for t in targets], **fields}
    return await client.post("/v1/routing/rules", json=body, headers=headers)


async def test_rule_crud_and_patch(client, admin):
    a, b = await new_server(client, admin, "a"), await new_server(client, admin, "b")
    response = await new_rule(
        client,
        admin,
        [a],
        priority=10,
        strategy="priority",
        match={"purpose": "transactional", "from_domains": ["Acme.TEST", "*.acme.test"]},
    )
    assert response.status == 201, await response.text()
    rule = await response.json()
    assert rule["object"] == "routing_rule" and rule["id"].startswith("rul_")
    assert rule["match"] == {
        "purpose": "transactional",
        "from_domains": ["*.acme.test", "acme.test"],
        "to_domains": [],
        "tags": [],
    }
    assert rule["targets"] == [{"server": a, "weight": 1}] and rule["fallback"] is True
    url = f"/v1/routing/rules/{rule['id']}"
    assert await (await client.get(url, headers=admin)).json() == rule
    patch = {"strategy": "weighted", "targets": [{"server": b, "weight": 3}, {"server": a, "weight": 1}]}
    patched = await (await client.patch(url, json=patch, headers=admin)).json()
    assert (
        patched["strategy"] == "weighted" and patched["priority"] == 10 and patched["match"] == rule["match"]
    )
    assert [t["server"] for t in patched["targets"]] == [b, a]
    # a is still targeted; after the rule stops targeting b, b may be deleted
    assert (await client.delete(f"/v1/sending-servers/{b}", headers=admin)).status == 409
    await client.patch(url, json={"targets": [{"server": a}]}, headers=admin)
    assert (await client.delete(f"/v1/sending-servers/{b}", headers=admin)).status == 200
    conflict = await client.delete(f"/v1/sending-servers/{a}", headers=admin)
    assert conflict.status == 409 and (await conflict.json())["code"] == "conflict"
    assert rule["id"] in (await conflict.json())["detail"]
    assert (await client.delete(url, headers=admin)).status == 200
    assert (await client.get(url, headers=admin)).status == 404
    assert (await client.delete(f"/v1/sending-servers/{a}", headers=admin)).status == 200


async def test_rule_validation_pointers(client, admin, make_key):
    a = await new_server(client, admin)
    foreign = await new_server(client, await make_key(["admin"], workspace="globex"))
    cases = [
        ({"targets": [{"server": a}, {"server": "srv_missing"}]}, "#/targets/1/server"),
        ({"targets": [{"server": foreign}]}, "#/targets/0/server"),
        ({"targets": [{"server": a}, {"server": a}]}, "#/targets/1/server"),
        ({"targets": []}, "#/targets"),
        ({"targets": [{"server": a, "weight": 0}], "strategy": "weighted"}, "#/targets"),
        ({"targets": [{"server": a}], "match": {"to_domains": ["ok.test", "a..b"]}}, "#/match/to_domains/1"),
        ({"targets": [{"server": a}], "strategy": "random"}, "#/strategy"),
    ]
    for fields, pointer in cases:
        response = await client.post("/v1/routing/rules", json={"name": "r", **fields}, headers=admin)
        assert response.status == 422, fields
        assert [e["pointer"] for e in (await response.json())["errors"]] == [pointer], fields
    rule = await (await new_rule(client, admin, [a])).json()
    bad = await client.patch(
        f"/v1/routing/rules/{rule['id']}", json={"targets": [{"server": "srv_x"}]}, headers=admin
    )
    assert bad.status == 422 and (await bad.json())["errors"][0]["pointer"] == "#/targets/0/server"


async def test_rules_are_per_workspace_and_paginated(client, admin, make_key):
    a = await new_server(client, admin)
    ids = [(await (await new_rule(client, admin, [a], name=f"r{i}")).json())["id"] for i in range(3)]
    page = await (await client.get("/v1/routing/rules?limit=2", headers=admin)).json()
    rest = await (await client.get(f"/v1/routing/rules?cursor={page['next_cursor']}", headers=admin)).json()
    assert [r["id"] for r in page["data"] + rest["data"]] == sorted(ids, reverse=True)
    assert rest["has_more"] is False
    other = await make_key(["write:settings"], workspace="globex")
    assert (await client.get(f"/v1/routing/rules/{ids[0]}", headers=other)).status == 404
    assert (
        await client.patch(f"/v1/routing/rules/{ids[0]}", json={"name": "x"}, headers=other)
    ).status == 404
    assert (await client.delete(f"/v1/routing/rules/{ids[0]}", headers=other)).status == 404
    reader = await make_key(["read:settings"])
    assert (await new_rule(client, reader, [a])).status == 403


def with_routing_cache(app: web.Application) -> None:
    async def cache_ctx(app: web.Application):
        cache = WorkspaceRoutingCache(app[SERVICES].redis, ttl=60.0)
        ready = asyncio.Event()
        task = asyncio.create_task(cache.listen(ready))
        await asyncio.wait_for(ready.wait(), 5)
        app[ROUTING_CACHE] = cache
        yield
        task.cancel()

    app.cleanup_ctx.append(cache_ctx)


async def eventually(predicate, within: float = 1.0):
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "not seen within the deadline"
        await asyncio.sleep(0.01)


async def test_routing_cache_invalidates_across_app_instances_within_a_second(
    app_client, admin, redis, workspace
):
    one, two = await app_client(app_hook=with_routing_cache), await app_client(app_hook=with_routing_cache)
    cache = two.app[ROUTING_CACHE]
    assert (await cache.get(workspace)).servers == []
    loads = cache.loads
    assert (await cache.get(workspace)).servers == [] and cache.loads == loads  # served from memory

    primary = await new_server(one, admin, "primary", priority=10, domains=["acme.test"])
    backup = await new_server(one, admin, "backup", priority=20)

    async def sees_both():
        return {s.id for s in (await cache.get(workspace)).servers} == {primary, backup}

    await eventually(sees_both)
    rule = await (await new_rule(one, admin, [backup], match={"tags": ["bulk"]}, fallback=False)).json()

    async def sees_rule():
        return [r.id for r in (await cache.get(workspace)).rules] == [rule["id"]]

    await eventually(sees_rule)
    snapshot = await cache.get(workspace)
    facts = MessageFacts(purpose=None, from_domain="acme.test", to_domains=["x.test"], tags=["bulk"])
    assert choose_servers(facts, snapshot.rules, snapshot.servers, rng=random.Random(1)).candidates == [
        backup
    ]
    plain = MessageFacts(purpose=None, from_domain="acme.test", to_domains=["x.test"])
    assert choose_servers(plain, snapshot.rules, snapshot.servers, rng=random.Random(1)).candidates == [
        primary,
        backup,
    ]
    assert snapshot.records[primary].name == "primary"

    await ServerStore(redis).set_status(primary, "down")

    async def sees_down():
        views = {s.id: s.status for s in (await cache.get(workspace)).servers}
        return views[primary] == "down"

    await eventually(sees_down)
    await one.patch(f"/v1/sending-servers/{backup}", json={"priority": 5}, headers=admin)

    async def sees_priority():
        return {s.id: s.priority for s in (await cache.get(workspace)).servers}[backup] == 5

    await eventually(sees_priority)
