"""The AuditSink stores what a pass chained from the entries in hand (issue #14), and still stores an
earlier pass's leftover buffer: both land once, in order, and the buffer ends empty."""

from __future__ import annotations

import msgspec

from security.audit_chain import AuditEntry, verify_chain
from store import keyspace
from tests.audit.test_sink import append, entry, stored


async def test_a_pass_stores_its_sealed_entries_and_an_earlier_pass_leftover(
    redis, audit_store, make_sink, signer
):
    await append(redis, [entry(i) for i in range(3)])
    first = make_sink(audit_store)
    await first.chain_batch(await first.read_batch())  # ...and dies before it stores anything
    buffered = [
        msgspec.msgpack.decode(f[keyspace.AUDIT_FIELD], type=AuditEntry)
        for _, f in await redis.xrange(keyspace.AUDIT_CHAINED)
    ]
    assert len(first._sealed) == 3
    assert [e for _, e in first._sealed] == buffered, "in hand: exactly what the MULTI buffered"

    await append(redis, [entry(i) for i in range(3, 5)])
    second = make_sink(audit_store)
    await second.chain_batch(await second.read_batch())
    assert [e.seq for _, e in second._sealed] == [4, 5]
    assert await second.store_sealed() == 5, "its own two, then the dead pass's three from the buffer"
    assert await redis.xlen(keyspace.AUDIT_CHAINED) == 0
    chain = await stored(audit_store, "ws-a")
    assert [e.seq for e in chain] == [1, 2, 3, 4, 5]
    assert verify_chain(chain, signer.public_key_pem()).ok
