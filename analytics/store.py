"""The analytics store's interface, and `open_store`, which picks the backend from a URL.

duckdb:///abs/path/analytics.duckdb        embedded DuckDB file (the default, under the data dir)
chdb:///abs/path[?database=mailers]        embedded ClickHouse (chDB)
clickhouse://user:pw@host:8123/db          a ClickHouse server (clickhouses:// for TLS)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from analytics.queries import CampaignReportQuery, EventsQuery, ExportQuery, SummaryQuery, WindowPolicy
from analytics.reports import EventsPage, Summary
from schemas.campaign_report import CampaignReport
from schemas.events import Event
from schemas.segments import MembersPage, SegmentQuery
from schemas.subscriber_chunks import NewMembers

DEFAULT_DUCKDB_FILE = "analytics.duckdb"


class AudienceReader(Protocol):
    """The segment queries the runners (campaign audiences, automation branches and segment entry) need."""

    async def segment_count(
        self, workspace: str, query: SegmentQuery, *, now: datetime | None = None
    ) -> int: ...

    async def segment_members(
        self,
        workspace: str,
        query: SegmentQuery,
        *,
        after: str | None = None,
        limit: int = 20,
        now: datetime | None = None,
    ) -> MembersPage: ...


class AnalyticsReader(AudienceReader, Protocol):
    """The queries behind /v1/analytics/*, campaign reports and old message timelines."""

    async def events_page(
        self, workspace: str, query: EventsQuery, *, now: datetime | None = None
    ) -> EventsPage: ...

    def export_events(
        self, workspace: str, query: ExportQuery, *, now: datetime | None = None
    ) -> AsyncIterator[bytes]: ...

    async def summary(
        self, workspace: str, query: SummaryQuery, *, now: datetime | None = None
    ) -> Summary: ...

    async def campaign_report(
        self,
        workspace: str,
        campaign_id: str,
        query: CampaignReportQuery | None = None,
        *,
        now: datetime | None = None,
    ) -> CampaignReport: ...

    async def message_events(self, workspace: str, message_id: str) -> list[Event]: ...

    async def erase_subscriber(self, workspace: str, email: str, subscriber_id: str) -> None: ...


class AnalyticsStore(AnalyticsReader, Protocol):
    backend: str

    async def migrate(self, *, before: int | None = None) -> list[int]: ...

    async def insert(self, events: Sequence[Event], chunks: Sequence[NewMembers] = ()) -> int: ...

    async def close(self) -> None: ...


def analytics_url(url: str | None, data_dir: str | Path) -> str:
    """The configured URL, or the embedded DuckDB file in the data dir."""
    return url or f"duckdb://{Path(data_dir).resolve() / DEFAULT_DUCKDB_FILE}"


def open_store(
    url: str | None,
    data_dir: str | Path = ".",
    *,
    policy: WindowPolicy | None = None,
    retention_days: int | None = None,
    duckdb_memory_mb: int = 0,
) -> AnalyticsStore:
    """Open (not migrate) the store `url` names; None means DuckDB in `data_dir`. A DuckDB file's
    memory is limited to `duckdb_memory_mb` (0: DuckDB's default)."""
    url = analytics_url(url, data_dir)
    scheme, _, rest = url.partition("://")
    if scheme == "duckdb":
        from analytics.duckdb_backend import DuckDBStore

        return DuckDBStore(rest or ":memory:", policy=policy, memory_limit_mib=duckdb_memory_mb)
    if scheme in ("clickhouse", "clickhouses", "chdb"):
        from analytics.clickhouse_backend import ClickHouseStore

        return ClickHouseStore(url, policy=policy, retention_days=retention_days)
    raise ValueError(
        f"unsupported analytics URL scheme {scheme!r}: use duckdb, clickhouse, clickhouses or chdb"
    )
