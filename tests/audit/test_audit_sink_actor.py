"""The audit sink through its real Ray shell: entries appended to `m:audit` are chained, stored and read
back through `AuditSinkClient`, in the one error envelope."""

from __future__ import annotations

import asyncio

import pytest

from analytics.audit import AuditFilter
from ingress.audit import AuditWriter
from security.audit_chain import verify_chain
from store import keyspace
from tests.audit.test_sink import entry
from tests.conftest import make_settings

pytestmark = pytest.mark.ray


async def test_the_actor_chains_the_stream_and_answers_reads(ray_session, redis, redis_url, tmp_path):
    import ray

    from actors.audit.actor import audit_signer
    from actors.audit.client import find_audit_sink, start_audit_sink

    settings = make_settings(tmp_path, redis_url)
    handle = start_audit_sink(settings, redis_url, name="audit-sink-test", block_ms=20, linger=0.0)
    try:
        assert await handle.ready.remote()
        writer = AuditWriter(redis)
        for i in range(6):
            await writer.append(entry(i))
        client = find_audit_sink(settings, "audit-sink-test")
        assert client is not None
        async with asyncio.timeout(30):
            while len((await client.page(AuditFilter(workspace="ws-a"), limit=10, before_seq=None))[0]) < 6:
                await asyncio.sleep(0.05)
        entries, has_more = await client.page(AuditFilter(workspace="ws-a"), limit=4, before_seq=None)
        assert [e.seq for e in entries] == [6, 5, 4, 3] and has_more
        exported = b"".join([chunk async for chunk in client.export(AuditFilter(workspace="ws-a"))])
        assert exported.count(b"\n") == 6
        everything, _ = await client.page(AuditFilter(workspace="ws-a"), limit=10, before_seq=None)
        assert verify_chain(everything[::-1], audit_signer(settings).public_key_pem()).ok
        assert (await handle.stats.remote())["chained"] == 6
        assert (await redis.xpending(keyspace.AUDIT_STREAM, keyspace.AUDIT_GROUP))["pending"] == 0
    finally:
        await handle.shutdown.remote()
        ray.kill(handle, no_restart=True)
