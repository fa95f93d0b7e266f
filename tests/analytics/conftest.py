"""Analytics stores on real engines: DuckDB in a temporary file, ClickHouse through embedded chDB.

chDB allows one engine path per process, so the session shares one path and each test gets its own
database in it. Migrating a new chDB database costs seconds (tables, views, TTLs), so the `store` and `both`
fixtures hand a test's database, emptied, to the next test (`_reused`): migrated once, truncated after.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from analytics.store import AnalyticsStore, open_store

BACKENDS = ["duckdb", "chdb"]
_EMPTIED: list[str] = []  # chDB databases migrated, used by one test and truncated: the next one's


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


def store_url(backend: str, tmp_path: Path, chdb_path: Path) -> str:
    if backend == "duckdb":
        return f"duckdb://{tmp_path / f'analytics-{uuid.uuid4().hex[:8]}.duckdb'}"
    return f"chdb://{chdb_path}?database=t_{uuid.uuid4().hex[:12]}"


def _reused(backend: str, tmp_path: Path, chdb_path: Path) -> str:
    if backend == "chdb" and _EMPTIED:
        return f"chdb://{chdb_path}?database={_EMPTIED.pop()}"
    return store_url(backend, tmp_path, chdb_path)


async def _close(store: AnalyticsStore, url: str, chdb_path: Path) -> None:
    """Close the store; a chDB database is emptied (every table but the migrations', not the views) and kept
    for the next test. Migrations are append-only, so an emptied database is what a new one migrates to."""
    await store.close()
    if not url.startswith("chdb://"):
        return
    import clickhouse_connect

    database = url.rpartition("database=")[2]
    client = clickhouse_connect.get_client(interface="chdb", path=str(chdb_path), database=database)
    tables = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND engine NOT LIKE '%View'"
        " AND name != 'schema_migrations'",
        parameters={"db": database},
    ).result_rows
    for (table,) in tables:
        client.command(f"TRUNCATE TABLE `{database}`.`{table}`")
    _EMPTIED.append(database)


@pytest.fixture(params=BACKENDS)
async def store(request, tmp_path: Path, chdb_path: Path) -> AsyncIterator[AnalyticsStore]:
    url = _reused(request.param, tmp_path, chdb_path)
    store = open_store(url, tmp_path)
    await store.migrate()
    yield store
    await _close(store, url, chdb_path)


@pytest.fixture
async def both(tmp_path: Path, chdb_path: Path) -> AsyncIterator[tuple[AnalyticsStore, AnalyticsStore]]:
    duck = open_store(store_url("duckdb", tmp_path, chdb_path), tmp_path)
    url = _reused("chdb", tmp_path, chdb_path)
    ch = open_store(url, tmp_path)
    await duck.migrate()
    await ch.migrate()
    yield duck, ch
    await duck.close()
    await _close(ch, url, chdb_path)


@pytest.fixture
async def ch(tmp_path: Path, chdb_path: Path) -> AsyncIterator[AnalyticsStore]:
    """A new chDB store of its own (not a reused one), for tests that look at its tables."""
    store = open_store(store_url("chdb", tmp_path, chdb_path), tmp_path)
    await store.migrate()
    yield store
    await store.close()


async def rows_of(store: AnalyticsStore, sql: str) -> set[tuple]:
    """The rows of a raw query on the store's own engine (tests looking under the store's tables)."""
    return {tuple(row) for row in await store._run(store._query, sql, {})}  # type: ignore[attr-defined]
