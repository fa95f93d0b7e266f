"""AutomationRunnerActor ("automation-runner"): the thin Ray shell around `body.AutomationRunner`.

It runs the body from the moment it starts, so a restarted actor resumes every run by itself (runs and
their timers are in Redis). Conditions (branch steps, event filters) and segment audiences are evaluated
in the analytics store: through the event sink in DuckDB mode, directly with ClickHouse. Its sends are on
the send path, so it shares the send path's CPU tier (actors/priority.py).
"""

from __future__ import annotations

import asyncio

import msgspec
import ray
import redis.asyncio as aioredis

from actors.automations.body import AutomationRunner
from actors.event_sink.client import find_event_sink
from actors.priority import run_as_sender, settle_garbage_collector
from analytics.store import AudienceReader, analytics_url, open_store
from schemas.settings import Settings


@ray.remote(num_cpus=0)
class AutomationRunnerActor:
    def __init__(self, redis_url: str, encoded_settings: bytes, consumer: str) -> None:
        settings = msgspec.msgpack.decode(encoded_settings, type=Settings)
        run_as_sender()
        settle_garbage_collector()
        self.redis = aioredis.Redis.from_url(redis_url)
        url = analytics_url(settings.analytics_url, settings.data_dir)
        direct = open_store(url) if url.startswith(("clickhouse://", "clickhouses://")) else None

        def reader() -> AudienceReader | None:
            return direct if direct is not None else find_event_sink(settings)

        self.body = AutomationRunner(
            self.redis,
            settings,
            reader=reader,
            consumer=consumer,
            lease_seconds=settings.automation_lease_seconds,
        )
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
