"""What other code calls to reach the EventSink: start or find it, and query it (DuckDB mode).

`EventSinkClient` is an `analytics.store.AnalyticsReader`: it encodes each query as msgpack bytes and
raises the analytics errors the actor answered (actors/envelope.py) as if the store were in-process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import msgspec

from actors.envelope import reply_decoder
from actors.event_sink.actor import EventSink
from actors.runtime import ActorHandle, find_actor, start_actor
from analytics.queries import CampaignReportQuery, EventsQuery, ExportQuery, SummaryQuery
from analytics.reports import EventsPage, Summary
from analytics.rows import epoch_ms
from schemas.campaign_report import CampaignReport
from schemas.events import Event
from schemas.segments import MembersPage, SegmentQuery
from schemas.settings import Settings

EVENT_SINK = "event-sink"


def start_event_sink(
    settings: Settings, *, redis_url: str, name: str = EVENT_SINK, **options: Any
) -> ActorHandle:
    """Find the EventSink `name`, creating it if none runs yet.

    In DuckDB mode run exactly one (it owns the file); with ClickHouse, several with distinct names
    share the stream through the consumer group (the name is the consumer name).
    """
    return start_actor(
        EventSink,
        name,
        settings,
        redis_url,
        settings.analytics_url,
        settings.data_dir,
        consumer=name,
        concurrency=64,
        duckdb_memory_mb=settings.duckdb_memory_mb,
        **options,
    )


def find_event_sink(settings: Settings, name: str = EVENT_SINK) -> EventSinkClient | None:
    """The client of the running EventSink, or None where no process started it."""
    handle = find_actor(name, settings)
    return None if handle is None else EventSinkClient(handle)


class EventSinkClient:
    """`analytics.store.AnalyticsReader` over the EventSink actor (the DuckDB mode's query path)."""

    def __init__(self, handle: ActorHandle) -> None:
        self.handle = handle
        self._encode = msgspec.msgpack.Encoder().encode
        self._page = reply_decoder(EventsPage)
        self._summary = reply_decoder(Summary)
        self._report = reply_decoder(CampaignReport)
        self._timeline = reply_decoder(list[Event])
        self._chunk = reply_decoder(bytes)
        self._count = reply_decoder(int)
        self._members = reply_decoder(MembersPage)
        self._done = reply_decoder(bool)

    async def events_page(
        self, workspace: str, query: EventsQuery, *, now: datetime | None = None
    ) -> EventsPage:
        return self._page(await self.handle.events_page.remote(workspace, self._encode(query), _ms(now)))

    async def summary(self, workspace: str, query: SummaryQuery, *, now: datetime | None = None) -> Summary:
        return self._summary(await self.handle.summary.remote(workspace, self._encode(query), _ms(now)))

    async def campaign_report(
        self,
        workspace: str,
        campaign_id: str,
        query: CampaignReportQuery | None = None,
        *,
        now: datetime | None = None,
    ) -> CampaignReport:
        payload = self._encode(query or CampaignReportQuery())
        return self._report(
            await self.handle.campaign_report.remote(workspace, campaign_id, payload, _ms(now))
        )

    async def message_events(self, workspace: str, message_id: str) -> list[Event]:
        return self._timeline(await self.handle.message_events.remote(workspace, message_id))

    async def segment_count(self, workspace: str, query: SegmentQuery, *, now: datetime | None = None) -> int:
        return self._count(await self.handle.segment_count.remote(workspace, self._encode(query), _ms(now)))

    async def segment_members(
        self,
        workspace: str,
        query: SegmentQuery,
        *,
        after: str | None = None,
        limit: int = 20,
        now: datetime | None = None,
    ) -> MembersPage:
        reply = await self.handle.segment_members.remote(
            workspace, self._encode(query), after, limit, _ms(now)
        )
        return self._members(reply)

    async def erase_subscriber(self, workspace: str, email: str, subscriber_id: str) -> None:
        """Erase the person from the analytics store (in both modes the sink does it: it also keeps the
        stream from bringing them back). Done when this returns."""
        self._done(await self.handle.erase_subscriber.remote(workspace, email.lower(), subscriber_id))

    async def export_events(
        self, workspace: str, query: ExportQuery, *, now: datetime | None = None
    ) -> AsyncIterator[bytes]:
        async for ref in self.handle.export_events.remote(workspace, self._encode(query), _ms(now)):
            yield self._chunk(await ref)


def _ms(now: datetime | None) -> int | None:
    return None if now is None else epoch_ms(now)
