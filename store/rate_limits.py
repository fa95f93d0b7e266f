"""Per-key request rate limits shared by every ingress process: GCRA in one Lua script, leased in chunks.

GCRA keeps a single number per key (the theoretical arrival time), allows `burst` requests at once and
`rate` per second sustained, and tells a refused caller exactly when to come back.

Leases (issue #14): one script call per request was a Redis round trip on every authenticated request
(~100 µs of the ingress's CPU each, more than the rest of the check). A process now takes a key's tokens
`lease_size` at a time — `max(1, min(burst // 20, per_second // 20))`: at most 5% of the burst and 50 ms
of the rate — and spends them in process; the script is called again when they are spent. Concurrent
checks of one key in a batch take one lease between them. The limit stays global and is never exceeded:
a leased token was debited from the key's shared GCRA state when it was taken. What leasing costs is the
other way: tokens a process leased and did not use within `LEASE_SECONDS` lapse unused (at most
`lease_size - 1` a key and process per lapse), so a key running at its limit from several processes may
be refused up to 5% early. With the small limits tests use (`burst` < 40) the lease is one token: every
check is the script, exactly as before.
"""

from __future__ import annotations

import time

import msgspec
import redis.asyncio as aioredis

from store.coalescer import Coalescer

# KEYS: the keys, ARGV: interval ms, burst, then one count per key. Takes up to `count` tokens of each
# key (as many as its GCRA state allows) and answers {taken, retry_after_ms, reset_ms, remaining}, where
# retry_after_ms is when one more token will be there (0 when all were taken).
_GCRA = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local interval = tonumber(ARGV[1])
local tau = interval * tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  local want = tonumber(ARGV[2 + i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local taken = math.floor((now + tau - tat) / interval)
  if taken > want then taken = want end
  if taken < 0 then taken = 0 end
  -- the division's rounding, corrected both ways: exactly the comparison one token at a time makes
  while taken > 0 and tat + taken * interval - tau > now do taken = taken - 1 end
  if taken < want and tat + (taken + 1) * interval - tau <= now then taken = taken + 1 end
  local new_tat = tat + taken * interval
  if taken > 0 then
    redis.call('SET', key, new_tat, 'PX', math.ceil(tau) + 1000)
  end
  local retry = 0
  if taken < want then retry = math.ceil(new_tat + interval - tau - now) end
  local remaining = 0
  if taken > 0 then remaining = math.floor((tau - (new_tat - now)) / interval) end
  out[i] = {taken, retry, math.ceil(new_tat - now), remaining}
end
return out
"""

LEASE_SECONDS = 1.0


class RateDecision(msgspec.Struct, frozen=True):
    allowed: bool
    retry_after_ms: int
    reset_ms: int
    remaining: int


class _Lease:
    """Tokens of one key this process took and has not spent yet."""

    __slots__ = ("reset_ms", "remaining", "taken_at", "tokens")

    def __init__(self, tokens: int, remaining: int, reset_ms: int, taken_at: float) -> None:
        self.tokens, self.remaining, self.reset_ms, self.taken_at = tokens, remaining, reset_ms, taken_at


class RateLimiter:
    """Checks of concurrent requests leave together: one script call decides a whole batch, in order;
    a key's leased tokens answer without Redis."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        per_second: float,
        burst: int,
        clock=time.monotonic,
        max_leases: int = 100_000,
    ) -> None:
        self.redis = redis
        self.per_second = per_second
        self.burst = max(1, burst)
        self._interval_ms = 1000.0 / per_second
        self.lease_size = max(1, min(self.burst // 20, int(per_second // 20)))
        self.clock = clock
        self.max_leases = max_leases
        self._leases: dict[str, _Lease] = {}
        self._script = redis.register_script(_GCRA)
        self._batches = Coalescer(self._check_batch, max_in_flight=2, max_batch=2000)

    async def check(self, key: str) -> RateDecision:
        lease = self._leases.get(key)
        if lease is not None and lease.tokens > 0:
            decision = self._spend(key, lease, self.clock())
            if decision is not None:
                return decision
        return await self._batches.submit(key)

    def _spend(self, key: str, lease: _Lease, now: float) -> RateDecision | None:
        age = now - lease.taken_at
        if age >= LEASE_SECONDS:
            del self._leases[key]  # lapsed: its tokens are not spent, so never more than the limit
            return None
        lease.tokens -= 1
        return RateDecision(True, 0, max(0, lease.reset_ms - int(age * 1000)), lease.remaining + lease.tokens)

    async def _check_batch(self, keys: list[str]) -> list[RateDecision]:
        decisions: list[RateDecision | None] = [None] * len(keys)
        now = self.clock()
        wanted: dict[str, list[int]] = {}
        for index, key in enumerate(keys):
            # Leased meanwhile (by a batch that returned while this one queued): spend that first.
            lease = self._leases.get(key)
            if lease is not None and lease.tokens > 0:
                decisions[index] = self._spend(key, lease, now)
                if decisions[index] is not None:
                    continue
            wanted.setdefault(key, []).append(index)
        if wanted:
            unique = list(wanted)
            counts = [len(wanted[k]) + self.lease_size - 1 for k in unique]
            rows = await self._script(keys=unique, args=[self._interval_ms, self.burst, *counts])
            taken_at = self.clock()
            if len(self._leases) + len(unique) > self.max_leases:
                self._leases.clear()
            for key, (taken, retry, reset, remaining) in zip(unique, rows, strict=True):
                taken, retry, reset, remaining = int(taken), int(retry), int(reset), int(remaining)
                indexes = wanted[key]
                granted = min(taken, len(indexes))
                spare = taken - granted  # leased for later checks of this key
                for order, index in enumerate(indexes):
                    if order < granted:
                        left = remaining + spare + (granted - 1 - order)
                        decisions[index] = RateDecision(True, 0, reset, left)
                    else:
                        decisions[index] = RateDecision(False, retry, reset, 0)
                if spare:
                    lease = self._leases.get(key)
                    if lease is not None and taken_at - lease.taken_at < LEASE_SECONDS:
                        lease.tokens += spare
                        lease.remaining, lease.reset_ms, lease.taken_at = remaining, reset, taken_at
                    else:
                        self._leases[key] = _Lease(spare, remaining, reset, taken_at)
        return [d if d is not None else RateDecision(False, 1000, 0, 0) for d in decisions]

    @property
    def window_seconds(self) -> int:
        """The time a full burst takes to refill: the policy's window."""
        return max(1, round(self.burst / self.per_second))
