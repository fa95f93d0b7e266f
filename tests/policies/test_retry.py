"""Retry backoff: growth, cap, jitter bounds, the provider's Retry-After, giving up."""

from __future__ import annotations

import random

import msgspec
import pytest

from actors.policies.retry import RetryPolicy


def test_backoff_grows_by_the_multiplier_and_caps() -> None:
    policy = RetryPolicy(max_attempts=10, base=1.0, cap=10.0, multiplier=2.0)
    assert [policy.backoff(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 6])
def test_full_jitter_spreads_over_zero_to_the_backoff(attempt: int) -> None:
    policy = RetryPolicy(max_attempts=10, base=1.0, cap=10.0, jitter="full")
    rng = random.Random(attempt)
    delays = [policy.next_delay(attempt, rng) for _ in range(2_000)]
    ceiling = policy.backoff(attempt)
    assert all(d is not None and 0.0 <= d <= ceiling for d in delays)
    assert min(delays) < 0.05 * ceiling and max(delays) > 0.95 * ceiling  # type: ignore[operator]


@pytest.mark.parametrize("attempt", [1, 3, 5])
def test_equal_jitter_stays_in_the_upper_half(attempt: int) -> None:
    policy = RetryPolicy(max_attempts=10, base=2.0, cap=20.0, jitter="equal")
    rng = random.Random(attempt)
    delays = [policy.next_delay(attempt, rng) for _ in range(2_000)]
    ceiling = policy.backoff(attempt)
    assert all(d is not None and ceiling / 2 <= d <= ceiling for d in delays)
    assert min(delays) < 0.55 * ceiling and max(delays) > 0.95 * ceiling  # type: ignore[operator]


def test_average_delay_grows_with_attempts() -> None:
    policy = RetryPolicy(max_attempts=8, base=1.0, cap=300.0)
    rng = random.Random(1)
    means = [sum(policy.next_delay(n, rng) or 0.0 for _ in range(500)) / 500 for n in range(1, 8)]
    assert means == sorted(means) and means[-1] > 20 * means[0]


def test_gives_up_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    rng = random.Random(0)
    assert policy.next_delay(1, rng) is not None
    assert policy.next_delay(2, rng) is not None
    assert policy.next_delay(3, rng) is None
    assert policy.next_delay(4, rng) is None


def test_retry_after_is_a_floor_and_too_long_means_fail_over() -> None:
    policy = RetryPolicy(base=1.0, cap=300.0)
    rng = random.Random(0)
    assert all(policy.next_delay(1, rng, retry_after=42.0) == 42.0 for _ in range(100))
    assert policy.next_delay(1, rng, retry_after=0.0) <= 1.0  # type: ignore[operator]
    assert policy.next_delay(1, rng, retry_after=300.0) == 300.0
    assert policy.next_delay(1, rng, retry_after=3_600.0) is None


def test_deterministic_for_a_seed() -> None:
    policy = RetryPolicy()
    first = [policy.next_delay(n, random.Random(9)) for n in range(1, 5)]
    assert first == [policy.next_delay(n, random.Random(9)) for n in range(1, 5)]


def test_huge_attempt_counts_stay_at_the_cap() -> None:
    policy = RetryPolicy(max_attempts=100_000, cap=60.0)
    assert policy.backoff(50_000) == 60.0
    assert 0.0 <= policy.next_delay(50_000, random.Random(0)) <= 60.0  # type: ignore[operator]


def test_nonsense_is_refused() -> None:
    for bad in ({"max_attempts": 0}, {"base": 0.0}, {"base": 10.0, "cap": 5.0}, {"multiplier": 0.5}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"jitter": "none"}, RetryPolicy)
    with pytest.raises(ValueError):
        RetryPolicy().next_delay(0, random.Random(0))
