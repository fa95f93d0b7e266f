"""The query logic both backends share. A backend supplies a `Dialect` and five blocking primitives.

Every call into the database runs on the store's own thread pool (one thread unless the backend says
otherwise), never on the event loop; driver exceptions become `StoreUnavailable` here, in one place.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from analytics import reports
from analytics.audience import AudienceQueries
from analytics.campaign_report import build_report
from analytics.errors import AnalyticsError, StoreUnavailable
from analytics.metrics import METRIC_TYPES
from analytics.mirror import (
    MEMBERSHIP_COLUMNS,
    SUBSCRIBER_COLUMNS,
    ChunkColumns,
    MirrorRows,
    chunk_columns,
    columns,
    mirror_rows,
)
from analytics.queries import (
    GROUP_DIMENSIONS,
    INTERVAL_MS,
    CampaignReportQuery,
    EventFilter,
    EventsQuery,
    ExportQuery,
    PageCursor,
    SummaryQuery,
    WindowPolicy,
    check_buckets,
    decode_cursor,
    encode_cursor,
    event_filter,
    filters_fingerprint,
    resolve_window,
)
from analytics.rows import event_columns, from_epoch_ms, ndjson_lines, row_event
from analytics.sql import Dialect, split_sets
from schemas.campaign_report import CampaignReport
from schemas.events import Event
from schemas.subscriber_chunks import NewMembers

T = TypeVar("T")
Rows = list[tuple[Any, ...]]


class SqlAnalyticsStore(AudienceQueries):
    backend = ""
    dialect: Dialect
    driver_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, *, policy: WindowPolicy | None = None, threads: int = 1) -> None:
        self.policy = policy or WindowPolicy()
        self._executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix=f"analytics-{self.backend}"
        )
        self._closed = False

    # --- blocking primitives a backend implements -----------------------------------------------------
    def _migrate(self, before: int | None = None) -> list[int]:
        raise NotImplementedError

    def _insert(self, columns: dict[str, list[Any]]) -> None:
        raise NotImplementedError

    def _query(self, sql: str, params: dict[str, Any]) -> Rows:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    # --- running them -------------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except AnalyticsError:
            raise
        except self.driver_errors as exc:
            raise StoreUnavailable(f"{self.backend}: {exc}") from exc

    async def _select(
        self, flt: EventFilter, after: tuple[int, str] | None, limit: int | None, newest_first: bool
    ) -> Rows:
        return await self._run(self._query, *self.dialect.select_events(flt, after, limit, newest_first))

    async def _aggregate(
        self, flt: EventFilter, sets: list[tuple[str, ...]], width_ms: int | None = None
    ) -> dict[tuple[str, ...], Rows]:
        """Aggregate rows per grouping set: one scan for the sets without `tag`, one for those with it
        (a tagged row repeats per tag, which only the tag groupings may see)."""
        found: dict[tuple[str, ...], Rows] = {}
        for part in ([g for g in sets if "tag" not in g], [g for g in sets if "tag" in g]):
            if part:
                sql, params, dims = self.dialect.aggregate(flt, part, width_ms)
                found.update(split_sets(await self._run(self._query, sql, params), dims, part))
        return found

    # --- the public interface (analytics.store.AnalyticsStore) -----------------------------------------
    async def migrate(self, *, before: int | None = None) -> list[int]:
        """Apply every migration not yet applied (with `before`, only those of a lower version: the store
        as an older release left it); returns the versions now applied."""
        return await self._run(self._migrate, before)

    async def insert(self, events: Sequence[Event], chunks: Sequence[NewMembers] = ()) -> int:
        """Store a batch; events already stored are ignored. Returns the batch size after dedupe by id.

        `chunks` are new subscribers in their columnar form (`schemas/subscriber_chunks.py`): their two
        events each are stored and mirrored from the columns, never built as `Event`s."""
        if not events and not chunks:
            return 0
        return await self._run(self._insert_events, events, chunks)

    def _insert_events(self, events: Sequence[Event], chunks: Sequence[NewMembers] = ()) -> int:
        # Rows are built on the store's thread too: 5,000 events take ~20 ms of CPU, too long for the loop.
        stored = 0
        if chunks:
            # Before the batch's events: an event about one of these subscribers (an update in the same
            # write) has a higher version, and the mirror keeps the highest whatever the order.
            found = chunk_columns(chunks)
            if found.events["id"]:  # every row of them may have been about erased addresses
                self._insert_chunk_events(found)
                self._upsert_mirror_columns(found.subscribers, found.memberships, new=True)
                stored += len(found.events["id"])
        if events:
            columns = event_columns(events)
            self._insert(columns)
            # The subscriber mirror from the same batch, after the events: a crash in between redelivers
            # the batch, and both writes are idempotent.
            mirror = mirror_rows(events)
            if mirror:
                self._upsert_mirror(mirror)
            stored += len(columns["id"])
        return stored

    def _insert_chunk_events(self, found: ChunkColumns) -> None:
        """The events of subscriber chunks. A backend may skip what only message and custom events need
        (DuckDB's `event_days`: segments cannot count `subscriber.created` or `list.*` events)."""
        self._insert(found.all_event_columns())

    def _upsert_mirror(self, rows: MirrorRows) -> None:
        self._upsert_mirror_columns(
            columns(rows.subscribers, SUBSCRIBER_COLUMNS), columns(rows.memberships, MEMBERSHIP_COLUMNS)
        )

    def _upsert_mirror_columns(
        self, subscribers: dict[str, list[Any]], memberships: dict[str, list[Any]], *, new: bool = False
    ) -> None:
        """Upsert mirror rows (the highest version wins). `new`: rows of subscribers just created, which
        are stored already only on a replay (a backend may insert them plainly first)."""
        raise NotImplementedError

    async def events_page(
        self, workspace: str, query: EventsQuery, *, now: datetime | None = None
    ) -> reports.EventsPage:
        cursor = decode_cursor(query)
        if cursor is None:
            window = resolve_window(query.from_, query.to, now=now or _utcnow(), policy=self.policy)
            after = None
        else:
            window, after = (cursor.from_ms, cursor.to_ms), (cursor.created_ms, cursor.event_id)
        rows = await self._select(event_filter(workspace, query, window), after, query.limit + 1, True)
        page, has_more = rows[: query.limit], len(rows) > query.limit
        next_cursor = None
        if has_more:
            last = page[-1]
            next_cursor = encode_cursor(
                PageCursor(last[2], last[0], window[0], window[1], filters_fingerprint(query))
            )
        return reports.EventsPage(
            data=[row_event(r) for r in page], has_more=has_more, next_cursor=next_cursor
        )

    async def export_events(
        self, workspace: str, query: ExportQuery, *, now: datetime | None = None, chunk_rows: int = 5000
    ) -> AsyncIterator[bytes]:
        """NDJSON, oldest first, one chunk of at most `chunk_rows` lines per item; memory stays bounded."""
        window = resolve_window(query.from_, query.to, now=now or _utcnow(), policy=self.policy)
        async for chunk in self._export_chunks(event_filter(workspace, query, window), chunk_rows):
            yield chunk

    async def _export_chunks(self, flt: EventFilter, chunk_rows: int) -> AsyncIterator[bytes]:
        """Keyset pages in sort-key order (cheap in ClickHouse, whose table is sorted that way)."""
        after: tuple[int, str] | None = None
        while True:
            rows = await self._select(flt, after, chunk_rows, False)
            if rows:
                yield ndjson_lines(rows)
            if len(rows) < chunk_rows:
                return
            after = (rows[-1][2], rows[-1][0])

    async def summary(
        self, workspace: str, query: SummaryQuery, *, now: datetime | None = None
    ) -> reports.Summary:
        window = resolve_window(query.from_, query.to, now=now or _utcnow(), policy=self.policy)
        check_buckets(window, query.interval, self.policy)
        flt = _metric_filter(event_filter(workspace, query, window))
        width = INTERVAL_MS[query.interval]
        starts = reports.bucket_starts(window[0], window[1], width)
        dim = GROUP_DIMENSIONS[query.group_by] if query.group_by is not None else None
        sets: list[tuple[str, ...]] = [(), ("bucket",)] + ([(dim,), (dim, "bucket")] if dim else [])
        found = await self._aggregate(flt, sets, width)
        answer = reports.Summary(
            from_=from_epoch_ms(window[0]),
            to=from_epoch_ms(window[1]),
            interval=query.interval,
            group_by=query.group_by,
            totals=reports.total(found[()]),
            buckets=reports.series(found[("bucket",)], starts),
        )
        if dim is not None:
            answer.groups, answer.groups_truncated = reports.grouped(
                found[(dim,)], found[(dim, "bucket")], starts, self.policy.max_groups
            )
        return answer

    async def campaign_report(
        self,
        workspace: str,
        campaign_id: str,
        query: CampaignReportQuery | None = None,
        *,
        now: datetime | None = None,
    ) -> CampaignReport:
        """The campaign report (analytics/campaign_report.py); the whole history unless a window is given."""
        query = query or CampaignReportQuery()
        window = resolve_window(
            query.from_, query.to, now=now or _utcnow(), policy=self.policy, default=False
        )
        return await build_report(self._run_query, self.dialect, workspace, campaign_id, window)

    async def _run_query(self, sql: str, params: dict[str, Any]) -> Rows:
        return await self._run(self._query, sql, params)

    async def message_events(self, workspace: str, message_id: str) -> list[Event]:
        """Every stored event of one message, oldest first (the timeline once Redis has let it go)."""
        rows = await self._select(EventFilter(workspace=workspace, message_id=message_id), None, None, False)
        return [row_event(r) for r in rows]

    async def close(self) -> None:
        """Close the database; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        await self._run(self._close)
        self._executor.shutdown(wait=True)


def _metric_filter(flt: EventFilter) -> EventFilter:
    return msgspec.structs.replace(flt, types=METRIC_TYPES)


def _utcnow() -> datetime:
    return datetime.now(UTC)
