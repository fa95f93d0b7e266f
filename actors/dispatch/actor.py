"""Dispatcher: the Ray shell that hosts the dispatch body (`DispatchFleet`) of the servers hashed to it.

The embedded default runs one (`MAILERS_DISPATCHER_ACTORS`); a cluster runs more, each owning the
servers whose id hashes to its index. State lives in Redis, so a restarted actor resumes its streams.
The shell owns the event loop, the real clock and the process's priority; its methods only delegate.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import ray
import redis.asyncio as aioredis

from actors.dispatch.body import DispatchFleet
from actors.priority import run_as_sender, settle_garbage_collector
from actors.suppression.client import SuppressionClient
from schemas.settings import Settings


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class Dispatcher:
    def __init__(self, settings: bytes, redis_url: str, index: int, count: int) -> None:
        self.settings = msgspec.msgpack.decode(settings, type=Settings)
        self.redis = aioredis.Redis.from_url(redis_url)
        shards = SuppressionClient.start(self.settings, redis_url)
        self.fleet = DispatchFleet(
            self.redis,
            self.settings,
            index=index,
            count=count,
            suppressions=shards.check_many,
            clock=time.time,
        )
        settle_garbage_collector()  # full collections would rescan Ray's million start-up objects
        run_as_sender()  # behind the ingress, ahead of the stream consumers (actors/priority.py)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> bool:
        """Idempotent: the client calls it after every lookup, so a restarted actor starts again."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.fleet.run(self._stop))
        return True

    async def servers(self) -> list[str]:
        return sorted(self.fleet.running)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def shutdown(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
