"""The ingress's API key cache on a real Redis: concurrent misses share one read (a busy key whose entry
expired cost every request arriving meanwhile two round trips: 12% of the ingress's CPU at 500 req/s), and
a key invalidated while a read is in flight is read again rather than served from that read."""

from __future__ import annotations

import asyncio

from ingress.key_cache import KeyCache
from store.api_keys import ApiKeyStore, generate_secret, new_record


async def _gets(redis) -> int:
    return int((await redis.info("commandstats")).get("cmdstat_get", {}).get("calls", 0))


async def test_concurrent_misses_share_one_read_and_an_invalidation_reads_again(redis):
    store = ApiKeyStore(redis)
    secret = generate_secret()
    record = new_record("ws", "k", ["send"], secret=secret)
    await store.create(record)
    cache = KeyCache(store, ttl=60)
    await redis.config_resetstat()
    found = await asyncio.gather(*(cache.lookup(record.hash) for _ in range(100)))
    assert all(f is not None and f.id == record.id for f in found)
    assert await _gets(redis) == 2, "one read (the hash's key id, then the record) for 100 lookups"
    assert (await cache.lookup(record.hash)).id == record.id
    assert await _gets(redis) == 2, "then served from the cache"

    revoked = new_record("ws", "k", ["send"], secret=secret)
    revoked.id, revoked.state = record.id, "revoked"
    cache.invalidate(record.hash)
    in_flight = asyncio.ensure_future(cache.lookup(record.hash))  # begun before the save below
    await asyncio.sleep(0)
    await store.save(revoked)
    cache.invalidate(record.hash)  # what the save's publication makes every ingress do
    after = await cache.lookup(record.hash)
    assert after is not None and after.state == "revoked", "not the read begun before the invalidation"
    await in_flight
    assert (await cache.lookup(record.hash)).state == "revoked", "the earlier read was not cached"
