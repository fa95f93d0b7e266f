"""Cron schedules in a time zone (automation `schedule` triggers): the check at save and the next due time.

croniter iterates over the trigger zone's wall clock (naive local times), and each time found is then
placed in the zone: "0 9 * * *" in Europe/Berlin is 09:00 local on both sides of a DST change (07:00 UTC
in summer, 08:00 UTC in winter). A local time that a spring-forward change skips (02:30 on the last
Sunday of March) fires one hour later in local terms (the offset before the change applies: 03:30 CEST);
one that a fall-back change repeats (02:30 on the last Sunday of October) fires once, at its first
occurrence.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter


def schedule_problem(cron: str, timezone: str) -> tuple[str, str] | None:
    """(field, why) when the expression or the zone is not one we run, else None."""
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return "timezone", "an IANA time zone, e.g. Europe/Berlin"
    if len(cron.split()) != 5:
        return "cron", "five fields: minute hour day-of-month month day-of-week"
    try:
        croniter(cron, datetime(2026, 1, 1, tzinfo=UTC))
    except (CroniterError, ValueError, KeyError) as exc:
        return "cron", f"not a cron expression: {str(exc)[:200]}"
    return None


def next_due(cron: str, timezone: str, after_ms: int) -> int:
    """The first time strictly after `after_ms` (epoch ms) that the schedule fires, as epoch ms."""
    zone = ZoneInfo(timezone)
    wall = datetime.fromtimestamp(after_ms / 1000, zone).replace(tzinfo=None)
    times = croniter(cron, wall)
    while True:
        found = times.get_next(datetime).replace(tzinfo=zone, fold=0)
        due = int(found.astimezone(UTC).timestamp() * 1000)
        if due > after_ms:
            return due
