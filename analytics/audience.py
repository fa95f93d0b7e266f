"""The analytics store's audience side, shared by both backends: segment answers and erasure.

`AudienceQueries` is mixed into `SqlAnalyticsStore`; a backend supplies `json` (its `JsonSQL`),
`_upsert_mirror` and `_erase` (blocking, run on the store's thread like every other call).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from analytics.errors import InvalidQuery
from analytics.mirror import MirrorRows
from analytics.rows import from_epoch_ms
from analytics.segments import JsonSQL, SegmentCompiler
from analytics.sql import Dialect
from schemas.segments import (
    ConditionError,
    MembersPage,
    SegmentMember,
    SegmentQuery,
    parse_condition,
)

T = TypeVar("T")
_attributes = msgspec.json.Decoder(dict[str, Any]).decode


class AudienceQueries:
    dialect: Dialect
    json: JsonSQL

    # --- supplied by SqlAnalyticsStore and the backends ------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    def _query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _upsert_mirror(self, rows: MirrorRows) -> None:
        raise NotImplementedError

    def _erase(self, workspace: str, email: str, subscriber_id: str) -> None:
        raise NotImplementedError

    async def segment_count(self, workspace: str, query: SegmentQuery, *, now: datetime | None = None) -> int:
        """How many (not erased) subscribers the segment holds at `now`."""
        compiler = self._compiler(workspace, query, now)
        sql = compiler.count(_condition(query))
        rows = await self._run(self._query, sql, compiler.bind.values)
        return int(rows[0][0])

    async def segment_members(
        self,
        workspace: str,
        query: SegmentQuery,
        *,
        after: str | None = None,
        limit: int = 20,
        now: datetime | None = None,
    ) -> MembersPage:
        """Members by subscriber id, newest first, `limit` per page, after the id `after`."""
        compiler = self._compiler(workspace, query, now)
        where, bind = compiler.where(_condition(query)), compiler.bind
        if after is not None:
            where += f" AND s.id < {bind(after)}"
        sql = (
            f"SELECT s.id, s.email, s.name, s.attributes, s.status, {compiler.dialect.created_ms} "
            f"{compiler.source()} WHERE {where} ORDER BY s.id DESC LIMIT {bind(limit + 1, 'UInt32')}"
            f"{compiler.json.settings}"
        )
        rows = await self._run(self._query, sql, bind.values)
        members = [_member(row) for row in rows[:limit]]
        return MembersPage(data=members, has_more=len(rows) > limit)

    async def erase_subscriber(self, workspace: str, email: str, subscriber_id: str) -> None:
        """GDPR erasure: the mirror keeps a tombstone only, the person's event rows lose their address
        and payloads (counts stay). Synchronous: done when this returns. The event sink keeps events
        still in the stream from bringing them back (actors/event_sink/body.py)."""
        await self._run(self._erase, workspace, email.lower(), subscriber_id)

    def _compiler(self, workspace: str, query: SegmentQuery, now: datetime | None) -> SegmentCompiler:
        return SegmentCompiler(self.dialect, self.json, workspace, query, now or datetime.now(UTC))


def _condition(query: SegmentQuery):
    if query.filter is None:
        return None
    try:
        return parse_condition(query.filter)
    except ConditionError as exc:
        raise InvalidQuery(exc.pointer, exc.detail, exc.code) from None


def _member(row: tuple[Any, ...]) -> SegmentMember:
    subscriber_id, email, name, attributes, status, created_ms = row
    return SegmentMember(
        id=subscriber_id,
        email=email,
        name=name,
        attributes=_attributes(attributes),
        status=status,
        created_at=from_epoch_ms(int(created_ms)),
    )
