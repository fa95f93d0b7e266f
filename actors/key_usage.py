"""KeyUsage: the first actor on the path. Counts API key use, in batches, into Redis.

The ingress coalesces usage pings and sends one msgpack batch per call; the actor folds the batch and
writes it in one pipeline. Losing the counts of a batch in flight when a process dies is acceptable:
they are statistics, not state anything depends on.
"""

from __future__ import annotations

import msgspec
import ray
import redis.asyncio as aioredis

from store import keyspace


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class KeyUsage:
    def __init__(self, redis_url: str) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        # Built here, not at module level: Ray may pickle the class by value, and decoders do not pickle.
        self._decode = msgspec.msgpack.Decoder(list[tuple[str, int]]).decode

    async def record(self, batch: bytes) -> int:
        folded: dict[str, tuple[int, int]] = {}
        for key_id, used_ms in self._decode(batch):
            count, last = folded.get(key_id, (0, 0))
            folded[key_id] = (count + 1, max(last, used_ms))
        async with self.redis.pipeline(transaction=False) as pipe:
            for key_id, (count, last) in folded.items():
                pipe.hincrby(keyspace.key_usage(key_id), "count", count)
                pipe.hset(keyspace.key_usage(key_id), "last_used_ms", last)
            await pipe.execute()
        return len(folded)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())
