"""`mailers audit verify` as a real process against a real DuckDB audit store, before and after tampering."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import duckdb
import pytest

from analytics.audit import AuditStore, audit_store_url
from tests.audit.conftest import SECRET, drain
from tests.audit.test_sink import append, entry

MAILERS = str(Path(sys.executable).parent / "mailers")


async def verify(redis_url: str, analytics_url: str, workspace: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILERS_", "RAY_ADDRESS"))}
    env.update(MAILERS_REDIS_URL=redis_url, MAILERS_ANALYTICS_URL=analytics_url, MAILERS_SECRET_KEY=SECRET)
    process = await asyncio.create_subprocess_exec(
        MAILERS,
        "audit",
        "verify",
        "--workspace",
        workspace,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


@pytest.fixture
async def sealed_log(redis, redis_url, tmp_path, make_sink) -> tuple[str, Path]:
    """Six chained entries of `ws-a` (and two of `ws-b`) in the audit file beside analytics.duckdb."""
    analytics_url = f"duckdb://{tmp_path / 'analytics.duckdb'}"
    store = await AuditStore.open(audit_store_url(analytics_url, tmp_path))
    await append(redis, [entry(i) for i in range(6)] + [entry(i, "ws-b") for i in range(2)])
    await drain(make_sink(store))
    await store.close()
    return analytics_url, Path(audit_store_url(analytics_url, tmp_path).removeprefix("duckdb://"))


async def test_an_intact_log_verifies(redis_url, sealed_log):
    assert await verify(redis_url, sealed_log[0], "ws-a") == (0, "ok: 6 entries\n")
    assert await verify(redis_url, sealed_log[0], "ws-b") == (0, "ok: 2 entries\n")


async def test_an_edited_field_is_named_by_seq(redis_url, sealed_log):
    with duckdb.connect(str(sealed_log[1])) as db:
        db.execute("UPDATE audit_log SET status = 500 WHERE workspace = 'ws-a' AND seq = 4")
        edited_id = db.execute("SELECT id FROM audit_log WHERE workspace = 'ws-a' AND seq = 4").fetchone()[0]
    code, output = await verify(redis_url, sealed_log[0], "ws-a")
    assert code == 1 and output.startswith(f"broken at seq 4 (id {edited_id}): hash does not match")


async def test_an_edited_optional_field_is_detected(redis_url, sealed_log):
    with duckdb.connect(str(sealed_log[1])) as db:
        db.execute("UPDATE audit_log SET ip = NULL WHERE workspace = 'ws-a' AND seq = 2")
    code, output = await verify(redis_url, sealed_log[0], "ws-a")
    assert code == 1 and output.startswith("broken at seq 2 ")


async def test_a_deleted_entry_is_named_by_seq(redis_url, sealed_log):
    with duckdb.connect(str(sealed_log[1])) as db:
        db.execute("DELETE FROM audit_log WHERE workspace = 'ws-a' AND seq = 3")
    code, output = await verify(redis_url, sealed_log[0], "ws-a")
    assert code == 1 and "broken at seq 4 " in output and "expected 3, found 4" in output
    assert await verify(redis_url, sealed_log[0], "ws-b") == (0, "ok: 2 entries\n")
