"""Per-recipient-domain limits: each domain on its own, order kept, only admitted ones count."""

from __future__ import annotations

import msgspec
import pytest

from actors.policies.recipient_throttle import RecipientThrottle

T0 = 1_795_000_000.0
MINUTE = T0 - T0 % 60  # the start of a UTC minute, so window arithmetic in the tests is exact


def test_each_domain_has_its_own_per_second_limit_and_order_is_kept() -> None:
    throttle = RecipientThrottle({"gmail.com": {"per_second": 2}, "yahoo.com": {"per_second": 1}})
    domains = ["gmail.com", "yahoo.com", "gmail.com", "gmail.com", "yahoo.com", "outlook.com"]
    assert throttle.admit(domains, T0) == [True, True, True, False, False, True]
    assert throttle.admit(["gmail.com", "yahoo.com"], T0 + 0.5) == [False, False]
    assert throttle.admit(["gmail.com", "gmail.com", "gmail.com"], T0 + 1) == [True, True, False]


def test_limits_hold_per_domain_over_a_simulated_minute() -> None:
    throttle = RecipientThrottle({"gmail.com": {"per_second": 5, "per_minute": 40}, "*": {"per_second": 3}})
    admitted: dict[str, list[float]] = {}
    for step in range(600):  # every 0.1 s for a minute, a mixed batch
        now = MINUTE + step * 0.1
        batch = ["gmail.com", "gmail.com", "web.de", "gmail.com", "web.de", "aol.com"]
        for domain, ok in zip(batch, throttle.admit(batch, now), strict=True):
            if ok:
                admitted.setdefault(domain, []).append(now)
    assert len(admitted["gmail.com"]) == 40
    for domain, limit in (("gmail.com", 5), ("web.de", 3), ("aol.com", 3)):
        times = admitted[domain]
        assert max(sum(1 for u in times if t <= u < t + 1.0 - 1e-9) for t in times) == limit


def test_refused_recipients_consume_nothing() -> None:
    throttle = RecipientThrottle({"a.com": {"per_minute": 1, "per_hour": 2}, "b.com": {"per_minute": 2}})
    assert throttle.admit(["a.com", "b.com", "a.com", "b.com", "b.com"], MINUTE) == [
        True,
        True,
        False,
        True,
        False,
    ]
    assert throttle.admit(["a.com"], MINUTE + 1) == [False]
    # Had the two refusals counted, the hour (limit 2) would be spent already.
    assert throttle.admit(["a.com"], MINUTE + 61) == [True]
    assert throttle.admit(["a.com"], MINUTE + 121) == [False]


def test_domains_compare_in_normal_form() -> None:
    throttle = RecipientThrottle({"Bücher.DE": {"per_minute": 1}})
    assert throttle.admit(["xn--bcher-kva.de", "BÜCHER.de.", "bücher.de"], MINUTE) == [True, False, False]


def test_wait_time_per_domain() -> None:
    throttle = RecipientThrottle({"gmail.com": {"per_second": 1, "per_minute": 2}})
    assert throttle.wait_time("gmail.com", MINUTE) == 0.0
    throttle.admit(["gmail.com"], MINUTE)
    assert throttle.wait_time("gmail.com", MINUTE + 0.25) == pytest.approx(0.75)
    throttle.admit(["gmail.com"], MINUTE + 1)
    assert throttle.wait_time("gmail.com", MINUTE + 10) == pytest.approx(50.0)
    assert throttle.wait_time("unlimited.org", MINUTE + 10) == 0.0


def test_memory_is_bounded_by_max_domains() -> None:
    throttle = RecipientThrottle({"*": {"per_minute": 1}}, max_domains=3)
    for i in range(50):
        assert throttle.admit([f"d{i}.example"], MINUTE + i * 0.1) == [True]
        assert len(throttle) <= 3
    assert len(throttle) == 3


def test_idle_domains_are_evicted_before_busy_ones() -> None:
    throttle = RecipientThrottle({"busy.com": {"per_day": 1}, "*": {"per_second": 1}}, max_domains=2)
    assert throttle.admit(["busy.com", "idle.com"], MINUTE) == [True, True]
    assert throttle.admit(["new.com"], MINUTE + 5) == [True]  # idle.com's bucket refilled: forgotten
    assert throttle.admit(["busy.com"], MINUTE + 6) == [False]  # busy.com kept its daily count


def test_when_none_is_idle_the_least_recently_used_goes() -> None:
    throttle = RecipientThrottle({"*": {"per_minute": 1}}, max_domains=2)
    assert throttle.admit(["a.com", "b.com"], MINUTE) == [True, True]
    assert throttle.admit(["a.com"], MINUTE + 1) == [False]  # a.com is now the most recently used
    assert throttle.admit(["c.com"], MINUTE + 2) == [True]  # evicts b.com
    assert throttle.admit(["a.com"], MINUTE + 3) == [False]
    assert throttle.admit(["b.com"], MINUTE + 4) == [True]  # b.com starts afresh


def test_bad_limits_are_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        RecipientThrottle({"gmail.com": {"per_fortnight": 5}})
    with pytest.raises(ValueError):
        RecipientThrottle({"gmail.com": {"per_second": 1}}, max_domains=0)


def test_held_domain_tokens_come_back_after_the_sends_completed():
    from actors.policies.recipient_throttle import RecipientThrottle

    throttle = RecipientThrottle({"gmail.com": {"per_second": 2}})
    assert throttle.admit(["gmail.com", "gmail.com", "x.org"], 10.0) == [True, True, True]
    throttle.hold(["gmail.com", "gmail.com", "x.org"], finished=10.5)
    assert throttle.admit(["gmail.com"], 11.2) == [False]
    assert throttle.admit(["gmail.com"], 11.5) == [True]
