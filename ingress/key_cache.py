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
        # Misses in flight, shared: when a busy key's entry expires, the requests arriving meanwhile wait
        # for one read instead of each reading Redis (at 500 req/s, py-spy found 12% of the ingress's CPU
        # in such stampedes: two round trips a request while the entry was being refetched).
        self._reads: dict[str, asyncio.Future[ApiKeyRecord | None]] = {}
        self._generation = 0  # bumped by invalidate/clear: a read begun before them is not cached

    async def lookup(self, digest: str) -> ApiKeyRecord | None:
        now = time.monotonic()
        cached = self._entries.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        read = self._reads.get(digest)
        if read is None:
            # A task of its own: a request cancelled meanwhile (its client left) cancels not the others' read.
            read = self._reads[digest] = asyncio.ensure_future(self._read(digest))
        return await asyncio.shield(read)

    async def _read(self, digest: str) -> ApiKeyRecord | None:
        generation = self._generation
        try:
            record = await self.store.find_by_hash(digest)
        finally:
            if self._reads.get(digest) is asyncio.current_task():
                del self._reads[digest]
        if generation == self._generation:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            expires = time.monotonic() + (self.ttl if record else self.negative_ttl)
            self._entries[digest] = (record, expires)
        return record

    def invalidate(self, digest: str) -> None:
        self._generation += 1
        self._entries.pop(digest, None)
        self._reads.pop(digest, None)  # a lookup from now on reads again; one begun before is not joined

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()
        self._reads.clear()

    async def listen(self, redis: aioredis.Redis, ready: asyncio.Event | None = None) -> None:
        """Run until cancelled, following `keyspace.KEY_INVALIDATIONS`."""
        await follow_invalidations(
            redis, keyspace.KEY_INVALIDATIONS, invalidate=self.invalidate, clear=self.clear, ready=ready
        )
