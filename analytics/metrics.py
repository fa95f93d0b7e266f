"""The metric definitions both backends share (docs/analytics.md, "Metrics").

A backend aggregates rows `(*dimensions, type, is_hard_bounce, events, unique_recipients)` where
`unique_recipients` counts distinct (message id, recipient) pairs; everything below is plain Python, so
both backends answer with identical numbers by construction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

OPENED, CLICKED = "message.opened", "message.clicked"
# Event types a summary counts; the rest never leave the database in an aggregate query.
METRIC_TYPES: tuple[str, ...] = (
    "message.sent",
    "message.delivered",
    "message.bounced",
    "message.complained",
    OPENED,
    CLICKED,
    "subscriber.unsubscribed",
    "message.suppressed",
    "message.failed",
)
UNIQUE_TYPES: tuple[str, ...] = (OPENED, CLICKED)
_COUNTED = {
    "message.sent": "sent",
    "message.delivered": "delivered",
    "message.complained": "complained",
    OPENED: "opened",
    CLICKED: "clicked",
    "subscriber.unsubscribed": "unsubscribed",
    "message.suppressed": "suppressed",
    "message.failed": "failed",
}


class Metrics(msgspec.Struct, kw_only=True):
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    bounced_hard: int = 0
    bounced_soft: int = 0
    complained: int = 0
    opened: int = 0
    opened_unique: int = 0
    clicked: int = 0
    clicked_unique: int = 0
    unsubscribed: int = 0
    suppressed: int = 0
    failed: int = 0
    delivery_rate: float = 0.0
    bounce_rate: float = 0.0
    complaint_rate: float = 0.0
    open_rate: float = 0.0
    click_rate: float = 0.0


def _rate(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


class Tally:
    """Accumulates aggregate rows into counts, then derives the rates."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.events = 0

    def add(self, event_type: str, hard: Any, events: int, unique: int) -> None:
        self.events += events
        if event_type == "message.bounced":
            self._bump("bounced", events)
            self._bump("bounced_hard" if hard else "bounced_soft", events)
            return
        name = _COUNTED.get(event_type)
        if name is not None:
            self._bump(name, events)
            if event_type in UNIQUE_TYPES:
                self._bump(name + "_unique", unique)

    def _bump(self, name: str, value: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + int(value)

    def metrics(self) -> Metrics:
        m = Metrics(**self.counts)
        m.delivery_rate = _rate(m.delivered, m.sent)
        m.bounce_rate = _rate(m.bounced, m.sent)
        m.complaint_rate = _rate(m.complained, m.delivered)
        m.open_rate = _rate(m.opened_unique, m.delivered)
        m.click_rate = _rate(m.clicked_unique, m.delivered)
        return m


def tally_rows(rows: Iterable[Sequence[Any]], width: int) -> dict[tuple[Any, ...], Tally]:
    """Group aggregate rows by their first `width` values (the dimensions)."""
    tallies: dict[tuple[Any, ...], Tally] = {}
    for row in rows:
        key = tuple(row[:width])
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = Tally()
        tally.add(*row[width:])
    return tallies


def total(rows: Iterable[Sequence[Any]]) -> Metrics:
    return tally_rows(rows, 0).get((), Tally()).metrics()
