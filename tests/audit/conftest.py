"""Audit stores on real engines (a DuckDB file, embedded chDB) and a sink over the test Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from actors.audit.body import AuditSink
from analytics.audit import AuditStore
from security.audit_chain import AuditSigner
from security.secretbox import derive_key

SECRET = "s" * 40  # the secret key tests.conftest.make_settings gives every app
MOTO_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region_name": "us-east-1",
}


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's S3 (and the rest) on a free port: the external checkpoint sink `s3://`."""
    from moto.server import ThreadedMotoServer

    from store.redis_server import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def audit_chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit-chdb")


def audit_url(backend: str, tmp_path: Path, chdb_path: Path) -> str:
    if backend == "duckdb":
        return f"duckdb://{tmp_path / f'audit-{uuid.uuid4().hex[:8]}.duckdb'}"
    return f"chdb://{chdb_path}?database=a_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def signer() -> AuditSigner:
    return AuditSigner.from_private_bytes(derive_key(SECRET, "audit-signing"))


@pytest.fixture(params=["duckdb", "chdb"])
async def audit_store(request, tmp_path: Path, audit_chdb_path: Path) -> AsyncIterator[AuditStore]:
    store = await AuditStore.open(audit_url(request.param, tmp_path, audit_chdb_path))
    yield store
    await store.close()


@pytest.fixture
async def duck_store(tmp_path: Path, audit_chdb_path: Path) -> AsyncIterator[AuditStore]:
    store = await AuditStore.open(audit_url("duckdb", tmp_path, audit_chdb_path))
    yield store
    await store.close()


@pytest.fixture
def make_sink(redis, signer):
    def make(store: AuditStore, **options) -> AuditSink:
        return AuditSink(redis, store, signer, block_ms=10, **options)

    return make


async def stream_entries(redis) -> list:
    """The unchained entries waiting in `m:audit`, oldest first."""
    import msgspec

    from security.audit_chain import AuditEntry
    from store import keyspace

    decode = msgspec.msgpack.Decoder(AuditEntry).decode
    return [decode(fields[keyspace.AUDIT_FIELD]) for _, fields in await redis.xrange(keyspace.AUDIT_STREAM)]


async def drain(sink: AuditSink) -> int:
    """Run passes until the stream is empty; returns how many entries were chained."""
    return await sink.run_until_idle()
