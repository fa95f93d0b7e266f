"""ImportRunnerActor ("import-runner"): the thin Ray shell around `body.ImportRunner`.

It runs the body from the moment it starts, so a restarted actor resumes the imports by itself (their
rows wait in Redis). A stream consumer that may lag: it yields the cores to sending (actors/priority.py).
"""

from __future__ import annotations

import asyncio

import ray
import redis.asyncio as aioredis

from actors.imports.body import ImportRunner
from actors.priority import run_in_background, settle_garbage_collector


@ray.remote(num_cpus=0)
class ImportRunnerActor:
    def __init__(self, redis_url: str) -> None:
        run_in_background()
        settle_garbage_collector()
        self.redis = aioredis.Redis.from_url(redis_url)
        self.body = ImportRunner(self.redis)
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self.body.run(self._stop))

    async def ready(self) -> bool:
        return True

    async def run_until_idle(self) -> int:
        return await self.body.run_until_idle()

    async def shutdown(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.shield(self._task), 30)
        await self.redis.aclose()
