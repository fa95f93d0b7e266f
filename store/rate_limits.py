"""Per-key request rate limits shared by every ingress process: GCRA in one Lua script.

GCRA keeps a single number per key (the theoretical arrival time), allows `burst` requests at once and
`rate` per second sustained, and tells a refused caller exactly when to come back.
"""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

from store.coalescer import Coalescer

_GCRA = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local interval = tonumber(ARGV[1])
local tau = interval * tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  if new_tat - tau > now then
    out[i] = {0, math.ceil(new_tat - tau - now), math.ceil(tat - now), 0}
  else
    redis.call('SET', key, new_tat, 'PX', math.ceil(tau) + 1000)
    out[i] = {1, 0, math.ceil(new_tat - now), math.floor((tau - (new_tat - now)) / interval)}
  end
end
return out
"""


class RateDecision(msgspec.Struct, frozen=True):
    allowed: bool
    retry_after_ms: int
    reset_ms: int
    remaining: int


class RateLimiter:
    """Checks of concurrent requests leave together: one script call decides a whole batch, in order."""

    def __init__(self, redis: aioredis.Redis, *, per_second: float, burst: int) -> None:
        self.redis = redis
        self.per_second = per_second
        self.burst = max(1, burst)
        self._interval_ms = 1000.0 / per_second
        self._script = redis.register_script(_GCRA)
        self._batches = Coalescer(self._check_batch, max_in_flight=2, max_batch=2000)

    async def check(self, key: str) -> RateDecision:
        return await self._batches.submit(key)

    async def _check_batch(self, keys: list[str]) -> list[RateDecision]:
        rows = await self._script(keys=keys, args=[self._interval_ms, self.burst])
        return [RateDecision(bool(a), int(r), int(t), int(n)) for a, r, t, n in rows]

    @property
    def window_seconds(self) -> int:
        """The time a full burst takes to refill: the policy's window."""
        return max(1, round(self.burst / self.per_second))
