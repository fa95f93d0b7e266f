"""The embedded DuckDB store's memory limit (`MAILERS_DUCKDB_MEMORY_MB`): what DuckDB caches of a growing
table stays within it, and an in-memory database is never limited (its tables are its memory)."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from analytics.duckdb_backend import _OUT_OF_MEMORY as OUT_OF_MEMORY
from analytics.duckdb_backend import DuckDBStore
from analytics.errors import StoreUnavailable
from analytics.store import open_store
from schemas.events import Event, EventMessage
from schemas.settings import SettingsError, load_settings
from tests.analytics.events_factory import NOW

EVENTS = 200_000


def test_the_setting_defaults_to_128_mib_and_zero_means_duckdbs_own_default():
    assert load_settings({}).duckdb_memory_mb == 128
    assert load_settings({"MAILERS_DUCKDB_MEMORY_MB": "512"}).duckdb_memory_mb == 512
    assert load_settings({"MAILERS_DUCKDB_MEMORY_MB": "0"}).duckdb_memory_mb == 0
    for bad in ("-1", "1GB", "0.5"):
        with pytest.raises(SettingsError, match="MAILERS_DUCKDB_MEMORY_MB"):
            load_settings({"MAILERS_DUCKDB_MEMORY_MB": bad})


async def test_a_duckdb_file_is_opened_with_the_limit_and_memory_is_not(tmp_path):
    limited = open_store(f"duckdb://{tmp_path / 'a.duckdb'}", duckdb_memory_mb=96)
    default = open_store(f"duckdb://{tmp_path / 'b.duckdb'}")
    in_memory = open_store("duckdb://", duckdb_memory_mb=96)
    try:
        assert (await limited.memory())["limit"] == "96.0 MiB"
        unlimited = (await default.memory())["limit"]
        assert unlimited == (await in_memory.memory())["limit"] != "96.0 MiB"
    finally:
        for store in (limited, default, in_memory):
            await store.close()


def _batches(count: int, size: int, *, random_ids: bool = False):
    message = EventMessage(
        id="msg_0", to="ana@example.com", from_="hello@acme.com", provider="smtp", server="srv_1"
    )
    for start in range(0, count, size):
        yield [
            Event(
                id=f"evt_{hashlib.sha1(str(i).encode()).hexdigest()}" if random_ids else f"evt_{i:022d}",
                type="message.sent",
                created_at=NOW - timedelta(milliseconds=i),
                workspace="acme",
                message=message,
                data={"note": hashlib.sha512(str(i).encode()).hexdigest()},  # 128 B, incompressible
            )
            for i in range(start, min(count, start + size))
        ]


async def test_what_duckdb_holds_of_a_growing_table_stays_within_its_limit(tmp_path):
    """The same events into two files, one limited: the unlimited one caches more of its table than the
    limit (so the limit is what holds the other back), the limited one never holds more than the limit."""
    limit = 16 * 2**20
    limited = DuckDBStore(tmp_path / "limited.duckdb", checkpoint_threshold="1MB", memory_limit_mib=16)
    unlimited = DuckDBStore(tmp_path / "unlimited.duckdb", checkpoint_threshold="1MB")
    peaks = {limited: 0, unlimited: 0}
    try:
        for store in peaks:
            await store.migrate()
        for batch in _batches(EVENTS, 5000):
            for store in peaks:
                await store.insert(batch)
                peaks[store] = max(peaks[store], (await store.memory())["used_bytes"])
        assert peaks[unlimited] > limit
        assert 0 < peaks[limited] <= limit
        assert await _count(limited) == EVENTS  # nothing refused for want of memory
        assert limited.limit_mib == 16  # the cache was evicted, the limit never had to grow
    finally:
        for store in peaks:
            await store.close()


async def test_a_database_a_fatal_error_invalidated_is_opened_again_and_loses_nothing(tmp_path):
    """A checkpoint that cannot get its memory is fatal to a DuckDB database (it must be opened again):
    the insert fails as the store being unavailable (the sink keeps the batch and retries it), the limit
    doubles, the next call opens the file again, and every event is stored exactly once."""
    store = DuckDBStore(tmp_path / "events.duckdb", checkpoint_threshold="1MB", memory_limit_mib=8)
    await store.migrate()
    failures = await _insert_retrying(store, _batches(EVENTS, 5000))
    try:
        assert any(_out_of_memory(f) or "invalidated" in f for f in failures), failures
        assert store.limit_mib >= 16
        assert (await store.memory())["limit"] == f"{store.limit_mib}.0 MiB"  # opened again with it
        assert await _count(store) == EVENTS
    finally:
        await store.close()


async def test_an_index_that_outgrows_the_limit_raises_it_instead_of_stopping_the_inserts(tmp_path):
    """Random event ids (as real ULIDs' random part) make a primary-key index DuckDB cannot evict; past the
    limit an insert runs out of memory, the limit doubles, and the retried batch goes in."""
    store = DuckDBStore(tmp_path / "events.duckdb", memory_limit_mib=8)
    await store.migrate()
    try:
        failures = await _insert_retrying(store, _batches(EVENTS, 5000, random_ids=True))
        assert failures and all(_out_of_memory(f) for f in failures), failures
        assert store.limit_mib > 8
        assert await _count(store) == EVENTS
    finally:
        await store.close()


async def _insert_retrying(store: DuckDBStore, batches) -> list[str]:
    """Insert each batch as the sink does: a batch that fails is retried until it goes in; the failures."""
    failures: list[str] = []
    for batch in batches:
        while True:
            try:
                await store.insert(batch)
                break
            except StoreUnavailable as failed:
                failures.append(str(failed.__cause__))
                assert len(failures) < 20, failures
    return failures


def _out_of_memory(failure: str) -> bool:
    return any(mark in failure for mark in OUT_OF_MEMORY)  # the store's own reading of DuckDB's wordings


async def _count(store: DuckDBStore) -> int:
    rows = await store._run(store._query, "SELECT count(*) FROM events", {})
    return int(rows[0][0])
