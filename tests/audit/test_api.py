"""GET /v1/audit-logs (filters, pages, NDJSON export, isolation) and the public key, on the real app."""

from __future__ import annotations

import base64
import json

import msgspec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ingress.routes.audit_logs import AUDIT_READER
from security.audit_checkpoint import AuditCheckpoint, sign_checkpoint, signature_problem
from store.audit_checkpoints import CheckpointLog
from tests.audit.conftest import drain


async def audited_client(app_client, duck_store):
    return await app_client(app_hook=lambda app: app.__setitem__(AUDIT_READER, duck_store))


async def test_filters_and_pages_newest_first(app_client, duck_store, make_sink, make_key):
    client = await audited_client(app_client, duck_store)
    reader, sender = await make_key(["read:audit"]), await make_key(["send"])
    for _ in range(3):
        assert (await client.get("/v1/api-keys", headers=sender)).status == 403
    for _ in range(4):
        assert (await client.get("/v1/audit-logs/public-key", headers=reader)).status == 200
    await drain(make_sink(duck_store))
    pages, cursor = [], None
    while True:
        params = {
            "limit": "3",
            "action": "GET /v1/audit-logs/public-key",
            **({"cursor": cursor} if cursor else {}),
        }
        answer = await client.get("/v1/audit-logs", params=params, headers=reader)
        body = await answer.json()
        pages.append([e["seq"] for e in body["data"]])
        if not body["has_more"]:
            assert body["next_cursor"] is None and "Link" not in answer.headers
            break
        cursor = body["next_cursor"]
        assert answer.headers["Link"].endswith('rel="next"')
    assert pages == [[7, 6, 5], [4]]
    forbidden = await (await client.get("/v1/audit-logs", params={"status": "403"}, headers=reader)).json()
    assert [(e["seq"], e["action"], e["status"]) for e in forbidden["data"]] == [
        (s, "GET /v1/api-keys", 403) for s in (3, 2, 1)
    ]
    by_key = await (
        await client.get("/v1/audit-logs", params={"key_id": forbidden["data"][0]["key_id"]}, headers=reader)
    ).json()
    assert len(by_key["data"]) == 3


async def test_time_window_and_cursor_checks(app_client, duck_store, make_sink, make_key):
    client = await audited_client(app_client, duck_store)
    reader = await make_key(["read:audit"])
    await client.get("/v1/audit-logs/public-key", headers=reader)
    await drain(make_sink(duck_store))
    [first] = (await (await client.get("/v1/audit-logs", headers=reader)).json())["data"]
    window = await client.get(
        "/v1/audit-logs", params={"from": first["time"], "to": "2100-01-01T00:00:00Z"}, headers=reader
    )
    assert [e["id"] for e in (await window.json())["data"]] == [first["id"]]
    before = await client.get("/v1/audit-logs", params={"to": first["time"]}, headers=reader)
    assert (await before.json())["data"] == []
    backwards = await client.get(
        "/v1/audit-logs",
        params={"from": "2030-01-02T00:00:00Z", "to": "2030-01-01T00:00:00Z"},
        headers=reader,
    )
    assert backwards.status == 422
    await drain(make_sink(duck_store))
    page = await (await client.get("/v1/audit-logs", params={"limit": "1"}, headers=reader)).json()
    reused = await client.get(
        "/v1/audit-logs", params={"cursor": page["next_cursor"], "status": "200"}, headers=reader
    )
    assert reused.status == 400 and (await reused.json())["code"] == "invalid_cursor"


async def test_ndjson_export_streams_every_matching_entry_oldest_first(
    app_client, duck_store, make_sink, make_key
):
    client = await audited_client(app_client, duck_store)
    reader = await make_key(["read:audit"])
    for _ in range(5):
        await client.get("/v1/audit-logs/public-key", headers=reader)
    await drain(make_sink(duck_store))
    answer = await client.get(
        "/v1/audit-logs", params={"status": "200"}, headers={**reader, "Accept": "application/x-ndjson"}
    )
    assert answer.status == 200 and answer.headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in (await answer.text()).splitlines()]
    assert [e["seq"] for e in lines] == [1, 2, 3, 4, 5]
    assert all(e["hash"] and e["signature"] and e["prev_hash"] for e in lines)


async def test_the_public_key_verifies_a_stored_signature(app_client, duck_store, make_sink, make_key):
    client = await audited_client(app_client, duck_store)
    reader = await make_key(["read:audit"])
    published = await (await client.get("/v1/audit-logs/public-key", headers=reader)).json()
    await drain(make_sink(duck_store))
    [stored] = (await (await client.get("/v1/audit-logs", headers=reader)).json())["data"]
    key = load_pem_public_key(published["public_key_pem"].encode())
    key.verify(
        base64.b64decode(stored["signature"]), stored["hash"].encode()
    )  # raises when it does not verify
    assert published["algorithm"] == "Ed25519" and len(base64.b64decode(published["public_key"])) == 32


async def test_a_workspace_never_sees_another_workspaces_entries(
    app_client, duck_store, make_sink, make_key, workspace
):
    client = await audited_client(app_client, duck_store)
    mine, theirs = await make_key(["read:audit"]), await make_key(["admin"], workspace=workspace + "-b")
    for _ in range(3):
        await client.get("/v1/api-keys", headers=theirs)
    await client.get("/v1/audit-logs/public-key", headers=mine)
    await drain(make_sink(duck_store))
    seen = (await (await client.get("/v1/audit-logs", headers=mine)).json())["data"]
    assert {e["workspace"] for e in seen} == {workspace} and len(seen) == 1
    export = await client.get("/v1/audit-logs", headers={**mine, "Accept": "application/x-ndjson"})
    assert {json.loads(line)["workspace"] for line in (await export.text()).splitlines()} == {workspace}
    theirs_seen = (await (await client.get("/v1/audit-logs", headers=theirs)).json())["data"]
    assert [e["action"] for e in theirs_seen] == ["GET /v1/api-keys"] * 3


async def test_reading_needs_the_read_audit_scope(client, make_key):
    assert (await client.get("/v1/audit-logs", headers=await make_key(["send"]))).status == 403
    assert (await client.get("/v1/audit-logs/public-key", headers=await make_key(["send"]))).status == 403


async def test_checkpoints_latest_and_history_pages(
    app_client, redis, duck_store, make_key, workspace, signer
):
    client = await audited_client(app_client, duck_store)
    reader, sender = await make_key(["read:audit"]), await make_key(["send"])
    log = CheckpointLog(redis)
    signed = [
        sign_checkpoint(workspace, seq, f"{seq:064x}", 1_776_593_000.0 + seq, signer) for seq in range(1, 6)
    ]
    await log.publish([*signed, sign_checkpoint("elsewhere", 9, "ab" * 32, 0.0, signer)], outbox=False)
    pages, cursor = [], None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        answer = await client.get("/v1/audit-logs/checkpoints", params=params, headers=reader)
        assert answer.status == 200
        body = await answer.json()
        assert body["latest"] == msgspec.to_builtins(signed[-1])
        pages.append([c["seq"] for c in body["data"]])
        if not body["has_more"]:
            break
        cursor = body["next_cursor"]
        assert answer.headers["Link"].endswith('rel="next"')
    assert pages == [[5, 4], [3, 2], [1]]
    assert (await client.get("/v1/audit-logs/checkpoints", headers=sender)).status == 403
    bad = await client.get("/v1/audit-logs/checkpoints", params={"cursor": "nope"}, headers=reader)
    assert bad.status == 400 and (await bad.json())["code"] == "invalid_cursor"


async def test_a_published_checkpoint_verifies_with_the_public_key(
    app_client, duck_store, make_sink, make_key
):
    client = await audited_client(app_client, duck_store)
    reader = await make_key(["read:audit"])
    published = await (await client.get("/v1/audit-logs/public-key", headers=reader)).json()
    await drain(make_sink(duck_store))
    body = await (await client.get("/v1/audit-logs/checkpoints", headers=reader)).json()
    latest = msgspec.convert(body["latest"], AuditCheckpoint)
    assert latest.seq == 1 and [c["seq"] for c in body["data"]] == [1] and body["next_cursor"] is None
    keys = {published["key_id"]: published["public_key_pem"].encode()}
    assert signature_problem(latest, keys) is None
