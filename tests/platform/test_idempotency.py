"""Idempotency-Key: replay, reuse with another body, in-flight conflicts, retention."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from ingress.idempotency import parse_key
from ingress.problems import ApiError
from store.api_keys import ApiKeyStore

BODY = {"name": "idem", "scopes": ["send"]}


async def test_same_key_same_body_replays_byte_for_byte(client, admin, redis, workspace):
    headers = {**admin, "Idempotency-Key": "create-1"}
    first = await client.post("/v1/api-keys", json=BODY, headers=headers)
    second = await client.post("/v1/api-keys", json={"scopes": ["send"], "name": "idem"}, headers=headers)
    assert first.status == second.status == 201
    assert await first.read() == await second.read()
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Request-Id"] != first.headers["Request-Id"]
    assert await ApiKeyStore(redis).count(workspace) == 2  # the admin key and exactly one new key


async def test_same_key_other_body_is_422(client, admin):
    headers = {**admin, "Idempotency-Key": "create-2"}
    assert (await client.post("/v1/api-keys", json=BODY, headers=headers)).status == 201
    other = await client.post("/v1/api-keys", json={**BODY, "name": "other"}, headers=headers)
    assert other.status == 422 and (await other.json())["code"] == "idempotency_key_reused"


async def test_scope_is_workspace_method_and_path(client, make_key):
    acme, globex = await make_key(["admin"], workspace="acme"), await make_key(["admin"], workspace="globex")
    for headers in (acme, globex):
        response = await client.post(
            "/v1/api-keys", json=BODY, headers={**headers, "Idempotency-Key": "shared"}
        )
        assert response.status == 201 and "Idempotent-Replayed" not in response.headers


async def test_validation_failures_are_not_stored(client, admin):
    headers = {**admin, "Idempotency-Key": "fix-me"}
    bad = await client.post("/v1/api-keys", json={"name": "x", "scopes": []}, headers=headers)
    assert bad.status == 422
    fixed = await client.post("/v1/api-keys", json=BODY, headers=headers)
    assert fixed.status == 201 and "Idempotent-Replayed" not in fixed.headers


async def test_errors_after_execution_began_are_replayed(client, admin):
    headers = {**admin, "Idempotency-Key": "missing-key"}
    first = await client.delete("/v1/api-keys/key_01AAAAAAAAAAAAAAAAAAAAAAAA", headers=headers)
    second = await client.delete("/v1/api-keys/key_01AAAAAAAAAAAAAAAAAAAAAAAA", headers=headers)
    assert first.status == second.status == 404
    assert second.headers["Idempotent-Replayed"] == "true"
    assert await first.read() == await second.read()


async def test_twenty_concurrent_identical_requests_execute_once(app_client, admin):
    executions = 0
    gate = asyncio.Event()

    async def slow_create(request: web.Request) -> web.Response:
        nonlocal executions
        executions += 1
        await gate.wait()
        return web.json_response({"executions": executions}, status=201)

    def hook(app: web.Application) -> None:
        from ingress.routing import RouteTable

        table = RouteTable()
        table.route("POST", "/v1/test-slow", scope="send", summary="", tag="test")(slow_create)
        table.add_to(app)

    client = await app_client(app_hook=hook)
    headers = {**admin, "Idempotency-Key": "together"}
    requests = [
        asyncio.create_task(client.post("/v1/test-slow", json={"a": 1}, headers=headers)) for _ in range(20)
    ]
    # The 19 that lose the race are refused while the winner waits at the gate; open it only then.
    waiting = set(requests)
    async with asyncio.timeout(30):
        while len(waiting) > 1:
            _, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    gate.set()
    answers = await asyncio.gather(*requests)
    statuses = sorted(a.status for a in answers)
    assert executions == 1
    assert statuses.count(201) == 1 and statuses.count(409) == 19
    conflict = next(a for a in answers if a.status == 409)
    assert conflict.headers["Retry-After"] == "1"
    assert (await conflict.json())["code"] == "idempotency_key_in_use"
    replay = await client.post("/v1/test-slow", json={"a": 1}, headers=headers)
    assert replay.status == 201 and replay.headers["Idempotent-Replayed"] == "true" and executions == 1


async def test_records_expire_after_retention(app_client, admin):
    client = await app_client(idempotency_retention_seconds=1)
    headers = {**admin, "Idempotency-Key": "short-lived"}
    first = await (await client.post("/v1/api-keys", json=BODY, headers=headers)).json()
    await asyncio.sleep(1.3)
    again = await client.post("/v1/api-keys", json=BODY, headers=headers)
    assert again.status == 201 and "Idempotent-Replayed" not in again.headers
    assert (await again.json())["id"] != first["id"]


async def test_get_ignores_the_header(client, admin):
    response = await client.get("/v1/api-keys", headers={**admin, "Idempotency-Key": "x"})
    assert response.status == 200 and "Idempotent-Replayed" not in response.headers


@pytest.mark.parametrize(
    "raw,key",
    [
        ("abc", "abc"),
        ('"quoted key"', "quoted key"),
        ("a b", "a b"),
        ('"with \\"escape\\""', 'with "escape"'),
        ("x" * 255, "x" * 255),
    ],
)
def test_key_forms(raw, key):
    assert parse_key(raw) == key


@pytest.mark.parametrize("raw", ["", " lead", "x" * 256, "caf\u00e9", "tab\there", '""'])
def test_bad_keys(raw):
    with pytest.raises(ApiError) as refused:
        parse_key(raw)
    assert refused.value.code == "invalid_idempotency_key"


async def test_stored_answers_do_not_keep_secrets_in_plaintext(client, admin, redis):
    headers = {**admin, "Idempotency-Key": "secret-once"}
    created = await (await client.post("/v1/api-keys", json=BODY, headers=headers)).json()
    secret = created["secret"].encode()
    async for key in redis.scan_iter(match="m:*:idem:*"):
        assert secret not in repr(await redis.hgetall(key)).encode()
    replay = await (await client.post("/v1/api-keys", json=BODY, headers=headers)).json()
    assert replay["secret"] == created["secret"]
