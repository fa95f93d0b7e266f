"""Seen-token memory for inbound webhook signatures (Mailgun tokens): one SET NX EX per token.

Satisfies `providers.inbound.ReplayGuard` structurally (store/ does not import providers/).
"""

from __future__ import annotations

import redis.asyncio as aioredis

from store import keyspace


class RedisReplayGuard:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def claim(self, provider: str, server_id: str, token: str, ttl_seconds: int) -> bool:
        """True if this is the token's first use within `ttl_seconds`; False for a replay."""
        key = keyspace.inbound_replay(provider, server_id, token)
        return bool(await self._redis.set(key, b"1", nx=True, ex=ttl_seconds))
