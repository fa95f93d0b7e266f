"""Quotas: the per-second bucket, calendar windows (UTC), their persistence, and both combined."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from actors.policies.quota import UNLIMITED, ServerQuota, TokenBucket, WindowQuota, window_key, window_ttl


def at(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()


def max_in_any_span(grants: list[tuple[float, int]], span: float) -> int:
    """The most granted inside any half-open span [t, t + span) that starts at a grant."""
    return max(sum(c for u, c in grants if t <= u < t + span) for t, _ in grants)


def simulate(limiter_grant, seed: int, seconds: float = 60.0) -> list[tuple[float, int, int]]:
    """(time, asked, granted) of requests at random moments over `seconds`."""
    rng = random.Random(seed)
    now, calls = 1_000.0, []
    while now < 1_000.0 + seconds:
        asked = rng.randint(1, 8)
        calls.append((now, asked, limiter_grant(asked, now)))
        now += rng.choice([0.0, 0.001, 0.05, 0.13, 0.2, 0.37, 0.5, 0.999, 1.0])
    return calls


def granted(calls: list[tuple[float, int, int]]) -> list[tuple[float, int]]:
    return [(t, g) for t, _, g in calls if g]


@pytest.mark.parametrize("seed", range(5))
def test_per_second_5_never_grants_more_than_5_in_any_second_over_a_minute(seed: int) -> None:
    calls = simulate(ServerQuota(per_second=5).grant, seed)
    assert max_in_any_span(granted(calls), 1.0) <= 5
    for i, (now, asked, got) in enumerate(calls):  # it refuses only when the last second is full
        if got < asked:
            assert got + sum(g for t, _, g in calls[:i] if t > now - 1.0) == 5


def test_bucket_grants_a_whole_burst_at_once_then_nothing_until_tokens_return() -> None:
    bucket = TokenBucket(5)
    assert bucket.reserve(8, 10.0) == 5
    assert bucket.wait_time(1, 10.5) == pytest.approx(0.5)
    assert bucket.reserve(1, 10.999) == 0
    assert bucket.reserve(3, 11.0) == 3


def test_bucket_wait_time_counts_tokens_returning_in_order() -> None:
    bucket = TokenBucket(10, burst=4)  # period 0.4 s
    bucket.reserve(1, 0.0)
    bucket.reserve(3, 0.1)
    assert bucket.wait_time(1, 0.2) == pytest.approx(0.2)
    assert bucket.wait_time(2, 0.2) == pytest.approx(0.3)
    assert bucket.wait_time(99, 0.2) == pytest.approx(0.3)  # never more than a burst at once
    assert bucket.wait_time(1, 0.6) == 0.0


def test_bucket_long_run_rate_and_burst_bound_over_a_minute() -> None:
    bucket = TokenBucket(20, burst=5)  # at most 5 per 0.25 s
    grants = granted(simulate(bucket.reserve, seed=7))
    assert max_in_any_span(grants, 0.25) <= 5
    assert sum(c for _, c in grants) <= 20 * 60 + 5


def test_bucket_clock_stepping_back_grants_nothing_extra() -> None:
    bucket = TokenBucket(2)
    assert bucket.reserve(2, 100.0) == 2
    assert bucket.reserve(2, 99.0) == 0
    assert bucket.reserve(2, 100.5) == 0
    assert bucket.reserve(2, 101.0) == 2


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        TokenBucket(5, burst=0)


def test_window_keys_are_utc_calendar_windows() -> None:
    now = at(2026, 11, 26, 8, 12, 59)
    assert WindowQuota(1, 1, 1).window_keys(now) == ["m:202611260812", "h:2026112608", "d:20261126"]
    assert WindowQuota(per_day=1).window_keys(now) == ["d:20261126"]
    assert window_key("d", at(2026, 11, 26, 23, 59, 59)) == "d:20261126"
    assert window_key("d", at(2026, 11, 27)) == "d:20261127"


def test_window_ttl_outlives_the_window_by_a_full_length() -> None:
    assert [window_ttl(k) for k in ("m:202611260812", "h:2026112608", "d:20261126")] == [120, 7200, 172800]
    for bad in ("x:2026", "d:2026112", "d:2026112a", "20261126"):
        with pytest.raises(ValueError):
            window_ttl(bad)


def test_day_window_rolls_at_utc_midnight() -> None:
    quota = WindowQuota(per_day=3)
    before_midnight = at(2026, 11, 26, 23, 59, 59)
    quota.consume(3, before_midnight)
    assert quota.available(before_midnight) == 0
    assert quota.seconds_until_room(before_midnight) == pytest.approx(1.0)
    assert quota.available(at(2026, 11, 27)) == 3
    assert quota.seconds_until_room(at(2026, 11, 27)) == 0.0


def test_daily_counts_resume_from_a_loaded_snapshot() -> None:
    morning = at(2026, 11, 26, 9)
    first = WindowQuota(per_minute=100, per_day=10)
    first.consume(7, morning)
    persisted = first.snapshot(morning)
    assert persisted == {"m:202611260900": 7, "d:20261126": 7}

    restarted = WindowQuota(per_minute=100, per_day=10)
    restarted.load(persisted)
    restarted.load(persisted)  # loading twice changes nothing
    assert restarted.available(at(2026, 11, 26, 15)) == 3
    assert restarted.available(at(2026, 11, 27, 0, 0, 1)) == 10


def test_load_keeps_the_larger_count_and_ignores_unlimited_windows() -> None:
    now = at(2026, 11, 26, 9)
    quota = WindowQuota(per_day=10)
    quota.consume(4, now)
    quota.load({"d:20261126": 2, "h:2026112609": 9})
    assert quota.snapshot(now) == {"d:20261126": 4}
    with pytest.raises(ValueError):
        quota.load({"garbage": 1})


def test_snapshot_drops_windows_that_have_rolled() -> None:
    quota = WindowQuota(per_minute=5)
    quota.consume(2, at(2026, 11, 26, 9, 0, 30))
    assert quota.snapshot(at(2026, 11, 26, 9, 1)) == {}


def test_room_waits_for_every_exhausted_window() -> None:
    quota = WindowQuota(per_minute=2, per_hour=3)
    t = at(2026, 11, 26, 9, 10, 20)
    quota.consume(2, t)
    assert quota.available(t) == 0
    assert quota.seconds_until_room(t) == pytest.approx(40.0)  # the minute rolls
    t2 = at(2026, 11, 26, 9, 11, 0)
    assert quota.available(t2) == 1
    quota.consume(1, t2)
    assert quota.seconds_until_room(t2) == pytest.approx(49 * 60)  # the hour must roll too


def test_no_limits_means_unlimited() -> None:
    quota = ServerQuota()
    assert quota.available(0.0) == UNLIMITED
    assert quota.grant(10_000, 0.0) == 10_000
    assert quota.next_refill(0.0) == 0.0
    assert quota.window_keys(0.0) == []


def test_server_quota_grants_the_tightest_limit_and_consumes_everywhere() -> None:
    t = at(2026, 11, 26, 9, 30, 10)
    quota = ServerQuota(per_second=10, per_minute=15, per_day=100)
    assert quota.grant(20, t) == 10
    assert quota.next_refill(t + 0.5) == pytest.approx(0.5)
    assert quota.grant(20, t + 1) == 5
    assert quota.grant(1, t + 2) == 0
    assert quota.next_refill(t + 2) == pytest.approx(48.0)  # until 09:31:00
    assert quota.snapshot(t) == {"m:202611260930": 15, "d:20261126": 15}


def test_server_quota_day_exhausted_waits_until_midnight_and_resumes() -> None:
    quota = ServerQuota(per_second=100, per_day=50)
    evening = at(2026, 11, 26, 22)
    assert quota.grant(80, evening) == 50
    assert quota.grant(1, evening + 5) == 0
    assert quota.next_refill(evening + 5) == pytest.approx(2 * 3600 - 5)
    restarted = ServerQuota(per_second=100, per_day=50)
    restarted.load(quota.snapshot(evening))
    assert restarted.grant(1, evening + 10) == 0
    assert restarted.grant(60, at(2026, 11, 27)) == 50


def test_idle_means_nothing_left_to_remember() -> None:
    quota = ServerQuota(per_second=2, per_minute=10)
    t = at(2026, 11, 26, 9, 0, 0)
    assert quota.is_idle(t)
    quota.grant(1, t)
    assert not quota.is_idle(t + 30)
    assert quota.is_idle(t + 60)


def test_held_tokens_come_back_a_period_after_the_sends_completed():
    from actors.policies.quota import TokenBucket

    bucket = TokenBucket(5)
    assert bucket.reserve(5, now=100.0) == 5
    bucket.hold(5, finished=100.4)  # the sends took 0.4 s
    assert bucket.available(101.0) == 0  # granted + 1 s is not enough any more
    assert bucket.available(101.39) == 0
    assert bucket.available(101.4) == 5


def test_holding_part_of_a_grant_keeps_the_rest_on_time():
    from actors.policies.quota import TokenBucket

    bucket = TokenBucket(5)
    assert bucket.reserve(5, now=0.0) == 5
    bucket.hold(2, finished=0.5)
    assert bucket.available(1.0) == 3 and bucket.available(1.5) == 5


def test_holding_with_grants_in_flight_is_never_looser_than_the_receiver_needs():
    """A dispatcher admits the next batch while the last is still being sent: when the first batch
    completes, its hold must not leave its own sends' tokens due at grant + period."""
    from actors.policies.quota import TokenBucket

    bucket = TokenBucket(5)
    assert bucket.reserve(3, now=0.0) == 3  # batch A, in flight until 0.9
    assert bucket.reserve(2, now=0.1) == 2  # batch B, admitted while A is in flight, done at 0.95
    bucket.hold(3, finished=0.9)
    bucket.hold(2, finished=0.95)
    # A's three arrived by 0.9 and B's two by 0.95: nothing may be granted before 1.9, all by 1.95.
    assert bucket.available(1.05) == 0
    assert bucket.available(1.89) == 0
    assert bucket.available(1.9) == 3
    assert bucket.available(1.95) == 5


def test_a_grant_made_with_an_older_clock_reading_returns_after_the_held_tokens():
    from actors.policies.quota import TokenBucket

    bucket = TokenBucket(2)
    assert bucket.reserve(1, now=0.0) == 1
    bucket.hold(1, finished=0.5)  # due at 1.5
    assert bucket.reserve(1, now=0.2) == 1  # admitted with a `now` read before that send completed
    assert bucket.available(1.49) == 0  # the second grant is due one period after the clock's 0.5, not 0.2
    assert bucket.available(1.5) == 2
