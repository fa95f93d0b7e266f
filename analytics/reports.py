"""Answers of the summary query, assembled from aggregate rows (pure); the campaign report is
analytics/campaign_report.py.

Buckets are aligned to UTC hours or days; every bucket of the window is present, empty ones with
zeros. Groups are ordered by how many events they hold (most first), then by key; events lacking the
grouped attribute (no tag, no campaign, ...) form the group whose key is null.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from analytics.metrics import Metrics, Tally, tally_rows, total
from analytics.rows import from_epoch_ms
from schemas.events import Event


class Bucket(msgspec.Struct, kw_only=True):
    start: datetime
    metrics: Metrics


class GroupSummary(msgspec.Struct, kw_only=True):
    key: str | None
    totals: Metrics
    buckets: list[Bucket]


class Summary(msgspec.Struct, kw_only=True):
    from_: datetime = msgspec.field(name="from")
    to: datetime
    interval: str
    group_by: str | None
    totals: Metrics
    buckets: list[Bucket]
    groups: list[GroupSummary] | None = None
    groups_truncated: bool = False


Rows = Sequence[Sequence[Any]]


def bucket_starts(from_ms: int, to_ms: int, width: int) -> list[int]:
    return list(range(from_ms // width * width, to_ms, width))


def series(rows: Rows, starts: list[int]) -> list[Bucket]:
    """rows: (bucket_ms, type, hard, events, unique)."""
    tallies = tally_rows(rows, 1)
    return [Bucket(start=from_epoch_ms(s), metrics=tallies.get((s,), Tally()).metrics()) for s in starts]


def _ranked(tallies: dict[tuple[Any, ...], Tally]) -> list[tuple[str, Tally]]:
    return sorted(((key[0], t) for key, t in tallies.items()), key=lambda kt: (-kt[1].events, kt[0]))


def grouped(
    group_rows: Rows, group_series_rows: Rows, starts: list[int], limit: int
) -> tuple[list[GroupSummary], bool]:
    """group_rows: (key, type, ...); group_series_rows: (key, bucket_ms, type, ...)."""
    ranked = _ranked(tally_rows(group_rows, 1))
    by_group: dict[str, list[Sequence[Any]]] = {}
    for row in group_series_rows:
        by_group.setdefault(row[0], []).append(row[1:])
    groups = [
        GroupSummary(key=key or None, totals=tally.metrics(), buckets=series(by_group.get(key, []), starts))
        for key, tally in ranked[:limit]
    ]
    return groups, len(ranked) > limit


__all__ = [
    "Bucket",
    "EventsPage",
    "GroupSummary",
    "Summary",
    "bucket_starts",
    "grouped",
    "series",
    "total",
]


class EventsPage(msgspec.Struct, kw_only=True):
    """One page of `GET /v1/analytics/events`, newest first."""

    data: list[Event]
    has_more: bool
    next_cursor: str | None = None
