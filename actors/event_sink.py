"""EventSink: the Ray actor shell around `analytics.sink.EventSinkLoop`, and the client the gateway uses.

The actor opens the analytics store, migrates it and runs the sink loop as a background task from
the moment it starts (so a restart after a crash resumes by itself; entries its previous life left
pending are reclaimed with XAUTOCLAIM). In DuckDB mode it is the one process that owns the database
file, so it also answers the queries: requests and answers cross Ray as msgpack bytes, and errors come
back as values (`EventSinkClient` raises them again as the analytics errors they were). In ClickHouse
mode any process may query ClickHouse directly with `analytics.store.open_store`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import ray
import redis.asyncio as aioredis

from actors.priority import run_in_background, settle_garbage_collector
from analytics.errors import AnalyticsError, InvalidCursor, InvalidQuery, StoreUnavailable
from analytics.queries import CampaignReportQuery, EventsQuery, ExportQuery, SummaryQuery
from analytics.reports import CampaignReport, EventsPage, Summary
from analytics.rows import epoch_ms, from_epoch_ms
from analytics.sink import EventSinkLoop
from analytics.store import open_store
from schemas.events import Event
from schemas.settings import Settings

log = logging.getLogger("mailers.event_sink")
EVENT_SINK = "event-sink"


class Failure(msgspec.Struct, array_like=True):
    kind: str  # invalid_query | invalid_cursor | unavailable
    pointer: str
    detail: str
    code: str


def _failure(exc: AnalyticsError) -> Failure:
    if isinstance(exc, InvalidCursor):
        return Failure("invalid_cursor", exc.pointer, exc.detail, exc.code)
    if isinstance(exc, InvalidQuery):
        return Failure("invalid_query", exc.pointer, exc.detail, exc.code)
    return Failure("unavailable", "", str(exc), "unavailable")


def _raise(failure: Failure) -> None:
    if failure.kind == "invalid_cursor":
        raise InvalidCursor(failure.detail)
    if failure.kind == "invalid_query":
        raise InvalidQuery(failure.pointer, failure.detail, failure.code)
    raise StoreUnavailable(failure.detail)


@ray.remote(num_cpus=0)
class EventSink:
    def __init__(
        self,
        redis_url: str,
        analytics_url: str | None,
        data_dir: str,
        *,
        consumer: str = EVENT_SINK,
        batch_size: int = 5000,
        max_latency: float = 0.25,
        claim_idle: float = 30.0,
        retention_days: int | None = None,
    ) -> None:
        run_in_background()  # a consumer that may lag yields the cores to sending (actors/priority.py)
        settle_garbage_collector()
        self.store = open_store(analytics_url, data_dir, retention_days=retention_days)
        self.redis = aioredis.Redis.from_url(redis_url)
        self.loop = EventSinkLoop(
            self.redis,
            self.store,
            consumer=consumer,
            batch_size=batch_size,
            max_latency=max_latency,
            claim_idle=claim_idle,
        )
        # Built here, not at module level: Ray may pickle the class by value, and decoders do not pickle.
        self._encode = msgspec.msgpack.Encoder().encode
        self._decoders: dict[type, msgspec.msgpack.Decoder[Any]] = {}
        self.retention = timedelta(days=retention_days) if retention_days else None
        self._stop = asyncio.Event()
        self._migrated = asyncio.Event()
        self._task = asyncio.get_event_loop().create_task(self._main())

    async def _main(self) -> None:
        delay = 1.0
        while not self._migrated.is_set():
            try:
                await self.store.migrate()
                self._migrated.set()
            except AnalyticsError as exc:
                log.warning("analytics migration failed, retrying in %.0fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        purging = asyncio.get_running_loop().create_task(self._purge_hourly())
        try:
            await self.loop.run(self._stop)
        finally:
            purging.cancel()

    async def _purge_hourly(self) -> None:
        """DuckDB has no TTL: delete expired events once an hour (ClickHouse drops parts by its TTL)."""
        purge = getattr(self.store, "purge_expired", None)
        while self.retention is not None and purge is not None:
            try:
                removed = await purge(self.retention, now=datetime.now(UTC))
                log.info("retention: %d events older than %s deleted", removed, self.retention)
            except AnalyticsError as exc:
                log.warning("retention purge failed: %s", exc)
            await asyncio.sleep(3600)

    def _decode(self, kind: type, payload: bytes) -> Any:
        decoder = self._decoders.get(kind)
        if decoder is None:
            decoder = self._decoders[kind] = msgspec.msgpack.Decoder(kind)
        return decoder.decode(payload)

    async def _answer(self, work: Any) -> bytes:
        await self._migrated.wait()
        try:
            return self._encode((None, await work))
        except AnalyticsError as exc:
            return self._encode((_failure(exc), None))

    async def ready(self) -> bool:
        await self._migrated.wait()
        return True

    async def stats(self) -> dict[str, Any]:
        return dataclasses.asdict(self.loop.stats)

    async def events_page(self, workspace: str, query: bytes, now_ms: int | None = None) -> bytes:
        return await self._answer(
            self.store.events_page(workspace, self._decode(EventsQuery, query), now=_now(now_ms))
        )

    async def summary(self, workspace: str, query: bytes, now_ms: int | None = None) -> bytes:
        return await self._answer(
            self.store.summary(workspace, self._decode(SummaryQuery, query), now=_now(now_ms))
        )

    async def campaign_report(
        self, workspace: str, campaign_id: str, query: bytes, now_ms: int | None = None
    ) -> bytes:
        parsed = self._decode(CampaignReportQuery, query)
        return await self._answer(
            self.store.campaign_report(workspace, campaign_id, parsed, now=_now(now_ms))
        )

    async def message_events(self, workspace: str, message_id: str) -> bytes:
        return await self._answer(self.store.message_events(workspace, message_id))

    async def export_events(self, workspace: str, query: bytes, now_ms: int | None = None):
        """A Ray streaming generator: one (failure, NDJSON chunk) pair per item."""
        await self._migrated.wait()
        try:
            async for chunk in self.store.export_events(
                workspace, self._decode(ExportQuery, query), now=_now(now_ms)
            ):
                yield self._encode((None, chunk))
        except AnalyticsError as exc:
            yield self._encode((_failure(exc), None))

    async def shutdown(self) -> None:
        """Finish the batch in hand, then close the store (before the actor is killed on purpose)."""
        self._stop.set()
        await asyncio.wait_for(asyncio.shield(self._task), 30)
        await self.store.close()
        await self.redis.aclose()


def _now(now_ms: int | None) -> datetime | None:
    return None if now_ms is None else from_epoch_ms(now_ms)


def start_event_sink(
    settings: Settings, *, redis_url: str, name: str = EVENT_SINK, **options: Any
) -> ray.actor.ActorHandle:
    """Find the detached EventSink `name` in the settings' namespace, creating it if none runs yet.

    In DuckDB mode run exactly one (it owns the file); with ClickHouse, several with distinct names
    share the stream through the consumer group (the name is the consumer name).
    """
    return EventSink.options(
        name=name,
        namespace=settings.ray_namespace,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=-1,
        max_concurrency=64,
    ).remote(redis_url, settings.analytics_url, settings.data_dir, consumer=name, **options)


class EventSinkClient:
    """`analytics.store.AnalyticsReader` over the EventSink actor (the DuckDB mode's query path)."""

    def __init__(self, handle: ray.actor.ActorHandle) -> None:
        self.handle = handle
        self._encode = msgspec.msgpack.Encoder().encode
        self._page = msgspec.msgpack.Decoder(tuple[Failure | None, EventsPage | None]).decode
        self._summary = msgspec.msgpack.Decoder(tuple[Failure | None, Summary | None]).decode
        self._report = msgspec.msgpack.Decoder(tuple[Failure | None, CampaignReport | None]).decode
        self._timeline = msgspec.msgpack.Decoder(tuple[Failure | None, list[Event] | None]).decode
        self._chunk = msgspec.msgpack.Decoder(tuple[Failure | None, bytes | None]).decode

    @staticmethod
    def _unwrap(reply: tuple[Failure | None, Any]) -> Any:
        failure, value = reply
        if failure is not None:
            _raise(failure)
        return value

    async def events_page(
        self, workspace: str, query: EventsQuery, *, now: datetime | None = None
    ) -> EventsPage:
        reply = await self.handle.events_page.remote(workspace, self._encode(query), _ms(now))
        return self._unwrap(self._page(reply))

    async def summary(self, workspace: str, query: SummaryQuery, *, now: datetime | None = None) -> Summary:
        reply = await self.handle.summary.remote(workspace, self._encode(query), _ms(now))
        return self._unwrap(self._summary(reply))

    async def campaign_report(
        self,
        workspace: str,
        campaign_id: str,
        query: CampaignReportQuery | None = None,
        *,
        now: datetime | None = None,
    ) -> CampaignReport:
        payload = self._encode(query or CampaignReportQuery())
        reply = await self.handle.campaign_report.remote(workspace, campaign_id, payload, _ms(now))
        return self._unwrap(self._report(reply))

    async def message_events(self, workspace: str, message_id: str) -> list[Event]:
        return self._unwrap(self._timeline(await self.handle.message_events.remote(workspace, message_id)))

    async def export_events(
        self, workspace: str, query: ExportQuery, *, now: datetime | None = None
    ) -> AsyncIterator[bytes]:
        async for ref in self.handle.export_events.remote(workspace, self._encode(query), _ms(now)):
            yield self._unwrap(self._chunk(await ref))


def _ms(now: datetime | None) -> int | None:
    return None if now is None else epoch_ms(now)
