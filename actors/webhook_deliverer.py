"""WebhookDeliverer: the Ray actor that hosts `WebhookDeliveryLoop` (actors/webhooks/loop.py).

The loop starts in `__init__` (an async actor's event loop already runs there), so a restarted actor
(`max_restarts=-1`) resumes by itself: it reads its unacked stream entries again and makes the
deliveries it had in flight due at once. Everything it knows is in Redis.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import ray
import redis.asyncio as aioredis

from actors.priority import run_in_background, settle_garbage_collector
from actors.runtime import start_actor
from actors.webhooks.config import DELIVERER_NAME, DelivererConfig
from actors.webhooks.loop import WebhookDeliveryLoop
from schemas.settings import Settings


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class WebhookDeliverer:
    def __init__(self, settings: bytes, redis_url: str, overrides: dict[str, Any]) -> None:
        run_in_background()  # a consumer that may lag yields the cores to sending (actors/priority.py)
        settle_garbage_collector()
        config = DelivererConfig.from_settings(msgspec.msgpack.decode(settings, type=Settings), **overrides)
        self.redis = aioredis.Redis.from_url(redis_url)
        self.loop = WebhookDeliveryLoop(self.redis, config)
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self.loop.run(self._stop))

    async def ready(self) -> bool:
        """True once the consumer group exists: events appended from now on will be delivered."""
        started = asyncio.create_task(self.loop.started.wait())
        await asyncio.wait([started, self._task], return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            started.cancel()
            self._task.result()  # raises what stopped the loop
        return True

    async def ping(self) -> bool:
        return not self._task.done() and bool(await self.redis.ping())

    async def counts(self) -> dict[str, int]:
        return self.loop.counts

    async def stop(self) -> None:
        self._stop.set()
        await self._task
        await self.redis.aclose()


async def ensure_webhook_deliverer(
    settings: Settings, redis_url: str, *, name: str = DELIVERER_NAME, **overrides: Any
):
    """Find or start the detached deliverer `name` and wait until it consumes the event stream."""
    handle = start_actor(
        WebhookDeliverer,
        name,
        settings,
        msgspec.msgpack.encode(settings),
        redis_url,
        {"consumer": name, **overrides},
    )
    await handle.ready.remote()
    return handle
