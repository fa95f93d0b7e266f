"""Sending quotas: a per-second bucket, fixed calendar windows, and the two combined per server.

Pure objects: every method takes `now` (epoch seconds, UTC) and none reads a clock. The actor
shell persists window counts in Redis under the keys `window_keys(now)` gives (INCRBY + EXPIRE
`window_ttl(key)`) and feeds them back with `load` after a restart, so daily counts survive.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from functools import lru_cache

UNLIMITED = sys.maxsize
"""What `available` answers when no limit applies."""

WINDOW_SECONDS = {"m": 60, "h": 3600, "d": 86400}
_KEY_FORMATS = {"m": "%Y%m%d%H%M", "h": "%Y%m%d%H", "d": "%Y%m%d"}
_STAMP_DIGITS = {"m": 12, "h": 10, "d": 8}
_KIND_BY_LIMIT = {"per_minute": "m", "per_hour": "h", "per_day": "d"}


class TokenBucket:
    """At most `burst` grants in any `burst / rate_per_second` seconds; long-run rate exact.

    Each spent token comes back exactly one period after it was spent (a sliding-window bucket)
    instead of trickling back continuously. A continuous bucket lets through up to twice its
    burst inside one period (a full bucket, then a period's refill); this one keeps the promise
    providers state, "never more than N per second", while still granting a whole burst at once.
    Memory: at most one entry per grant still outstanding, so at most `burst` entries.
    A clock that steps back is treated as standing still.
    """

    def __init__(self, rate_per_second: float, burst: int | None = None) -> None:
        if not rate_per_second > 0:
            raise ValueError("rate_per_second must be positive")
        self.burst = burst if burst is not None else max(1, math.floor(rate_per_second))
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate_per_second = rate_per_second
        self.period = self.burst / rate_per_second
        self._spent: deque[tuple[float, int]] = deque()  # (time the tokens return, how many)
        self._outstanding = 0
        self._latest = -math.inf

    def available(self, now: float) -> int:
        now = self._advance(now)
        while self._spent and self._spent[0][0] <= now:
            self._outstanding -= self._spent.popleft()[1]
        return self.burst - self._outstanding

    def reserve(self, n: int, now: float) -> int:
        """Take up to `n` tokens; returns how many were granted (0..n)."""
        granted = max(0, min(n, self.available(now)))
        if granted:
            self._spent.append((self._latest + self.period, granted))
            self._outstanding += granted
        return granted

    def hold(self, n: int, finished: float) -> None:
        """`n` sends completed at `finished`: `n` outstanding tokens come back one period after that
        rather than one period after they were granted, since sends reach the receiver with some jitter
        and two generations landing within one period would break the limit as the receiver sees it.

        The tokens moved are the `n` that would come back soonest. With several grants in flight at once
        (the dispatcher sends one batch while it admits the next) these may be another grant's tokens, but
        moving the soonest gives every order statistic of the return times its largest possible value, so
        the bucket is never looser than holding exactly the completed sends' own tokens."""
        later = (
            self._advance(finished) + self.period
        )  # later grants then return after these, keeping the order
        moved = 0
        while self._spent and moved < n:
            returns_at, count = self._spent.popleft()
            take = min(count, n - moved)
            moved += take
            if count > take:
                self._spent.appendleft((returns_at, count - take))
        if moved:
            self._spent.append((later, moved))

    def wait_time(self, n: int, now: float) -> float:
        """Seconds until `min(n, burst)` tokens are available at once (0.0 if they are now)."""
        missing = min(n, self.burst) - self.available(now)
        for returns_at, count in self._spent:
            if missing <= 0:
                break
            missing -= count
            if missing <= 0:
                return returns_at - self._latest
        return 0.0

    def _advance(self, now: float) -> float:
        self._latest = max(self._latest, now)
        return self._latest


@lru_cache(maxsize=256)
def _format_key(kind: str, start: int) -> str:
    return f"{kind}:{time.strftime(_KEY_FORMATS[kind], time.gmtime(start))}"


def window_start(kind: str, now: float) -> int:
    """Epoch second at which the `kind` window (`m`, `h`, `d`: UTC calendar) holding `now` began."""
    length = WINDOW_SECONDS[kind]
    return int(now // length) * length


def window_key(kind: str, now: float) -> str:
    """`m:202611260812`, `h:2026112608` or `d:20261126`: the window holding `now`."""
    return _format_key(kind, window_start(kind, now))


def window_ttl(key: str) -> int:
    """Seconds a Redis counter for `key` should live: two window lengths.

    Set at any moment inside the window, it outlives the window by at least one full length, so a
    restart near a boundary still finds the count.
    """
    return 2 * WINDOW_SECONDS[_kind_of(key)]


def _kind_of(key: str) -> str:
    kind, sep, stamp = key.partition(":")
    if not sep or kind not in _STAMP_DIGITS or len(stamp) != _STAMP_DIGITS[kind] or not stamp.isdigit():
        raise ValueError(f"not a quota window key: {key!r}")
    return kind


class WindowQuota:
    """Counts per fixed calendar window (UTC minute, hour, day); a send counts in every window.

    `None` leaves a window unlimited (and untracked). Only the windows holding `now` are kept.
    """

    def __init__(
        self, per_minute: int | None = None, per_hour: int | None = None, per_day: int | None = None
    ) -> None:
        limits = {"per_minute": per_minute, "per_hour": per_hour, "per_day": per_day}
        self._limits = {_KIND_BY_LIMIT[name]: value for name, value in limits.items() if value is not None}
        if any(value < 0 for value in self._limits.values()):
            raise ValueError("window limits must not be negative")
        self._counts: dict[str, int] = {}

    def window_keys(self, now: float) -> list[str]:
        """The keys of the limited windows holding `now` (what the shell INCRBYs in Redis)."""
        return [window_key(kind, now) for kind in self._limits]

    def available(self, now: float) -> int:
        room = [limit - self._counts.get(window_key(kind, now), 0) for kind, limit in self._limits.items()]
        return max(0, min(room)) if room else UNLIMITED

    def consume(self, n: int, now: float) -> None:
        """Count `n` sends in every limited window holding `now` (whether or not there was room)."""
        keys = self.window_keys(now)
        self._keep_only(keys)
        for key in keys:
            self._counts[key] = self._counts.get(key, 0) + n

    def seconds_until_room(self, now: float) -> float:
        """0.0 when one more send fits; otherwise until every exhausted window has rolled over."""
        waits = [
            window_start(kind, now) + WINDOW_SECONDS[kind] - now
            for kind, limit in self._limits.items()
            if self._counts.get(window_key(kind, now), 0) >= limit
        ]
        return max(waits, default=0.0)

    def load(self, counts: dict[str, int]) -> None:
        """Merge persisted counts; per key the larger count wins, so loading twice is harmless.

        Keys of windows this quota does not limit are ignored; malformed keys raise ValueError.
        """
        for key, count in counts.items():
            if _kind_of(key) in self._limits:
                self._counts[key] = max(self._counts.get(key, 0), int(count))

    def snapshot(self, now: float) -> dict[str, int]:
        """The counts of the windows holding `now`, by window key."""
        keys = self.window_keys(now)
        self._keep_only(keys)
        return {key: self._counts[key] for key in keys if key in self._counts}

    def _keep_only(self, keys: list[str]) -> None:
        for stale in self._counts.keys() - set(keys):
            del self._counts[stale]


class ServerQuota:
    """Every limit of one sending stream (a server, or one recipient domain) applied together.

    `per_second` is a `TokenBucket` with burst = the rate (so never more than `per_second` grants
    in any one-second span); the others are calendar `WindowQuota`s. `None` = unlimited.
    """

    def __init__(
        self,
        per_second: float | None = None,
        per_minute: int | None = None,
        per_hour: int | None = None,
        per_day: int | None = None,
    ) -> None:
        self.bucket = TokenBucket(per_second) if per_second is not None else None
        self.windows = WindowQuota(per_minute, per_hour, per_day)

    def available(self, now: float) -> int:
        in_bucket = self.bucket.available(now) if self.bucket else UNLIMITED
        return min(in_bucket, self.windows.available(now))

    def grant(self, n: int, now: float) -> int:
        """Take up to `n` sends from every limit at once; returns how many may go now (0..n)."""
        granted = max(0, min(n, self.available(now)))
        if granted:
            if self.bucket:
                self.bucket.reserve(granted, now)
            self.windows.consume(granted, now)
        return granted

    def hold(self, n: int, finished: float) -> None:
        """`n` sends of the last grant completed at `finished`: see `TokenBucket.hold`."""
        if self.bucket:
            self.bucket.hold(n, finished)

    def next_refill(self, now: float) -> float:
        """Seconds until at least one send fits again (0.0 if one fits now)."""
        bucket_wait = self.bucket.wait_time(1, now) if self.bucket else 0.0
        return max(bucket_wait, self.windows.seconds_until_room(now))

    def window_keys(self, now: float) -> list[str]:
        return self.windows.window_keys(now)

    def load(self, counts: dict[str, int]) -> None:
        self.windows.load(counts)

    def snapshot(self, now: float) -> dict[str, int]:
        return self.windows.snapshot(now)

    def is_idle(self, now: float) -> bool:
        """True when forgetting this quota would change nothing: no token out, no window count."""
        bucket_full = self.bucket is None or self.bucket.available(now) == self.bucket.burst
        return bucket_full and not self.windows.snapshot(now)
