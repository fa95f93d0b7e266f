"""`wait` until a time of day: the next such local time, in a fixed zone or the subscriber's."""

from __future__ import annotations

from datetime import UTC, datetime

from actors.automations.body import wake_at_ms
from schemas.audience import SubscriberRecord
from schemas.automations import WaitStep


def ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)


def test_until_is_the_next_local_time_of_day_across_dst():
    nobody = SubscriberRecord(id="sub_x", email="a@example.com", created_ms=0)
    nine_berlin = WaitStep(id="w", until="09:00", timezone="Europe/Berlin")
    # Saturday noon UTC before summer time: the next 09:00 in Berlin is Sunday's, already CEST (07:00 UTC).
    assert wake_at_ms(nine_berlin, nobody, ms(2026, 3, 28, 12)) == ms(2026, 3, 29, 7)
    # Before 09:00 local the same day: today's (CET, 08:00 UTC).
    assert wake_at_ms(nine_berlin, nobody, ms(2026, 1, 10, 6)) == ms(2026, 1, 10, 8)
    # Exactly at 09:00 local: the next day's, never zero wait.
    assert wake_at_ms(nine_berlin, nobody, ms(2026, 1, 10, 8)) == ms(2026, 1, 11, 8)


def test_until_in_the_subscribers_zone_and_a_fallback_to_utc():
    step = WaitStep(id="w", until="08:30", timezone="subscriber")
    tokyo = SubscriberRecord(
        id="sub_x", email="a@example.com", created_ms=0, attributes={"timezone": "Asia/Tokyo"}
    )
    assert wake_at_ms(step, tokyo, ms(2026, 6, 1, 0)) == ms(2026, 6, 1, 23, 30)
    unknown = SubscriberRecord(
        id="sub_y", email="b@example.com", created_ms=0, attributes={"timezone": "Nowhere/X"}
    )
    assert wake_at_ms(step, unknown, ms(2026, 6, 1, 0)) == ms(2026, 6, 1, 8, 30)
    assert wake_at_ms(WaitStep(id="w", seconds=90), unknown, 1_000) == 91_000
