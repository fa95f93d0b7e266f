"""Per-key request rate limits shared by every ingress process: GCRA in one Lua script.

GCRA keeps a single number per key (the theoretical arrival time), allows `burst` requests at once and
`rate` per second sustained, and tells a refused caller exactly when to come back.
"""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis

_GCRA = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local interval = tonumber(ARGV[1])
local tau = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - tau > now then
  return {0, math.ceil(new_tat - tau - now), math.ceil(tat - now), 0}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(tau) + 1000)
return {1, 0, math.ceil(new_tat - now), math.floor((tau - (new_tat - now)) / interval)}
"""


class RateDecision(msgspec.Struct, frozen=True):
    allowed: bool
    retry_after_ms: int
    reset_ms: int
    remaining: int


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, *, per_second: float, burst: int) -> None:
        self.redis = redis
        self.per_second = per_second
        self.burst = max(1, burst)
        self._interval_ms = 1000.0 / per_second
        self._script = redis.register_script(_GCRA)

    async def check(self, key: str) -> RateDecision:
        allowed, retry_ms, reset_ms, remaining = await self._script(
            keys=[key], args=[self._interval_ms, self.burst]
        )
        return RateDecision(bool(allowed), int(retry_ms), int(reset_ms), int(remaining))

    @property
    def window_seconds(self) -> int:
        """The time a full burst takes to refill: the policy's window."""
        return max(1, round(self.burst / self.per_second))
