"""KeyUsage's body without Ray: a batch of uses folds into one count and one latest use per key."""

from __future__ import annotations

from actors.key_usage.body import KeyUsageBody
from store import keyspace


async def test_a_batch_folds_per_key_and_adds_to_earlier_counts(redis):
    body = KeyUsageBody(redis)
    assert await body.record([("k1", 1000), ("k2", 500), ("k1", 3000), ("k1", 2000)]) == 2
    assert await body.record([("k1", 2500)]) == 1
    assert await redis.hgetall(keyspace.key_usage("k1")) == {b"count": b"4", b"last_used_ms": b"2500"}
    assert await redis.hgetall(keyspace.key_usage("k2")) == {b"count": b"1", b"last_used_ms": b"500"}
    assert await body.run_until_idle() == 0
