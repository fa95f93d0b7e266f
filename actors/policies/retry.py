"""How long to wait before retrying a message on the same server, and when to stop and fail over.

Exponential backoff with jitter (the AWS "full" and "equal" jitter schemes): the n-th retry waits
around `base * multiplier**(n-1)`, capped at `cap`. Deterministic for a seeded `random.Random`.
"""

from __future__ import annotations

import random
from typing import Literal

import msgspec


class RetryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_attempts: int = 5
    base: float = 1.0
    cap: float = 300.0
    multiplier: float = 2.0
    jitter: Literal["full", "equal"] = "full"

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base <= 0 or self.cap < self.base or self.multiplier < 1:
            raise ValueError("need max_attempts >= 1, 0 < base <= cap, multiplier >= 1")

    def next_delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float | None:
        """Seconds to wait after failed attempt number `attempt` (1 = the first try failed).

        None means give up on this server and fail over: when `attempt` reached `max_attempts`, or
        when the provider's `retry_after` asks for a longer wait than `cap` (a server that needs
        that long should not hold the message). Otherwise `retry_after` is a floor on the delay.
        """
        if attempt < 1:
            raise ValueError("attempt counts failed attempts, starting at 1")
        if attempt >= self.max_attempts or (retry_after is not None and retry_after > self.cap):
            return None
        ceiling = self.backoff(attempt)
        if self.jitter == "full":
            delay = rng.uniform(0.0, ceiling)
        else:
            delay = ceiling / 2 + rng.uniform(0.0, ceiling / 2)
        return max(delay, retry_after or 0.0)

    def backoff(self, attempt: int) -> float:
        """The un-jittered delay after failed attempt `attempt`: the upper bound of the jitter."""
        try:
            return min(self.cap, self.base * self.multiplier ** (attempt - 1))
        except OverflowError:
            return self.cap
