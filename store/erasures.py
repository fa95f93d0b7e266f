"""Erased addresses, so events still in the stream cannot bring an erased person back.

`DELETE /v1/subscribers/:id` anonymises the analytics store at once, but events about that person may
still be on `m:events` (not yet read by the event sink, or redelivered after a crash). The sink asks
`drop_erased` before each insert: an event about an address erased at or after the event's own time is
dropped. Addresses are kept as SHA-256 hashes, never in clear; an event newer than the erasure (the
person signed up again) passes. One hash per workspace; a field costs ~100 bytes, kept for good.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import redis.asyncio as aioredis

from schemas.event_subjects import event_email
from schemas.events import Event
from schemas.subscriber_chunks import NewMembers
from store import keyspace


def email_hash(email: str) -> str:
    return hashlib.sha256(email.lower().encode()).hexdigest()


class ErasureLedger:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def record(self, workspace: str, email: str, at_ms: int) -> None:
        """Remember that `email` was erased at `at_ms` (the latest erasure of an address counts)."""
        await self.redis.hset(keyspace.erased_emails(workspace), email_hash(email), at_ms)

    async def drop_erased(self, events: Sequence[Event]) -> list[Event]:
        """`events` without those about an address erased at or after the event happened."""
        workspaces = sorted({e.workspace for e in events})
        async with self.redis.pipeline(transaction=False) as pipe:
            for workspace in workspaces:
                pipe.hlen(keyspace.erased_emails(workspace))
            sizes = await pipe.execute()
        erasing = [w for w, size in zip(workspaces, sizes, strict=True) if size]
        if not erasing:  # the common case: one cheap round trip per batch
            return list(events)
        erased = {w: await self._erased_of(w, events) for w in erasing}
        return [e for e in events if not _erased(e, erased.get(e.workspace))]

    async def drop_erased_members(self, chunks: Sequence[NewMembers]) -> list[NewMembers]:
        """`chunks` of new subscribers (`schemas/subscriber_chunks.py`) without the rows about an address
        erased at or after the chunk's time. A workspace that never erased anyone costs one HLEN."""
        if not chunks:
            return []
        workspaces = sorted({c.workspace for c in chunks})
        async with self.redis.pipeline(transaction=False) as pipe:
            for workspace in workspaces:
                pipe.hlen(keyspace.erased_emails(workspace))
            sizes = await pipe.execute()
        erasing = {w for w, size in zip(workspaces, sizes, strict=True) if size}
        if not erasing:
            return list(chunks)
        kept = []
        for chunk in chunks:
            if chunk.workspace not in erasing:
                kept.append(chunk)
                continue
            hashes = [email_hash(email) for email in chunk.emails]
            found = await self.redis.hmget(keyspace.erased_emails(chunk.workspace), hashes)
            gone = {i for i, at in enumerate(found) if at is not None and chunk.created_ms <= int(at)}
            if not gone:
                kept.append(chunk)
                continue
            rows = [i for i in range(len(chunk)) if i not in gone]
            kept.append(chunk.only(rows))
        return kept

    async def _erased_of(self, workspace: str, events: Sequence[Event]) -> dict[str, int]:
        hashes = sorted({email_hash(m) for e in events if e.workspace == workspace and (m := event_email(e))})
        if not hashes:
            return {}
        found = await self.redis.hmget(keyspace.erased_emails(workspace), hashes)
        return {h: int(at) for h, at in zip(hashes, found, strict=True) if at is not None}


def _erased(event: Event, erased: dict[str, int] | None) -> bool:
    if not erased:
        return False
    email = event_email(event)
    at = erased.get(email_hash(email)) if email else None
    return at is not None and event.created_at.timestamp() * 1000 <= at
