"""Analytics stores on real engines: DuckDB in a temporary file, ClickHouse through embedded chDB.

chDB allows one engine path per process, so the session shares one path and each test gets its own
database in it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from analytics.store import AnalyticsStore, open_store

BACKENDS = ["duckdb", "chdb"]


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


def store_url(backend: str, tmp_path: Path, chdb_path: Path) -> str:
    if backend == "duckdb":
        return f"duckdb://{tmp_path / f'analytics-{uuid.uuid4().hex[:8]}.duckdb'}"
    return f"chdb://{chdb_path}?database=t_{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=BACKENDS)
async def store(request, tmp_path: Path, chdb_path: Path) -> AsyncIterator[AnalyticsStore]:
    store = open_store(store_url(request.param, tmp_path, chdb_path), tmp_path)
    await store.migrate()
    yield store
    await store.close()


@pytest.fixture
async def both(tmp_path: Path, chdb_path: Path) -> AsyncIterator[tuple[AnalyticsStore, AnalyticsStore]]:
    duck = open_store(store_url("duckdb", tmp_path, chdb_path), tmp_path)
    ch = open_store(store_url("chdb", tmp_path, chdb_path), tmp_path)
    await duck.migrate()
    await ch.migrate()
    yield duck, ch
    await duck.close()
    await ch.close()
