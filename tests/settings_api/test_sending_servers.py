"""Sending servers over HTTP: validation pointers, sealed secrets, PATCH merges, isolation, paging."""

from __future__ import annotations

from ingress.context import SERVICES
from schemas.inbound_config import InboundConfig
from store.servers import ServerStore, ensure_sandbox_server

SMTP = {"host": "smtp.acme.test", "port": 2525, "username": "relay", "password": "hunter2-very-secret"}


async def create(client, headers, **fields):
    body = {"name": "Relay", "provider": "smtp", "config": dict(SMTP), **fields}
    return await client.post("/v1/sending-servers", json=body, headers=headers)


async def test_create_get_list_never_return_or_store_secrets(workspace, client, admin, redis):
    response = await create(
        client,
        admin,
        quotas={"per_second": 5, "per_day": 1000},
        recipient_domain_limits={"Gmail.COM": {"per_minute": 60}},
        domains=["Acme.test"],
        inbound={"mailgun_signing_key": "inbound-secret-xyz"},
    )
    assert response.status == 201, await response.text()
    server = await response.json()
    assert server["id"].startswith("srv_") and server["object"] == "sending_server"
    assert server["config"] == {"host": "smtp.acme.test", "port": 2525, "username": "relay"}
    assert server["secret_fields_set"] == ["password"]
    assert server["inbound_fields_set"] == ["mailgun_signing_key"]
    assert server["quotas"] == {"per_second": 5.0, "per_day": 1000}
    assert server["recipient_domain_limits"] == {"gmail.com": {"per_minute": 60}}
    assert server["domains"] == ["acme.test"] and server["status"] == "healthy"
    fetched = await (await client.get(f"/v1/sending-servers/{server['id']}", headers=admin)).json()
    listed = await (await client.get("/v1/sending-servers", headers=admin)).json()
    assert fetched == server and listed["data"] == [server]
    for text in (str(fetched), str(listed)):
        assert "hunter2" not in text and "inbound-secret" not in text
    async for key in redis.scan_iter("*"):
        raw = await redis.dump(key)
        assert b"hunter2" not in raw and b"inbound-secret" not in raw, key
    store = ServerStore.for_settings(redis, client.app[SERVICES].settings)
    record = await store.get(workspace, server["id"])
    config = store.open_config(record)
    assert (config.host, config.port, config.password) == ("smtp.acme.test", 2525, "hunter2-very-secret")
    assert store.open_inbound(record) == InboundConfig(mailgun_signing_key="inbound-secret-xyz")


async def test_validation_pointers(client, admin):
    cases = [
        ({"config": {"port": 25}}, "#/config/host"),
        ({"config": {**SMTP, "port": "x"}}, "#/config/port"),
        ({"config": {**SMTP, "colour": "red"}}, "#/config/colour"),
        ({"quotas": {"per_minute": 0}}, "#/quotas/per_minute"),
        ({"domains": ["ok.test", "bad..test"]}, "#/domains/1"),
        ({"inbound": {"mailgun_signing_key": 5}}, "#/inbound/mailgun_signing_key"),
        ({"provider": "carrier-pigeon"}, "#/provider"),
        ({"unknown": 1}, "#/unknown"),
    ]
    for fields, pointer in cases:
        response = await create(client, admin, **fields)
        assert response.status == 422, fields
        problem = await response.json()
        assert problem["code"] == "validation_error"
        assert [e["pointer"] for e in problem["errors"]] == [pointer], (fields, problem)


async def test_missing_provider_module_is_422(client, admin, monkeypatch):
    from providers import registry

    monkeypatch.setitem(registry.MODULES, "postmark", "providers.not_written_yet")
    response = await create(client, admin, provider="postmark", config={"server_token": "t"})
    assert response.status == 422
    assert (await response.json())["errors"][0]["pointer"] == "#/provider"


async def test_patch_merges_config_and_keeps_secrets(workspace, client, admin, redis):
    server = await (await create(client, admin, priority=5)).json()
    url = f"/v1/sending-servers/{server['id']}"
    response = await client.patch(
        url, json={"config": {"port": 587, "username": None}, "name": "Main"}, headers=admin
    )
    assert response.status == 200, await response.text()
    patched = await response.json()
    assert patched["config"] == {"host": "smtp.acme.test", "port": 587}
    assert (
        patched["secret_fields_set"] == ["password"]
        and patched["name"] == "Main"
        and patched["priority"] == 5
    )
    assert patched["updated_at"] > server["updated_at"] and patched["created_at"] == server["created_at"]
    store = ServerStore.for_settings(redis, client.app[SERVICES].settings)
    config = store.open_config(await store.get(workspace, server["id"]))
    assert (config.password, config.username, config.port) == ("hunter2-very-secret", None, 587)
    bad = await client.patch(url, json={"config": {"host": None}}, headers=admin)
    assert bad.status == 422 and (await bad.json())["errors"][0]["pointer"] == "#/config/host"
    assert (await (await client.get(url, headers=admin)).json())["config"]["port"] == 587


async def test_other_workspace_sees_404_and_scopes_apply(client, admin, make_key):
    server = await (await create(client, admin)).json()
    url = f"/v1/sending-servers/{server['id']}"
    other = await make_key(["write:settings"], workspace="globex")
    assert (await client.get(url, headers=other)).status == 404
    assert (await client.patch(url, json={"name": "x"}, headers=other)).status == 404
    assert (await client.delete(url, headers=other)).status == 404
    assert (await (await client.get("/v1/sending-servers", headers=other)).json())["data"] == []
    reader = await make_key(["read:settings"])
    assert (await client.get(url, headers=reader)).status == 200
    assert (await create(client, reader)).status == 403
    deleted = await client.delete(url, headers=admin)
    assert deleted.status == 200 and (await deleted.json())["deleted"] is True
    assert (await client.get(url, headers=admin)).status == 404


async def test_pagination_newest_first(client, admin):
    ids = [(await (await create(client, admin, name=f"s{i}")).json())["id"] for i in range(5)]
    page = await (await client.get("/v1/sending-servers?limit=2", headers=admin)).json()
    seen = [s["id"] for s in page["data"]]
    while page["has_more"]:
        page = await (
            await client.get(f"/v1/sending-servers?limit=2&cursor={page['next_cursor']}", headers=admin)
        ).json()
        seen += [s["id"] for s in page["data"]]
    assert seen == sorted(ids, reverse=True)


async def test_status_is_reported_and_sandbox_is_created_once(workspace, client, admin, redis):
    store = ServerStore.for_settings(redis, client.app[SERVICES].settings)
    first = await ensure_sandbox_server(store, workspace)
    assert await ensure_sandbox_server(store, workspace) == first
    assert [r.id for r in await store.list(workspace)] == [first.id] and first.provider == "sandbox"
    assert await store.set_status(first.id, "down") is True
    assert await store.set_status(first.id, "down") is False
    assert (await store.statuses([first.id, "srv_none"])) == {first.id: "down", "srv_none": "healthy"}
    shown = await (await client.get(f"/v1/sending-servers/{first.id}", headers=admin)).json()
    assert shown["status"] == "down" and shown["provider"] == "sandbox"
    assert (await store.get_by_id(first.id)).workspace == workspace
    await store.delete(workspace, first.id)
    assert await ensure_sandbox_server(store, workspace) is None
