"""Per-key admission of request bodies: a byte rate, and a bound on heavy requests in flight (issue #11).

What one request costs the ingress grows with its body: JSON decoding (~2 ns a byte, in C, holding the
GIL), base64 of attachments, the Redis write. The request rate limit counts requests, not bytes, so a key
sending 9 MB bodies at full speed kept the loop and Redis busy for most of every second. Per key and per
ingress process (what is protected is this process's loop), a token bucket of body bytes bounds how much
of that work one key can ask for, and at most `heavy_per_key` heavy requests (bulks, large bodies) may be
in flight, so one key cannot queue unbounded work in the worker processes (ingress/worker_process.py).
Pure: the caller passes `now`, so it is tested without clocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class BodyBudget:
    bytes_per_second: float
    burst_bytes: int
    heavy_per_key: int
    max_keys: int = 10_000
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _heavy: dict[str, int] = field(default_factory=dict)

    def take(self, key: str, size: int, *, now: float) -> float:
        """Spend `size` bytes of `key`'s budget: 0.0 when admitted, else the seconds until it would be."""
        bucket = self._buckets.get(key)
        if bucket is None:
            self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst_bytes), now)
        bucket.tokens = min(
            float(self.burst_bytes), bucket.tokens + (now - bucket.updated) * self.bytes_per_second
        )
        bucket.updated = now
        size = min(size, self.burst_bytes)  # the route's own cap refused larger bodies already
        if bucket.tokens >= size:
            bucket.tokens -= size
            return 0.0
        return (size - bucket.tokens) / self.bytes_per_second

    def enter_heavy(self, key: str) -> bool:
        running = self._heavy.get(key, 0)
        if running >= self.heavy_per_key:
            return False
        self._heavy[key] = running + 1
        return True

    def leave_heavy(self, key: str) -> None:
        running = self._heavy.pop(key, 0) - 1
        if running > 0:
            self._heavy[key] = running

    def _forget_full(self, now: float) -> None:
        """Keys whose bucket has refilled carry no state worth keeping; bounds memory to active keys."""
        if len(self._buckets) < self.max_keys:
            return
        for key, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.updated) * self.bytes_per_second >= self.burst_bytes:
                del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()  # every key busy: forgetting is generous, never unbounded
