"""API key records in Redis: stored by id, found by the SHA-256 of the secret, never in plaintext."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

import redis.asyncio as aioredis

from schemas.api_keys import ApiKeyRecord, api_key_record_decoder, api_key_record_encoder
from schemas.ids import new_id
from store import keyspace, pages
from store.replies import as_bytes, as_text

KEY_PREFIX = "mk_"


def generate_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(30)


def hash_secret(secret: str) -> str:
    """Keys carry 240 random bits, so a fast hash is enough; there is nothing to brute-force."""
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[: len(KEY_PREFIX) + 8]


def new_record(
    workspace: str,
    name: str,
    scopes: list[str],
    *,
    secret: str,
    domains: list[str] | None = None,
    expires_at: datetime | None = None,
) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=new_id("key"),
        workspace=workspace,
        name=name,
        prefix=display_prefix(secret),
        hash=hash_secret(secret),
        scopes=sorted(set(scopes)),
        domains=sorted({d.lower() for d in domains or []}),
        created_at=datetime.now(UTC),
        expires_at=expires_at,
    )


class ApiKeyStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def create(self, record: ApiKeyRecord) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keyspace.api_key(record.id), api_key_record_encoder.encode(record))
            pipe.set(keyspace.KEY_BY_HASH + record.hash, record.id)
            pages.index_add(pipe, keyspace.workspace_keys(record.workspace), record.id)
            await pipe.execute()

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        raw = await self.redis.get(keyspace.api_key(key_id))
        return None if raw is None else api_key_record_decoder.decode(as_bytes(raw))

    async def find_by_hash(self, digest: str) -> ApiKeyRecord | None:
        key_id = await self.redis.get(keyspace.KEY_BY_HASH + digest)
        return None if key_id is None else await self.get(as_text(key_id))

    async def save(self, record: ApiKeyRecord) -> None:
        """Overwrite a changed record and tell every ingress process to drop its cached copy."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keyspace.api_key(record.id), api_key_record_encoder.encode(record))
            pipe.publish(keyspace.KEY_INVALIDATIONS, record.hash)
            await pipe.execute()

    async def page(self, workspace: str, *, limit: int, after: str | None) -> tuple[list[ApiKeyRecord], bool]:
        ids, has_more = await pages.newest_first(
            self.redis, keyspace.workspace_keys(workspace), limit=limit, after=after
        )
        records = await self.redis.mget([keyspace.api_key(i) for i in ids]) if ids else []
        return [api_key_record_decoder.decode(as_bytes(r)) for r in records if r is not None], has_more

    async def usage(self, key_ids: list[str]) -> dict[str, tuple[int, int | None]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key_id in key_ids:
                pipe.hmget(keyspace.key_usage(key_id), "count", "last_used_ms")
            rows = await pipe.execute()
        return {
            key_id: (int(count or 0), int(last) if last else None)
            for key_id, (count, last) in zip(key_ids, rows, strict=True)
        }

    async def count(self, workspace: str) -> int:
        return await self.redis.zcard(keyspace.workspace_keys(workspace))
