"""CampaignRunnerActor ("campaign-runner"): the thin Ray shell around `body.CampaignRunner`.

It runs the body from the moment it starts, so a restarted actor resumes every launched campaign by
itself (their checkpoints are in Redis). On the send path's tier (actors/priority.py): a campaign's
fan-out is sending.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray
import redis.asyncio as aioredis

from actors.campaigns.body import CampaignRunner, SegmentsUnavailable
from actors.event_sink.client import find_event_sink
from actors.priority import run_as_sender, settle_garbage_collector
from analytics.campaign_report import variant_metric
from analytics.store import analytics_url, open_store
from schemas.settings import Settings


@ray.remote(num_cpus=0)
class CampaignRunnerActor:
    def __init__(
        self,
        settings: Settings,
        redis_url: str,
        in_flight: int | None = None,
        index: int = 0,
        runners: int = 1,
    ) -> None:
        run_as_sender()
        settle_garbage_collector()
        self.settings = settings
        self.redis = aioredis.Redis.from_url(redis_url)
        self._reader: Any = None
        self.body = CampaignRunner(
            self.redis,
            settings,
            segments=self._segments,
            variant_metric=self._variant_metric,
            in_flight=in_flight,
            index=index,
            runners=runners,
        )
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self.body.run(self._stop))

    def _segments(self) -> Any:
        """The analytics reader (segment members, the campaign report): ClickHouse directly, DuckDB
        through the event sink; None while neither answers."""
        if self._reader is None:
            url = analytics_url(self.settings.analytics_url, self.settings.data_dir)
            if url.startswith(("clickhouse://", "clickhouses://")):
                self._reader = open_store(url)
            else:
                self._reader = find_event_sink(self.settings)
        return self._reader

    async def _variant_metric(self, workspace: str, campaign_id: str, metric: str) -> dict[str, float]:
        """An A/B test's figures from the campaign report (analytics.campaign_report.variant_metric)."""
        reader = self._segments()
        if reader is None:
            raise SegmentsUnavailable("no analytics reader for the A/B test's metric")
        return await variant_metric(reader, workspace, campaign_id, metric)

    async def ready(self) -> bool:
        return True

    async def run_until_idle(self) -> int:
        return await self.body.run_until_idle()

    async def shutdown(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.shield(self._task), 30)
        await self.redis.aclose()
