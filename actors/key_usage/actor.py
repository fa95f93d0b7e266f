"""KeyUsage: the Ray shell around `KeyUsageBody`, the first actor on the path (it counts API key use).

The ingress coalesces usage pings (`actors/key_usage/client.py`) and sends one msgpack batch per call;
the shell decodes it and the body folds it into one Redis pipeline.
"""

from __future__ import annotations

import time

import msgspec
import ray
import redis.asyncio as aioredis

from actors.key_usage.body import KeyUsageBody, Use
from actors.priority import run_in_background


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class KeyUsage:
    def __init__(self, redis_url: str) -> None:
        run_in_background()  # counters that may lag a request by 250 ms already (actors/priority.py)
        self.body = KeyUsageBody(aioredis.Redis.from_url(redis_url), clock=time.time)
        # Built here, not at module level: Ray may pickle the class by value, and decoders do not pickle.
        self._decode = msgspec.msgpack.Decoder(list[Use]).decode

    async def record(self, batch: bytes) -> int:
        return await self.body.record(self._decode(batch))

    async def ping(self) -> bool:
        return await self.body.ping()
