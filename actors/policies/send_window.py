"""Send windows: whether a campaign may send at `now`, and when it may next (pure; takes `now`).

A window is a set of weekdays and a local time span in an IANA timezone. `start < end` is a span within
the day; `start > end` crosses midnight (22:00–06:00 belongs to the day it starts on). Local times are
computed with zoneinfo, so a window follows daylight saving time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.campaigns import WEEKDAYS, Window

_STEP = timedelta(minutes=1)


class InvalidWindow(ValueError):
    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field, self.detail = field, detail


def check(window: Window) -> None:
    """Raise InvalidWindow for a timezone zoneinfo does not know or an empty span."""
    zone(window)
    if window.start == window.end:
        raise InvalidWindow("end", "the window's end equals its start")


def zone(window: Window) -> ZoneInfo:
    name = window.timezone
    if name.startswith(("/", ".")) or ".." in name:
        raise InvalidWindow("timezone", f"unknown timezone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidWindow("timezone", f"unknown timezone {name!r}") from None


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def is_open(window: Window | None, now: datetime) -> bool:
    if window is None:
        return True
    local = now.astimezone(zone(window))
    minute = local.hour * 60 + local.minute
    start, end = _minutes(window.start), _minutes(window.end)
    today = WEEKDAYS[local.weekday()]
    if start < end:
        return today in window.days and start <= minute < end
    yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
    return (today in window.days and minute >= start) or (yesterday in window.days and minute < end)


def next_open(window: Window | None, now: datetime) -> datetime:
    """The first minute at or after `now` inside the window (`now` itself when it is open)."""
    if window is None or is_open(window, now):
        return now
    tz = zone(window)
    local = now.astimezone(tz).replace(second=0, microsecond=0) + _STEP
    start = _minutes(window.start)
    # Candidates are the window's start on each of the next 8 local days: the first open one wins.
    for day in range(8):
        base = (local + timedelta(days=day)).replace(hour=start // 60, minute=start % 60)
        if base >= local.replace(second=0) and is_open(window, base.astimezone(UTC)):
            return base.astimezone(UTC)
    return (local + timedelta(days=8)).astimezone(UTC)
