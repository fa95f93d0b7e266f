"""SuppressionShard: the Ray shell around `SuppressionShardBody` (actors/suppression/body.py).

Wire format (msgpack bytes in and out, one call per shard per batch), decoded here and nowhere else:
- `check`: [(workspace, sending_domain, list_ids, recipients)] → per item [(email, scope, reason)]
- `add`: [(workspace, SuppressionEntry)] → per item True if it was new
- `remove`: [(workspace, email, scope, scope_value)] → per item True if it was suppressed
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import ray
import redis.asyncio as aioredis

from actors.priority import run_as_sender, settle_garbage_collector
from actors.suppression.body import AddItem, CheckItem, RemoveItem, SuppressionShardBody


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class SuppressionShard:
    def __init__(self, redis_url: str, index: int = 0) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        self.body = SuppressionShardBody(self.redis, index, clock=time.time)
        # Built here, not at module level: Ray may pickle the class by value, and these do not pickle.
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode_check = msgspec.msgpack.Decoder(list[CheckItem]).decode
        self._decode_add = msgspec.msgpack.Decoder(list[AddItem]).decode
        self._decode_remove = msgspec.msgpack.Decoder(list[RemoveItem]).decode
        settle_garbage_collector()  # it is called per dispatch batch: no full collection over Ray's objects
        run_as_sender()
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self.body.run(self._stop))

    async def check(self, batch: bytes) -> bytes:
        return self._encode(await self.body.check(self._decode_check(batch)))

    async def add(self, batch: bytes) -> bytes:
        return self._encode(await self.body.add(self._decode_add(batch)))

    async def remove(self, batch: bytes) -> bytes:
        return self._encode(await self.body.remove(self._decode_remove(batch)))

    async def ping(self) -> bool:
        return await self.body.ping()

    async def stats(self) -> dict[str, Any]:
        return self.body.stats()
