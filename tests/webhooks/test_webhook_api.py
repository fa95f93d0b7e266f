"""The /v1/webhooks endpoints: CRUD, secrets shown once and sealed at rest, filters, SSRF checks, scopes."""

from __future__ import annotations

from schemas.webhooks import webhook_record_decoder
from security.secretbox import SecretBox
from store import keyspace
from store.webhooks import SECRET_PURPOSE
from tests.webhooks.conftest import LOOPBACK, WORKSPACE, create_endpoint

URL = "https://hooks.example.com/mailers"


async def test_create_shows_the_secret_once_and_get_list_never_do(api, writer):
    created = await create_endpoint(
        api, writer, "http://127.0.0.1:9/hook", ["message.*", "message.bounced"], description="CRM"
    )
    assert created["id"].startswith("whk_") and created["secret"].startswith("whsec_")
    assert created["events"] == ["message.*", "message.bounced"] and created["enabled"] is True
    got = await (await api.get(f"/v1/webhooks/{created['id']}", headers=writer)).json()
    assert "secret" not in got and got["description"] == "CRM" and got["object"] == "webhook"
    listed = await (await api.get("/v1/webhooks", headers=writer)).json()
    assert [w["id"] for w in listed["data"]] == [created["id"]] and "secret" not in listed["data"][0]


async def test_the_secret_is_sealed_at_rest(api, writer, redis):
    created = await create_endpoint(api, writer, "http://127.0.0.1:9/hook")
    rotated = await (await api.post(f"/v1/webhooks/{created['id']}/rotate-secret", headers=writer)).json()
    secrets = [created["secret"], rotated["secret"]]
    for key in await redis.keys("*"):
        raw = await _dump(redis, key)
        for secret in secrets:
            assert secret not in raw and secret.removeprefix("whsec_") not in raw, key
    record = await redis.get(keyspace.webhook(WORKSPACE, created["id"]))
    assert b"v1." in record  # the sealed form, which opens with the derived key
    box = SecretBox.from_master_key("s" * 40, SECRET_PURPOSE)
    decoded = webhook_record_decoder.decode(record)
    assert box.open(decoded.sealed_secret, created["id"].encode()).decode() == rotated["secret"]
    assert box.open(decoded.sealed_previous_secret, created["id"].encode()).decode() == created["secret"]


async def test_list_paginates_newest_first(api, writer):
    ids = [(await create_endpoint(api, writer, f"http://127.0.0.1:9/h{i}"))["id"] for i in range(3)]
    first = await (await api.get("/v1/webhooks?limit=2", headers=writer)).json()
    assert [w["id"] for w in first["data"]] == sorted(ids, reverse=True)[:2] and first["has_more"]
    second = await (
        await api.get(f"/v1/webhooks?limit=2&cursor={first['next_cursor']}", headers=writer)
    ).json()
    assert [w["id"] for w in second["data"]] == [ids[0]] and not second["has_more"]


async def test_patch_and_delete(api, writer):
    created = await create_endpoint(api, writer, "http://127.0.0.1:9/hook")
    path = f"/v1/webhooks/{created['id']}"
    patched = await (
        await api.patch(path, json={"enabled": False, "events": ["campaign.*"]}, headers=writer)
    ).json()
    assert patched["enabled"] is False and patched["events"] == ["campaign.*"] and patched["disabled_at"]
    enabled = await (await api.patch(path, json={"enabled": True}, headers=writer)).json()
    assert (
        enabled["enabled"] is True and enabled["disabled_at"] is None and enabled["disabled_reason"] is None
    )
    deleted = await api.delete(path, headers=writer)
    assert deleted.status == 200 and (await deleted.json())["deleted"] is True
    assert (await api.get(path, headers=writer)).status == 404


async def test_event_filters_are_validated(api, writer):
    for bad, index in ((["message.*", "message.exploded"], 1), (["mess*"], 0), (["nothing.*"], 0)):
        response = await api.post(
            "/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "events": bad}, headers=writer
        )
        assert response.status == 422
        problem = await response.json()
        assert problem["errors"][0]["pointer"] == f"#/events/{index}"
        assert problem["errors"][0]["code"] == "unknown_event_type"
    for good in (["*"], ["webhook.*"], ["message.delivered", "campaign.*"]):
        assert (
            await api.post(
                "/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "events": good}, headers=writer
            )
        ).status == 201


async def test_private_and_plain_http_urls_are_refused_unless_allowed(app_client, make_key):
    strict = await app_client()
    writer = await make_key(["write:webhooks"], workspace=WORKSPACE)
    for url, code in (
        ("http://127.0.0.1:9/h", "webhook_url_scheme"),
        ("https://127.0.0.1/h", "webhook_url_private_address"),
        ("https://localhost/h", "webhook_url_private_address"),
        ("https://10.1.2.3/h", "webhook_url_private_address"),
        ("https://user:pw@example.com/h", "webhook_url_invalid"),
    ):
        response = await strict.post("/v1/webhooks", json={"url": url, "events": ["*"]}, headers=writer)
        assert response.status == 422, url
        error = (await response.json())["errors"][0]
        assert (error["pointer"], error["code"]) == ("#/url", code), url
    created = await create_endpoint(strict, writer, "https://93.184.215.14/hook")
    patch = await strict.patch(
        f"/v1/webhooks/{created['id']}", json={"url": "https://[::1]/h"}, headers=writer
    )
    assert patch.status == 422 and (await patch.json())["errors"][0]["code"] == "webhook_url_private_address"
    relaxed = await app_client(**LOOPBACK)
    assert (
        await relaxed.post(
            "/v1/webhooks", json={"url": "http://localhost:9/h", "events": ["*"]}, headers=writer
        )
    ).status == 201


async def test_other_workspaces_see_nothing(api, make_key):
    acme = await make_key(["write:webhooks"], workspace=WORKSPACE)
    other = await make_key(["write:webhooks"], workspace="globex")
    created = await create_endpoint(api, acme, "http://127.0.0.1:9/hook")
    base = f"/v1/webhooks/{created['id']}"
    for method, path in (
        ("GET", base),
        ("PATCH", base),
        ("DELETE", base),
        ("POST", base + "/rotate-secret"),
        ("GET", base + "/deliveries"),
        ("POST", base + "/replay"),
    ):
        body = (
            {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"} if path.endswith("/replay") else {}
        )
        response = await api.request(method, path, json=body, headers=other)
        assert response.status == 404, (method, path)
    assert (await (await api.get("/v1/webhooks", headers=other)).json())["data"] == []
    assert (await api.get(base, headers=acme)).status == 200


async def test_scopes(api, make_key):
    reader = await make_key(["read:webhooks"], workspace=WORKSPACE)
    assert (await api.get("/v1/webhooks", headers=reader)).status == 200
    response = await api.post("/v1/webhooks", json={"url": URL, "events": ["*"]}, headers=reader)
    assert response.status == 403
    sender = await make_key(["send"], workspace=WORKSPACE)
    assert (await api.get("/v1/webhooks", headers=sender)).status == 403


async def test_replaying_an_unknown_delivery_or_a_bad_window(api, writer):
    created = await create_endpoint(api, writer, "http://127.0.0.1:9/hook")
    base = f"/v1/webhooks/{created['id']}"
    assert (
        await api.post(base + "/deliveries/dlv_01JS6Q8ZP3R5T9VXKMN2B4C7DE/replay", headers=writer)
    ).status == 404
    backwards = await api.post(
        base + "/replay", json={"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, headers=writer
    )
    assert backwards.status == 422 and (await backwards.json())["errors"][0]["pointer"] == "#/to"
    empty = await api.post(
        base + "/replay", json={"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}, headers=writer
    )
    assert empty.status == 202 and (await empty.json())["replayed"] == 0


async def _dump(redis, key: bytes) -> str:
    kind = (await redis.type(key)).decode()
    if kind == "string":
        return repr(await redis.get(key))
    if kind == "hash":
        return repr(await redis.hgetall(key))
    if kind == "zset":
        return repr(await redis.zrange(key, 0, -1))
    if kind == "list":
        return repr(await redis.lrange(key, 0, -1))
    if kind == "set":
        return repr(await redis.smembers(key))
    return repr(await redis.xrange(key)) if kind == "stream" else ""
