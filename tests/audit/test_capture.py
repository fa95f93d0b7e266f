"""Every request to an authenticated route leaves one unchained entry in `m:audit`, refused ones too."""

from __future__ import annotations

from ingress.audit import UNAUTHENTICATED
from store.api_keys import ApiKeyStore, display_prefix
from tests.audit.conftest import stream_entries


async def test_a_created_key_is_recorded_with_its_id(client, admin, redis, workspace):
    created = await client.post(
        "/v1/api-keys",
        json={"name": "ci", "scopes": ["send"]},
        headers={**admin, "User-Agent": "audit-test/1"},
    )
    assert created.status == 201
    body = await created.json()
    [entry] = await stream_entries(redis)
    assert entry.workspace == workspace and entry.action == "POST /v1/api-keys" and entry.status == 201
    assert entry.resource_id == body["id"] and entry.request_id == created.headers["Request-Id"]
    assert entry.key_prefix == display_prefix(admin["Authorization"].removeprefix("Bearer "))
    assert entry.key_id is not None and entry.key_id != body["id"]
    assert entry.ip == "127.0.0.1" and entry.user_agent == "audit-test/1"
    assert entry.id.startswith("aud_") and entry.time.endswith("Z") and entry.seq == 0 and entry.hash == ""


async def test_a_forbidden_request_is_recorded_with_the_path_id(client, make_key, redis, workspace):
    sender = await make_key(["send"])
    refused = await client.delete("/v1/api-keys/key_01ABC", headers=sender)
    assert refused.status == 403
    [entry] = await stream_entries(redis)
    assert (entry.workspace, entry.action, entry.status) == (workspace, "DELETE /v1/api-keys/{id}", 403)
    assert entry.resource_id == "key_01ABC" and entry.request_id == refused.headers["Request-Id"]
    assert entry.key_id is not None and entry.key_prefix == display_prefix(sender["Authorization"][7:])


async def test_a_revoked_key_is_recorded_in_its_workspace(client, admin, make_key, redis, workspace):
    secret = (await make_key(["read:audit"]))["Authorization"][7:]
    keys = ApiKeyStore(redis)
    [record] = [
        r for r in (await keys.page(workspace, limit=10, after=None))[0] if r.prefix == display_prefix(secret)
    ]
    record.state = "revoked"
    await keys.save(record)
    refused = await client.get("/v1/audit-logs", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status == 401
    [entry] = await stream_entries(redis)
    assert (entry.workspace, entry.key_id, entry.key_prefix) == (workspace, record.id, display_prefix(secret))
    assert (entry.action, entry.status) == ("GET /v1/audit-logs", 401)


async def test_unknown_keys_go_to_the_unauthenticated_log_with_their_prefix(client, redis):
    assert (
        await client.get("/v1/audit-logs", headers={"Authorization": "Bearer mk_notarealkey123"})
    ).status == 401
    assert (
        await client.get("/v1/audit-logs", headers={"Authorization": "Bearer hunter2-password"})
    ).status == 401
    assert (await client.get("/v1/audit-logs")).status == 401
    entries = await stream_entries(redis)
    assert [(e.workspace, e.key_prefix, e.key_id, e.status) for e in entries] == [
        (UNAUTHENTICATED, "mk_notareal", None, 401),
        (UNAUTHENTICATED, None, None, 401),
        (UNAUTHENTICATED, None, None, 401),
    ]


async def test_routes_without_auth_and_unknown_paths_are_not_recorded(client, redis):
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/v1/nothing-here")).status == 404
    assert await stream_entries(redis) == []


async def test_an_error_answer_is_recorded_with_the_status_the_client_got(client, admin, redis):
    answer = await client.post(
        "/v1/api-keys", data=b"{", headers={**admin, "Content-Type": "application/json"}
    )
    assert answer.status == 400
    [entry] = await stream_entries(redis)
    assert (entry.action, entry.status, entry.resource_id) == ("POST /v1/api-keys", 400, None)
