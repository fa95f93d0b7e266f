"""WebhookDeliverer: the thin Ray shell that hosts `body.WebhookDeliveryLoop`.

The loop starts in `__init__` (an async actor's event loop already runs there), so a restarted actor
(`max_restarts=-1`, set by `actors.runtime.start_actor`) resumes by itself: it reads its unacked stream
entries again and makes the deliveries it had in flight due at once. Everything it knows is in Redis.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import ray
import redis.asyncio as aioredis

from actors.priority import run_in_background, settle_garbage_collector
from actors.webhooks.body import WebhookDeliveryLoop
from actors.webhooks.config import DelivererConfig
from schemas.settings import Settings


@ray.remote(num_cpus=0)
class WebhookDeliverer:
    def __init__(self, settings: bytes, redis_url: str, overrides: dict[str, Any]) -> None:
        run_in_background()  # a consumer that may lag yields the cores to sending (actors/priority.py)
        settle_garbage_collector()
        config = DelivererConfig.from_settings(msgspec.msgpack.decode(settings, type=Settings), **overrides)
        self.redis = aioredis.Redis.from_url(redis_url)
        self.body = WebhookDeliveryLoop(self.redis, config)
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self.body.run(self._stop))

    async def ready(self) -> bool:
        """True once the consumer group exists: events appended from now on will be delivered."""
        started = asyncio.create_task(self.body.started.wait())
        await asyncio.wait([started, self._task], return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            started.cancel()
            self._task.result()  # raises what stopped the loop
        return True

    async def ping(self) -> bool:
        return not self._task.done() and bool(await self.redis.ping())

    async def counts(self) -> dict[str, int]:
        return self.body.counts

    async def stop(self) -> None:
        self._stop.set()
        await self._task
        await self.redis.aclose()
