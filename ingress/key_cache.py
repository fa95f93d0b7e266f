"""In-process cache of API key records, dropped entry by entry over Redis pub/sub.

A revoked or rotated key is published on `keyspace.KEY_INVALIDATIONS`; every ingress process drops its
copy at once. Entries also expire after `ttl` seconds, and a lost pub/sub connection clears the cache,
so a missed message can never keep a revoked key alive for long.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis

from schemas.api_keys import ApiKeyRecord
from store import keyspace
from store.api_keys import ApiKeyStore
from store.invalidations import follow_invalidations

log = logging.getLogger("mailers.auth")


class KeyCache:
    def __init__(
        self, store: ApiKeyStore, *, ttl: float = 5.0, negative_ttl: float = 1.0, max_entries: int = 100_000
    ):
        self.store = store
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[ApiKeyRecord | None, float]] = {}

    async def lookup(self, digest: str) -> ApiKeyRecord | None:
        now = time.monotonic()
        cached = self._entries.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        record = await self.store.find_by_hash(digest)
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[digest] = (record, now + (self.ttl if record else self.negative_ttl))
        return record

    def invalidate(self, digest: str) -> None:
        self._entries.pop(digest, None)

    def clear(self) -> None:
        self._entries.clear()

    async def listen(self, redis: aioredis.Redis, ready: asyncio.Event | None = None) -> None:
        """Run until cancelled, following `keyspace.KEY_INVALIDATIONS`."""
        await follow_invalidations(
            redis, keyspace.KEY_INVALIDATIONS, invalidate=self.invalidate, clear=self.clear, ready=ready
        )
