"""Migrations apply once, in order, and re-running them (or reopening the store) changes nothing."""

from __future__ import annotations

import clickhouse_connect
import duckdb

from analytics.migrations import load
from analytics.store import open_store
from tests.analytics.conftest import store_url


def test_migration_files_are_numbered_and_split():
    for backend in ("duckdb", "clickhouse"):
        migrations = load(backend)
        assert [m.version for m in migrations] == sorted({m.version for m in migrations})
        assert migrations[0].version == 1 and migrations[0].name == "events"
        assert any("CREATE TABLE IF NOT EXISTS events" in s for s in migrations[0].statements)


async def test_duckdb_migrations_are_idempotent(tmp_path, chdb_path):
    url = store_url("duckdb", tmp_path, chdb_path)
    for _ in range(2):
        store = open_store(url)
        assert await store.migrate() == [m.version for m in load("duckdb")]
        assert await store.migrate() == [m.version for m in load("duckdb")]
        await store.close()
    with duckdb.connect(url.removeprefix("duckdb://"), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM schema_migrations").fetchone() == (len(load("duckdb")),)
        primary = db.execute(
            "SELECT constraint_column_names FROM duckdb_constraints() "
            "WHERE table_name = 'events' AND constraint_type = 'PRIMARY KEY'"
        ).fetchone()
        assert primary == (["id"],)


async def test_clickhouse_migrations_are_idempotent_and_set_the_ttl(tmp_path, chdb_path):
    url = store_url("chdb", tmp_path, chdb_path)
    database = url.rpartition("database=")[2]
    for _ in range(2):
        store = open_store(url, retention_days=400)
        assert await store.migrate() == [m.version for m in load("clickhouse")]
        assert await store.migrate() == [m.version for m in load("clickhouse")]
        await store.close()
    client = clickhouse_connect.get_client(interface="chdb", path=str(chdb_path), database=database)
    try:
        assert client.query("SELECT count() FROM schema_migrations FINAL").result_rows == [
            (len(load("clickhouse")),)
        ]
        engine = client.query(
            "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = 'events'",
            parameters={"db": database},
        ).result_rows[0][0]
    finally:
        client.close()
    assert engine.startswith("ReplacingMergeTree")
    assert "PARTITION BY toYYYYMM(created_at)" in engine and "ORDER BY (workspace, created_at, id)" in engine
    assert "TTL toDateTime(created_at) + toIntervalDay(400)" in engine


async def test_duckdb_retention_purges_old_events(tmp_path, chdb_path):
    from datetime import timedelta

    from tests.analytics.events_factory import NOW, event

    store = open_store(store_url("duckdb", tmp_path, chdb_path))
    await store.migrate()
    await store.insert([event("message.sent", NOW - timedelta(days=d)) for d in (1, 10, 400, 500)])
    assert await store.purge_expired(timedelta(days=365), now=NOW) == 2
    timeline = await store.message_events("acme", "msg_a")
    await store.close()
    assert [e.created_at for e in timeline] == [NOW - timedelta(days=10), NOW - timedelta(days=1)]
