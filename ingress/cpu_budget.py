"""Per-key budget of worker-thread CPU: heavy requests are charged what they measurably cost (issue #11).

The byte budget (ingress/body_budget.py) bounds how much a key may send, not what its bytes cost: a bulk
of 1,000 messages each full of links costs ~1 s of validation and link rewriting on the worker thread
(ingress/off_loop.py), whose every step takes the GIL from the event loop for up to the switch interval.
So every heavy request is charged the thread CPU it used (measured around the work on the worker), and a
key that has spent its budget is refused 429 with `Retry-After` until it has earned it back. The budget
may go into debt (a request is charged after it ran, since its cost is known only then): a key whose one
request cost 5 s waits for 5 s of refill. Per key and ingress process, like the byte budget.
Pure: the caller passes `now`, so it is tested without clocks.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field


@dataclass
class _Account:
    seconds: float  # CPU seconds this key may still spend; negative: in debt
    updated: float


@dataclass
class CpuBudget:
    seconds_per_second: float  # refill rate: the share of one worker thread a key may use
    burst_seconds: float
    max_keys: int = 10_000
    _accounts: dict[str, _Account] = field(default_factory=dict)

    def wait(self, key: str, *, now: float) -> float:
        """0.0 when `key` may start heavy work, else the seconds until its debt is repaid."""
        account = self._refilled(key, now)
        if account is None or account.seconds > 0:
            return 0.0
        return max(-account.seconds, 0.001) / self.seconds_per_second

    def charge(self, key: str, seconds: float, *, now: float) -> None:
        account = self._refilled(key, now)
        if account is None:
            self._forget_full(now)
            account = self._accounts[key] = _Account(self.burst_seconds, now)
        account.seconds -= seconds

    def _refilled(self, key: str, now: float) -> _Account | None:
        account = self._accounts.get(key)
        if account is not None:
            account.seconds = min(
                self.burst_seconds, account.seconds + (now - account.updated) * self.seconds_per_second
            )
            account.updated = now
        return account

    def _forget_full(self, now: float) -> None:
        """Keys whose budget has refilled carry no state worth keeping; bounds memory to active keys."""
        if len(self._accounts) < self.max_keys:
            return
        for key, account in list(self._accounts.items()):
            if account.seconds + (now - account.updated) * self.seconds_per_second >= self.burst_seconds:
                del self._accounts[key]
        if len(self._accounts) >= self.max_keys:
            self._accounts.clear()  # every key busy: forgetting is generous, never unbounded


class CpuMeter:
    """What one request's heavy work cost on the worker thread; set per request by the body admission."""

    def __init__(self) -> None:
        self.seconds = 0.0


CURRENT_METER: contextvars.ContextVar[CpuMeter | None] = contextvars.ContextVar(
    "mailers_cpu_meter", default=None
)
