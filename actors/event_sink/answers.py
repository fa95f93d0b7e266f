"""The EventSink's query side, in DuckDB mode where its process is the one that owns the database file.

Requests arrive as msgpack bytes (decoded here with one decoder per query type) and answers leave as
msgpack bytes in the one error envelope (actors/envelope.py). Nothing is answered before the store is
migrated. `client.EventSinkClient` is the other end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime

import msgspec

from actors.envelope import Replies
from analytics.queries import CampaignReportQuery, EventsQuery, ExportQuery, SummaryQuery
from analytics.rows import from_epoch_ms
from analytics.store import AnalyticsStore
from schemas.segments import SegmentQuery


class StoreAnswers:
    def __init__(self, store: AnalyticsStore, migrated: asyncio.Event) -> None:
        self.store, self.migrated = store, migrated
        self.replies = Replies()
        self._events = msgspec.msgpack.Decoder(EventsQuery).decode
        self._summary = msgspec.msgpack.Decoder(SummaryQuery).decode
        self._report = msgspec.msgpack.Decoder(CampaignReportQuery).decode
        self._export = msgspec.msgpack.Decoder(ExportQuery).decode
        self._segment = msgspec.msgpack.Decoder(SegmentQuery).decode

    async def events_page(self, workspace: str, query: bytes, now_ms: int | None) -> bytes:
        await self.migrated.wait()
        return await self.replies.answer(
            self.store.events_page(workspace, self._events(query), now=_now(now_ms))
        )

    async def summary(self, workspace: str, query: bytes, now_ms: int | None) -> bytes:
        await self.migrated.wait()
        return await self.replies.answer(
            self.store.summary(workspace, self._summary(query), now=_now(now_ms))
        )

    async def campaign_report(
        self, workspace: str, campaign_id: str, query: bytes, now_ms: int | None
    ) -> bytes:
        await self.migrated.wait()
        parsed = self._report(query)
        return await self.replies.answer(
            self.store.campaign_report(workspace, campaign_id, parsed, now=_now(now_ms))
        )

    async def message_events(self, workspace: str, message_id: str) -> bytes:
        await self.migrated.wait()
        return await self.replies.answer(self.store.message_events(workspace, message_id))

    async def segment_count(self, workspace: str, query: bytes, now_ms: int | None) -> bytes:
        await self.migrated.wait()
        return await self.replies.answer(
            self.store.segment_count(workspace, self._segment(query), now=_now(now_ms))
        )

    async def segment_members(
        self, workspace: str, query: bytes, after: str | None, limit: int, now_ms: int | None
    ) -> bytes:
        await self.migrated.wait()
        parsed = self._segment(query)
        return await self.replies.answer(
            self.store.segment_members(workspace, parsed, after=after, limit=limit, now=_now(now_ms))
        )

    async def erased(self, erasure: Awaitable[None]) -> bytes:
        """The erasure's outcome (True once done) in the envelope."""
        await self.migrated.wait()
        return await self.replies.answer(_done(erasure))

    async def export_events(self, workspace: str, query: bytes, now_ms: int | None) -> AsyncIterator[bytes]:
        await self.migrated.wait()
        chunks = self.store.export_events(workspace, self._export(query), now=_now(now_ms))
        async for reply in self.replies.stream(chunks):
            yield reply


async def _done(work: Awaitable[None]) -> bool:
    await work
    return True


def _now(now_ms: int | None) -> datetime | None:
    return None if now_ms is None else from_epoch_ms(now_ms)
