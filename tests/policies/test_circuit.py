"""Circuit breaker: opens on repeated failures or a server fault, probes, closes on success."""

from __future__ import annotations

import msgspec

from actors.policies.circuit import CircuitBreaker, CircuitSnapshot


def failing(breaker: CircuitBreaker, times: list[float]) -> CircuitBreaker:
    for t in times:
        breaker.record(False, t)
    return breaker


def test_opens_after_threshold_failures_within_the_window() -> None:
    breaker = failing(CircuitBreaker(failure_threshold=5, window_seconds=30), [0, 1, 2, 3])
    assert breaker.status(3) == "healthy" and breaker.allow(3)
    breaker.record(False, 4)
    assert breaker.state(4) == "open"
    assert breaker.status(4) == "down" and not breaker.allow(4)


def test_failures_spread_wider_than_the_window_do_not_open() -> None:
    breaker = failing(CircuitBreaker(failure_threshold=3, window_seconds=10), [0, 6, 12, 18, 24, 30])
    assert breaker.state(30) == "closed"
    breaker.record(False, 31)
    assert breaker.state(31) == "open"  # 24, 30, 31 fall inside ten seconds


def test_a_success_resets_the_failure_count() -> None:
    breaker = failing(CircuitBreaker(failure_threshold=3), [0, 1])
    breaker.record(True, 2)
    failing(breaker, [3, 4])
    assert breaker.state(4) == "closed"
    breaker.record(False, 5)
    assert breaker.state(5) == "open"


def test_half_open_after_the_open_period_lets_one_probe_through_and_closes_on_success() -> None:
    breaker = failing(CircuitBreaker(failure_threshold=2, open_seconds=30), [100, 101])
    assert breaker.status(130.9) == "down" and not breaker.allow(130.9)
    assert breaker.status(131) == "degraded"
    assert breaker.allow(131)
    assert not breaker.allow(131.5)  # only one probe at a time
    breaker.record(True, 132)
    assert breaker.status(132) == "healthy" and breaker.allow(132) and breaker.allow(132)


def test_a_failed_probe_opens_again_for_a_full_period() -> None:
    breaker = failing(CircuitBreaker(failure_threshold=1, open_seconds=10), [0])
    assert breaker.allow(10)
    breaker.record(False, 12)
    assert breaker.status(21.9) == "down"
    assert breaker.status(22) == "degraded"


def test_probes_that_never_report_are_reissued_after_an_open_period() -> None:
    breaker = failing(CircuitBreaker(failure_threshold=1, open_seconds=10, half_open_probes=2), [0])
    assert [breaker.allow(10), breaker.allow(10), breaker.allow(15)] == [True, True, False]
    assert breaker.allow(20) and breaker.allow(20) and not breaker.allow(20)


def test_server_fault_opens_at_once_from_any_state() -> None:
    breaker = CircuitBreaker()
    breaker.record_server_fault(50)
    assert breaker.status(50) == "down"
    assert breaker.allow(80)  # half-open probe
    breaker.record_server_fault(81)
    assert breaker.status(110) == "down" and breaker.status(111) == "degraded"


def test_late_results_while_open_change_nothing() -> None:
    breaker = failing(CircuitBreaker(failure_threshold=1, open_seconds=10), [0])
    breaker.record(True, 5)
    assert breaker.status(5) == "down"
    breaker.record(False, 9)
    assert breaker.status(10) == "degraded"  # not pushed back by the late failure


def test_snapshot_and_load_survive_a_restart() -> None:
    breaker = failing(CircuitBreaker(failure_threshold=3, open_seconds=20), [0, 1, 2])
    stored = msgspec.msgpack.encode(breaker.snapshot())
    restarted = CircuitBreaker(failure_threshold=3, open_seconds=20)
    restarted.load(msgspec.msgpack.decode(stored, type=CircuitSnapshot))
    assert restarted.status(10) == "down"
    assert restarted.status(22) == "degraded" and restarted.allow(22)

    counting = failing(CircuitBreaker(failure_threshold=3), [0, 1])
    resumed = CircuitBreaker(failure_threshold=3)
    resumed.load(counting.snapshot())
    resumed.record(False, 2)
    assert resumed.status(2) == "down"  # the two failures before the restart still count


def test_snapshot_of_half_open_reloads_half_open() -> None:
    breaker = failing(CircuitBreaker(failure_threshold=1, open_seconds=10), [0])
    assert breaker.allow(10)
    restarted = CircuitBreaker(failure_threshold=1, open_seconds=10)
    restarted.load(breaker.snapshot())
    assert restarted.status(11) == "degraded" and restarted.allow(11) and not restarted.allow(11)
