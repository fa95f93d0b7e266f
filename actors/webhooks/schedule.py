"""When a failed delivery is tried again: ≈ 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, then dead-letter.

Pure: the caller passes `now` and a random source. Jitter spreads the retries of many deliveries that
failed together (an endpoint that was down) so they do not all return in the same second.
"""

from __future__ import annotations

import random

import msgspec

DEFAULT_DELAYS: tuple[float, ...] = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


class RetrySchedule(msgspec.Struct, frozen=True, kw_only=True):
    delays: tuple[float, ...] = DEFAULT_DELAYS
    scale: float = 1.0
    jitter: float = 0.2  # each delay lands uniformly within ±20 %

    def next_attempt_at(self, failures: int, now: float, rng: random.Random) -> float | None:
        """After the `failures`-th failed attempt of a round: the next attempt's time, or None (dead)."""
        if failures < 1 or failures > len(self.delays):
            return None
        delay = self.delays[failures - 1] * self.scale
        return now + delay * rng.uniform(1 - self.jitter, 1 + self.jitter)

    @property
    def attempts(self) -> int:
        return len(self.delays) + 1
