"""Finding: "A workspace admin can add, list and delete global suppressions, which affect every tenant.
Global scope is for the operator only (a separate operator key or CLI), never a workspace key."""

from __future__ import annotations

import redis

from ingress.cli import main
from store import keyspace
from store.suppressions import GLOBAL, meta_field


async def test_a_workspace_admin_can_add_list_and_delete_global_suppressions(client, admin, redis, workspace):
    # An entry the operator made: a workspace key may neither see nor lift it.
    field = meta_field("global", None, "g@example.com")
    await redis.hset(keyspace.suppression_meta(GLOBAL), field, b"x")
    await redis.sadd(keyspace.suppression_members(GLOBAL, "global", "-"), "g@example.com")
    refused = [
        await client.post(
            "/v1/suppressions", json={"email": "n@example.com", "scope": "global"}, headers=admin
        ),
        await client.get("/v1/suppressions?scope=global", headers=admin),
        await client.delete("/v1/suppressions/g@example.com?scope=global", headers=admin),
    ]
    for response in refused:
        assert response.status == 403, await response.text()
        assert "operator" in (await response.json())["detail"]
    assert not await redis.sismember(keyspace.suppression_members(GLOBAL, "global", "-"), "n@example.com")
    assert await redis.sismember(keyspace.suppression_members(GLOBAL, "global", "-"), "g@example.com")


def test_the_operator_manages_global_suppressions_with_the_cli(redis_url, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MAILERS_REDIS_URL", redis_url)
    monkeypatch.setenv("MAILERS_DATA_DIR", str(tmp_path))
    sync = redis.Redis.from_url(redis_url)
    sync.flushdb()
    members = keyspace.suppression_members(GLOBAL, "global", "-")
    try:
        assert main(["suppressions", "global", "add", "Op@Example.com", "--reason", "complaint"]) == 0
        assert sync.sismember(members, "op@example.com")
        assert main(["suppressions", "global", "list"]) == 0
        assert "op@example.com\tcomplaint\toperator" in capsys.readouterr().out
        assert main(["suppressions", "global", "remove", "op@example.com"]) == 0
        assert not sync.sismember(members, "op@example.com")
        assert main(["suppressions", "global", "add", "not-an-address"]) == 2
    finally:
        sync.close()
