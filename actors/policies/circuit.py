"""A circuit breaker per sending server: stop sending to a failing server, probe, come back.

States and the health they report (`status`):
- closed → "healthy": everything passes; `failure_threshold` failures within `window_seconds`
  (with no success in between) open it;
- open → "down": nothing passes for `open_seconds`, then it turns half-open;
- half_open → "degraded": `half_open_probes` sends may pass; a success closes it, a failure
  opens it again. Probes that never report are re-issued after another `open_seconds`.
`record_server_fault` (bad credentials, unverified account) opens it at once, from any state.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import msgspec

from schemas.servers import Status

State = Literal["closed", "open", "half_open"]
STATUS_BY_STATE: dict[State, Status] = {"closed": "healthy", "open": "down", "half_open": "degraded"}


class CircuitSnapshot(msgspec.Struct, frozen=True):
    """What survives an actor restart. Probes in flight are not persisted: they are re-issued."""

    state: State
    opened_at: float | None = None
    failures: list[float] = []


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        window_seconds: float = 30.0,
        open_seconds: float = 30.0,
        half_open_probes: int = 1,
    ) -> None:
        if failure_threshold < 1 or half_open_probes < 1 or window_seconds <= 0 or open_seconds <= 0:
            raise ValueError("thresholds and durations must be positive")
        self.failure_threshold = failure_threshold
        self.window_seconds = window_seconds
        self.open_seconds = open_seconds
        self.half_open_probes = half_open_probes
        self._state: State = "closed"
        self._opened_at: float | None = None
        self._failures: deque[float] = deque(maxlen=failure_threshold)
        self._probes_out = 0
        self._probes_since = 0.0

    def state(self, now: float) -> State:
        if (
            self._state == "open"
            and self._opened_at is not None
            and now >= self._opened_at + self.open_seconds
        ):
            self._state = "half_open"
            self._probes_out = 0
            self._probes_since = self._opened_at + self.open_seconds
        return self._state

    def status(self, now: float) -> Status:
        """The server health this state maps to: "healthy", "down" or "degraded"."""
        return STATUS_BY_STATE[self.state(now)]

    def allow(self, now: float) -> bool:
        """May one send go to this server now? In half-open, each True hands out one probe."""
        state = self.state(now)
        if state == "closed":
            return True
        if state == "open":
            return False
        if now >= self._probes_since + self.open_seconds:
            self._probes_out, self._probes_since = 0, now
        if self._probes_out < self.half_open_probes:
            self._probes_out += 1
            return True
        return False

    def record(self, success: bool, now: float) -> None:
        """The outcome of one send. Results arriving while open (sent before it opened) are ignored."""
        state = self.state(now)
        if state == "half_open" and success:
            self._close()
        elif state == "half_open":
            self._open(now)
        elif state == "closed":
            self._record_closed(success, now)

    def record_server_fault(self, now: float) -> None:
        self._open(now)

    def snapshot(self) -> CircuitSnapshot:
        return CircuitSnapshot(self._state, self._opened_at, list(self._failures))

    def load(self, snapshot: CircuitSnapshot) -> None:
        self._state, self._opened_at = snapshot.state, snapshot.opened_at
        self._failures = deque(sorted(snapshot.failures), maxlen=self.failure_threshold)
        self._probes_out = 0
        if snapshot.state == "half_open":
            self._probes_since = snapshot.opened_at + self.open_seconds if snapshot.opened_at else 0.0

    def _record_closed(self, success: bool, now: float) -> None:
        if success:
            self._failures.clear()
            return
        self._failures.append(now)
        recent = sum(1 for at in self._failures if at > now - self.window_seconds)
        if recent >= self.failure_threshold:
            self._open(now)

    def _open(self, now: float) -> None:
        self._state, self._opened_at = "open", now
        self._failures.clear()

    def _close(self) -> None:
        self._state, self._opened_at = "closed", None
        self._failures.clear()
