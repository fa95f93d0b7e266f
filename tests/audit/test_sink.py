"""AuditSink on real Redis and real DuckDB / chDB: chains verify, crashes never re-number an entry."""

from __future__ import annotations

import msgspec

from actors.audit.body import AuditSink, parse_head
from analytics.audit import AuditFilter
from security.audit_chain import AuditEntry, VerifyResult, verify_chain
from store import keyspace
from store.audit_log import AuditWriter
from tests.audit.conftest import drain

_decode = msgspec.msgpack.Decoder(AuditEntry).decode


def entry(number: int, workspace: str = "ws-a", status: int = 200) -> AuditEntry:
    return AuditEntry(
        id=f"aud_{workspace}_{number:04d}",
        workspace=workspace,
        time=f"2026-04-19T10:00:{number % 60:02d}.000Z",
        action="GET /v1/messages/{id}",
        status=status,
        request_id=f"req_{number}",
        key_id="key_1",
        key_prefix="mk_abcdefgh",
        resource_id=None if number % 2 else f"msg_{number}",
        ip="10.0.0.1",
    )


async def append(redis, entries: list[AuditEntry]) -> None:
    writer = AuditWriter(redis)
    for item in entries:
        await writer.append(item)


async def stored(store, workspace: str) -> list[AuditEntry]:
    return [e async for chunk in store.chunks(AuditFilter(workspace=workspace), chunk_rows=7) for e in chunk]


async def test_entries_chain_per_workspace_and_verify(redis, audit_store, make_sink, signer):
    await append(redis, [entry(i, "ws-a" if i % 3 else "ws-b") for i in range(30)])
    sink = make_sink(audit_store, batch_size=8)
    assert await drain(sink) == 30
    for workspace, count in (("ws-a", 20), ("ws-b", 10)):
        chain = await stored(audit_store, workspace)
        assert [e.seq for e in chain] == list(range(1, count + 1))
        assert {e.workspace for e in chain} == {workspace}
        assert verify_chain(chain, signer.public_key_pem()).ok
        assert await audit_store.verify(workspace, [signer.public_key_pem()], chunk_rows=7) == (
            VerifyResult(True, None, None, f"{count} entries verified"),
            count,
        )
        assert parse_head(await redis.hget(keyspace.AUDIT_HEADS, workspace)) == (count, chain[-1].hash)
    assert await redis.xlen(keyspace.AUDIT_STREAM) == 0 and await redis.xlen(keyspace.AUDIT_CHAINED) == 0


async def test_a_later_batch_continues_the_chain(redis, audit_store, make_sink, signer):
    sink = make_sink(audit_store)
    await append(redis, [entry(i) for i in range(3)])
    await drain(sink)
    await append(redis, [entry(i) for i in range(3, 5)])
    await drain(make_sink(audit_store))  # a new sink (a restart) picks up the head from Redis
    chain = await stored(audit_store, "ws-a")
    assert [e.seq for e in chain] == [1, 2, 3, 4, 5]
    assert verify_chain(chain, signer.public_key_pem()).ok


async def test_crash_after_chaining_before_storing_keeps_every_seq(redis, duck_store, make_sink, signer):
    await append(redis, [entry(i) for i in range(12)])
    first = make_sink(duck_store, batch_size=5)
    batch = await first.read_batch()
    await first.chain_batch(batch)  # ...and the process dies before it stores anything
    chained = {
        e.id: e.seq
        for e in [_decode(f[keyspace.AUDIT_FIELD]) for _, f in await redis.xrange(keyspace.AUDIT_CHAINED)]
    }
    assert sorted(chained.values()) == [1, 2, 3, 4, 5] and await stored(duck_store, "ws-a") == []
    assert await drain(make_sink(duck_store, batch_size=5)) == 7
    chain = await stored(duck_store, "ws-a")
    assert [e.seq for e in chain] == list(range(1, 13))
    assert {e.id: e.seq for e in chain if e.id in chained} == chained
    assert verify_chain(chain, signer.public_key_pem()).ok


async def test_crash_after_reading_before_chaining_rereads_its_own_pending(
    redis, duck_store, make_sink, signer
):
    await append(redis, [entry(i) for i in range(4)])
    first = make_sink(duck_store)
    assert len(await first.read_batch()) == 4  # read, then dead before the MULTI: all four stay pending
    assert (await redis.xpending(keyspace.AUDIT_STREAM, keyspace.AUDIT_GROUP))["pending"] == 4
    assert await drain(make_sink(duck_store)) == 4
    chain = await stored(duck_store, "ws-a")
    assert [e.id for e in chain] == [f"aud_ws-a_{i:04d}" for i in range(4)] and [e.seq for e in chain] == [
        1,
        2,
        3,
        4,
    ]
    assert (await redis.xpending(keyspace.AUDIT_STREAM, keyspace.AUDIT_GROUP))["pending"] == 0


async def test_storing_twice_keeps_one_row_per_entry(redis, audit_store, make_sink):
    await append(redis, [entry(i) for i in range(3)])
    sink = make_sink(audit_store)
    await sink.chain_batch(await sink.read_batch())
    rows = await redis.xrange(keyspace.AUDIT_CHAINED)
    await audit_store.insert(
        [_decode(f[keyspace.AUDIT_FIELD]) for _, f in rows]
    )  # stored, then died before XDEL
    assert await sink.store_chained() == 3
    entries, has_more = await audit_store.page(AuditFilter(workspace="ws-a"), limit=10, before_seq=None)
    assert [e.seq for e in entries] == [3, 2, 1] and not has_more


async def test_an_undecodable_entry_is_acknowledged_and_skipped(redis, duck_store, make_sink):
    await redis.xadd(keyspace.AUDIT_STREAM, {keyspace.AUDIT_FIELD: b"\xc1"})
    await append(redis, [entry(1)])
    sink: AuditSink = make_sink(duck_store)
    assert await drain(sink) == 2 and sink.stats.undecodable == 1
    assert [e.seq for e in await stored(duck_store, "ws-a")] == [1]
    assert await redis.xlen(keyspace.AUDIT_STREAM) == 0


async def test_heads_moved_by_another_sink_are_chained_after_not_forked(redis, duck_store, make_sink, signer):
    await append(redis, [entry(i) for i in range(3)])
    sink = make_sink(duck_store)
    original, attempts = sink._queue_commit, []

    async def racing(pipe, by_workspace, ids):
        attempts.append(1)
        if len(attempts) == 1:  # a second sink moves the head after the WATCH: this MULTI must fail
            await redis.hset(keyspace.AUDIT_HEADS, "ws-a", "7:" + "ab" * 32)
        await original(pipe, by_workspace, ids)

    sink._queue_commit = racing
    await sink.chain_batch(await sink.read_batch())
    assert len(attempts) == 2  # Redis.transaction retried from the moved head
    rows = [_decode(f[keyspace.AUDIT_FIELD]) for _, f in await redis.xrange(keyspace.AUDIT_CHAINED)]
    assert [e.seq for e in rows] == [8, 9, 10] and rows[0].prev_hash == "ab" * 32
    assert parse_head(await redis.hget(keyspace.AUDIT_HEADS, "ws-a"))[0] == 10
    assert await redis.xlen(keyspace.AUDIT_STREAM) == 0
