"""EventSink: the Ray shell around `body.EventSinkLoop` (and, in DuckDB mode, `answers.StoreAnswers`).

The shell opens the analytics store and starts the body's `run` (migrate, then consume) as a background
task from the moment it starts, so a restart after a crash resumes by itself; entries its previous life
left pending are reclaimed with XAUTOCLAIM. In DuckDB mode it is the one process that owns the database
file, so it also answers the queries (`client.EventSinkClient`). In ClickHouse mode any process may
query ClickHouse directly with `analytics.store.open_store`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import ray
import redis.asyncio as aioredis

from actors.event_sink.answers import StoreAnswers
from actors.event_sink.body import EventSinkLoop
from actors.priority import run_in_background, settle_garbage_collector
from analytics.store import open_store


@ray.remote(num_cpus=0)
class EventSink:
    def __init__(
        self,
        redis_url: str,
        analytics_url: str | None,
        data_dir: str,
        *,
        consumer: str,
        duckdb_memory_mb: int = 0,
        **options: Any,
    ) -> None:
        run_in_background()  # a consumer that may lag yields the cores to sending (actors/priority.py)
        settle_garbage_collector()
        self.store = open_store(
            analytics_url,
            data_dir,
            retention_days=options.get("retention_days"),
            duckdb_memory_mb=duckdb_memory_mb,
        )
        self.redis = aioredis.Redis.from_url(redis_url)
        self.body = EventSinkLoop(self.redis, self.store, consumer=consumer, **options)
        self.answers = StoreAnswers(self.store, self.body.migrated)
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self.body.run(self._stop))

    async def ready(self) -> bool:
        await self.body.migrated.wait()
        return True

    async def stats(self) -> dict[str, Any]:
        return dataclasses.asdict(self.body.stats)

    async def memory(self) -> dict[str, Any] | None:
        """The DuckDB store's memory now and its limit (`MAILERS_DUCKDB_MEMORY_MB`); None for ClickHouse."""
        memory = getattr(self.store, "memory", None)
        return None if memory is None else await memory()

    async def events_page(self, workspace: str, query: bytes, now_ms: int | None = None) -> bytes:
        return await self.answers.events_page(workspace, query, now_ms)

    async def summary(self, workspace: str, query: bytes, now_ms: int | None = None) -> bytes:
        return await self.answers.summary(workspace, query, now_ms)

    async def campaign_report(
        self, workspace: str, campaign_id: str, query: bytes, now_ms: int | None = None
    ) -> bytes:
        return await self.answers.campaign_report(workspace, campaign_id, query, now_ms)

    async def message_events(self, workspace: str, message_id: str) -> bytes:
        return await self.answers.message_events(workspace, message_id)

    async def segment_count(self, workspace: str, query: bytes, now_ms: int | None = None) -> bytes:
        return await self.answers.segment_count(workspace, query, now_ms)

    async def segment_members(
        self, workspace: str, query: bytes, after: str | None, limit: int, now_ms: int | None = None
    ) -> bytes:
        return await self.answers.segment_members(workspace, query, after, limit, now_ms)

    async def erase_subscriber(self, workspace: str, email: str, subscriber_id: str) -> bytes:
        return await self.answers.erased(self.body.erase_subscriber(workspace, email, subscriber_id))

    async def export_events(self, workspace: str, query: bytes, now_ms: int | None = None):
        """A Ray streaming generator: one enveloped NDJSON chunk per item."""
        async for reply in self.answers.export_events(workspace, query, now_ms):
            yield reply

    async def shutdown(self) -> None:
        """Finish the batch in hand, then close the store (before the actor is killed on purpose)."""
        self._stop.set()
        await asyncio.wait_for(asyncio.shield(self._task), 30)
        await self.store.close()
        await self.redis.aclose()
