"""The Redis side of the audit log: the one writer of unchained entries to `m:audit`, and the registry of
the keys that verify the log's signatures.

Two paths append to `m:audit`, both with `encode_entry`: `AuditWriter` (the `audit` middleware, every
route but the send path) and the enqueue script (`store/messages.py`), where a send request's entry
rides with its last message, in the same round trip. The AuditSink (`actors/audit/`) reads the stream,
chains and signs (docs/audit.md).

Verifying keys: an entry keeps the signature it was sealed with, so after a master-key rotation the
old entries verify only with the old key's public half. `record_verifying_keys` keeps every such key
by key id in `m:audit:keys` (written by `mailers secrets reencrypt`, before the old master key may be
dropped); `mailers audit verify` and `GET /v1/audit-logs/public-key` read it back.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from schemas.settings import Settings
from security.audit_chain import AuditEntry, audit_signer, key_id
from store import keyspace
from store.coalescer import Coalescer
from store.replies import hash_fields

_encoder = msgspec.msgpack.Encoder()


def encode_entry(entry: AuditEntry) -> bytes:
    """An unchained entry as `m:audit` holds it (field `keyspace.AUDIT_FIELD`)."""
    return _encoder.encode(entry)


class AuditWriter:
    """Appends unchained entries to `m:audit`; concurrent appends share one pipeline round trip.
    More than `max_pending` waiting entries raise `Backpressure` (the request is answered 503)."""

    def __init__(self, redis: aioredis.Redis, *, stream: str = keyspace.AUDIT_STREAM) -> None:
        self.redis, self.stream = redis, stream
        self._batches = Coalescer(self._xadd, max_in_flight=2, max_batch=2000, max_pending=100_000)

    async def append(self, entry: AuditEntry) -> None:
        await self._batches.submit(entry)

    async def _xadd(self, entries: list[AuditEntry]) -> list[None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.xadd(self.stream, {keyspace.AUDIT_FIELD: encode_entry(entry)})
            await pipe.execute()
        return [None] * len(entries)

    async def drain(self) -> None:
        await self._batches.drain()


async def record_verifying_keys(redis: aioredis.Redis, public_key_pems: Iterable[bytes]) -> list[str]:
    """Keep these verifying keys (PEM) by key id; recording one again changes nothing. Returns the ids."""
    keys = {key_id(pem): pem for pem in public_key_pems}
    if keys:
        # redis-py's `mapping` is invariant in its key type, so it takes no dict[str, bytes] as it is.
        fields: dict[FieldT, EncodableT] = {k: v for k, v in keys.items()}
        await redis.hset(keyspace.AUDIT_KEYS, mapping=fields)
    return list(keys)


async def verifying_keys(redis: aioredis.Redis) -> dict[str, bytes]:
    """Every recorded verifying key: key id -> PEM."""
    raw = hash_fields(await redis.hgetall(keyspace.AUDIT_KEYS))
    return {k.decode(): v for k, v in raw.items()}


async def all_verifying_keys(settings: Settings, redis: aioredis.Redis) -> dict[str, bytes]:
    """Key id -> PEM of every key the log may be signed with: the configured master secrets' (current
    and old) and the ones recorded in Redis before old secrets were dropped (`record_verifying_keys`)."""
    masters = [k for k in (settings.secret_key, *settings.secret_keys_old) if k]
    derived = [audit_signer(master).public_key_pem() for master in masters]
    return {**await verifying_keys(redis), **{key_id(pem): pem for pem in derived}}
