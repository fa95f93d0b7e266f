"""The send-window policy (pure, takes `now`): weekdays and local hours in a timezone, DST, windows that
cross midnight, and the next opening."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from actors.policies.send_window import InvalidWindow, check, is_open, next_open
from schemas.campaigns import Window

OFFICE = Window(
    days=["mon", "tue", "wed", "thu", "fri"], start="09:00", end="17:00", timezone="Europe/Berlin"
)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_local_hours_in_winter_and_summer():
    assert not is_open(OFFICE, utc(2026, 12, 7, 7, 59))  # Monday 08:59 CET
    assert is_open(OFFICE, utc(2026, 12, 7, 8, 0))  # 09:00 CET
    assert not is_open(OFFICE, utc(2026, 12, 7, 16, 0))  # 17:00 CET: the end is excluded
    assert is_open(OFFICE, utc(2026, 6, 1, 7, 0))  # Monday 09:00 CEST (UTC+2)
    assert not is_open(OFFICE, utc(2026, 6, 1, 15, 0))  # 17:00 CEST


def test_days_and_no_window():
    assert not is_open(OFFICE, utc(2026, 12, 12, 10, 0))  # Saturday
    assert is_open(None, utc(2026, 12, 12, 10, 0))


def test_a_window_across_midnight_belongs_to_the_day_it_starts():
    night = Window(days=["fri"], start="22:00", end="06:00", timezone="UTC")
    assert is_open(night, utc(2026, 12, 11, 23, 0))  # Friday 23:00
    assert is_open(night, utc(2026, 12, 12, 5, 59))  # Saturday 05:59, still Friday's window
    assert not is_open(night, utc(2026, 12, 12, 23, 0))  # Saturday night
    assert not is_open(night, utc(2026, 12, 11, 5, 0))  # Friday early: Thursday's window, not a day


def test_next_open():
    assert next_open(OFFICE, utc(2026, 12, 7, 10, 0)) == utc(2026, 12, 7, 10, 0)  # open now
    assert next_open(OFFICE, utc(2026, 12, 7, 17, 0)) == utc(2026, 12, 8, 8, 0)  # Tuesday 09:00 CET
    assert next_open(OFFICE, utc(2026, 12, 11, 18, 0)) == utc(2026, 12, 14, 8, 0)  # after Friday: Monday


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "/etc/localtime"])
def test_unknown_timezones_are_refused(zone):
    with pytest.raises(InvalidWindow):
        check(Window(timezone=zone))
