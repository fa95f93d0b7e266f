"""CampaignRunnerActor ("campaign-runner"): the thin Ray shell around `body.CampaignRunner`.

It runs the body from the moment it starts, so a restarted actor resumes every launched campaign by
itself (their checkpoints are in Redis). On the send path's tier (actors/priority.py): a campaign's
fan-out is sending.
"""

from __future__ import annotations

import asyncio

import ray
import redis.asyncio as aioredis

from actors.campaigns.body import CampaignRunner, SegmentMembers
from actors.event_sink.client import find_event_sink
from actors.priority import run_as_sender, settle_garbage_collector
from analytics.store import analytics_url, open_store
from schemas.settings import Settings


@ray.remote(num_cpus=0)
class CampaignRunnerActor:
    def __init__(self, settings: Settings, redis_url: str, in_flight: int | None = None) -> None:
        run_as_sender()
        settle_garbage_collector()
        self.settings = settings
        self.redis = aioredis.Redis.from_url(redis_url)
        self._reader: SegmentMembers | None = None
        self.body = CampaignRunner(self.redis, settings, segments=self._segments, in_flight=in_flight)
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self.body.run(self._stop))

    def _segments(self) -> SegmentMembers | None:
        """The analytics reader for segment members: ClickHouse directly, DuckDB through the event sink."""
        if self._reader is None:
            url = analytics_url(self.settings.analytics_url, self.settings.data_dir)
            if url.startswith(("clickhouse://", "clickhouses://")):
                self._reader = open_store(url)
            else:
                self._reader = find_event_sink(self.settings)
        return self._reader

    async def ready(self) -> bool:
        return True

    async def run_until_idle(self) -> int:
        return await self.body.run_until_idle()

    async def shutdown(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.shield(self._task), 30)
        await self.redis.aclose()
