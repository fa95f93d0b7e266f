"""Suppressions in Redis: the durable side of the SuppressionShards, and the listing behind the API.

Per workspace (global entries live under the pseudo-workspace `keyspace.SUPPRESSION_GLOBAL`):
- one set of normalised addresses per (scope, scope value) — `keyspace.suppression_members`;
- a hash of metadata, field `scope\\x1fvalue\\x1femail` → msgpack `SuppressionRecord`;
- a lex index `ulid\\x1ffield` for newest-first pages, and a per-address set of fields.
Each add or remove is one Lua script, so the four stay consistent and a repeated call changes nothing
(a repeated add only updates the reason). After writing, the change is published on
`keyspace.SUPPRESSION_CHANGES`; every shard holding the workspace in memory applies it, which is how
consumers that write here directly (bounce, complaint and unsubscribe handlers) reach the shards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis.asyncio as aioredis
from ulid import ULID

from schemas.domain_names import normalise_domain, normalise_email
from schemas.suppressions import Reason, Scope, SuppressionEntry, SuppressionRecord
from store import keyspace
from store.replies import as_bytes, as_text, hash_fields

GLOBAL = keyspace.SUPPRESSION_GLOBAL
SEPARATOR = "\x1f"
_SCAN_COUNT = 1000

_ADD = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[2], 0, ARGV[3])
  redis.call('SADD', KEYS[3], ARGV[4])
  redis.call('SADD', KEYS[4], ARGV[1])
  return 1
end
local record = cmsgpack.unpack(redis.call('HGET', KEYS[1], ARGV[1]))
if record['reason'] ~= ARGV[5] then
  record['reason'] = ARGV[5]
  record['source'] = ARGV[6]
  redis.call('HSET', KEYS[1], ARGV[1], cmsgpack.pack(record))
end
return 0
"""

_REMOVE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local record = cmsgpack.unpack(raw)
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], record['id'] .. ARGV[3] .. ARGV[1])
redis.call('SREM', KEYS[3], ARGV[2])
redis.call('SREM', KEYS[4], ARGV[1])
return 1
"""


class Change(msgspec.Struct, array_like=True):
    """One published change: `op` is "add" or "remove"; entries are (email, scope, value, reason)."""

    workspace: str
    op: str
    entries: list[tuple[str, Scope, str | None, Reason]]


_encode = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(SuppressionRecord).decode
decode_change = msgspec.msgpack.Decoder(Change).decode


def normalise_entry(entry: SuppressionEntry) -> SuppressionEntry:
    """The entry in normal form (address, domain); ValueError if the address or scope is invalid."""
    value = entry.scope_value
    if entry.scope in ("global", "workspace"):
        if value is not None:
            raise ValueError(f"scope {entry.scope!r} takes no scope_value")
    elif not value:
        raise ValueError(f"scope {entry.scope!r} needs a scope_value")
    elif entry.scope == "domain":
        value = normalise_domain(value)
    return msgspec.structs.replace(entry, email=normalise_email(entry.email), scope_value=value)


def owner(workspace: str, scope: str) -> str:
    """Where an entry is kept: global entries belong to no workspace."""
    return GLOBAL if scope == "global" else workspace


def meta_field(scope: str, scope_value: str | None, email: str) -> str:
    return SEPARATOR.join((scope, scope_value or "", email))


def created_at(record: SuppressionRecord) -> datetime:
    return ULID.from_str(record.id).datetime.astimezone(UTC)


class SuppressionStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._add = redis.register_script(_ADD)
        self._remove = redis.register_script(_REMOVE)

    def _keys(self, workspace: str, scope: str, value: str | None, email: str, field: str) -> list[str]:
        return [
            keyspace.suppression_meta(workspace),
            keyspace.suppression_index(workspace),
            keyspace.suppression_members(workspace, scope, value or "-"),
            keyspace.suppression_by_email(workspace, email),
        ]

    async def add(self, workspace: str, entries: Sequence[SuppressionEntry]) -> list[bool]:
        """Write (normalised) entries; True per entry that was not suppressed in its scope before."""
        normal = [normalise_entry(e) for e in entries]
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in normal:
                home = owner(workspace, entry.scope)
                field = meta_field(entry.scope, entry.scope_value, entry.email)
                record = SuppressionRecord(
                    id=str(ULID()),
                    email=entry.email,
                    scope=entry.scope,
                    scope_value=entry.scope_value,
                    reason=entry.reason,
                    source=entry.source,
                )
                args: list[bytes | str] = [
                    field,
                    _encode(record),
                    record.id + SEPARATOR + field,
                    entry.email,
                    entry.reason,
                    entry.source,
                ]
                await self._add(
                    keys=self._keys(home, entry.scope, entry.scope_value, entry.email, field),
                    args=args,
                    client=pipe,
                )
            for change in changes(workspace, "add", normal):
                pipe.publish(keyspace.SUPPRESSION_CHANGES, _encode(change))
            results = await pipe.execute()
        return [bool(r) for r in results[: len(normal)]]

    async def remove(
        self, workspace: str, emails: Sequence[str], scope: Scope, scope_value: str | None = None
    ) -> list[bool]:
        """Lift suppressions of `emails` in one scope; True per address that was suppressed there."""
        probe = [
            normalise_entry(SuppressionEntry(email=e, scope=scope, scope_value=scope_value)) for e in emails
        ]
        home = owner(workspace, scope)
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in probe:
                field = meta_field(scope, entry.scope_value, entry.email)
                await self._remove(
                    keys=self._keys(home, scope, entry.scope_value, entry.email, field),
                    args=[field, entry.email, SEPARATOR],
                    client=pipe,
                )
            for change in changes(workspace, "remove", probe):
                pipe.publish(keyspace.SUPPRESSION_CHANGES, _encode(change))
            results = await pipe.execute()
        return [bool(r) for r in results[: len(probe)]]

    async def scan(self, workspace: str) -> AsyncIterator[list[SuppressionRecord]]:
        """Every entry of `workspace` (GLOBAL for the global ones), a chunk at a time."""
        cursor: Any = 0
        while True:
            cursor, chunk = await self.redis.hscan(
                keyspace.suppression_meta(workspace), cursor, count=_SCAN_COUNT
            )
            if chunk:
                yield [_decode_record(raw) for raw in hash_fields(chunk).values()]
            if cursor == 0:
                return

    async def is_suppressed(
        self, workspace: str, email: str, scope: Scope, scope_value: str | None = None
    ) -> bool:
        entry = normalise_entry(SuppressionEntry(email=email, scope=scope, scope_value=scope_value))
        members = keyspace.suppression_members(owner(workspace, scope), scope, entry.scope_value or "-")
        return bool(await self.redis.sismember(members, entry.email))

    async def records(
        self, workspace: str, entries: Sequence[SuppressionEntry]
    ) -> list[SuppressionRecord | None]:
        """The stored records of (normalised) entries, in order."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for e in entries:
                pipe.hget(
                    keyspace.suppression_meta(owner(workspace, e.scope)),
                    meta_field(e.scope, e.scope_value, e.email),
                )
            raws = await pipe.execute()
        return [None if raw is None else _decode_record(raw) for raw in raws]

    async def page(
        self,
        workspace: str,
        *,
        limit: int,
        after: str | None,
        email: str | None = None,
        reason: Reason | None = None,
        scope: Scope | None = None,
    ) -> tuple[list[SuppressionRecord], bool, str | None]:
        """Newest first, filtered; returns (records, has_more, cursor position of the last one)."""

        def wanted(record: SuppressionRecord) -> bool:
            return (reason is None or record.reason == reason) and (scope is None or record.scope == scope)

        if email is not None:
            found = await self._by_email(workspace, normalise_email(email), after)
        else:
            found = [item async for item in self._walk(workspace, after, wanted, limit + 1)]
        found = [(member, record) for member, record in found if wanted(record)][: limit + 1]
        page = found[:limit]
        return [r for _, r in page], len(found) > limit, page[-1][0] if page else None

    async def _walk(
        self, workspace: str, after: str | None, wanted, enough: int
    ) -> AsyncIterator[tuple[str, Any]]:
        index, meta = keyspace.suppression_index(workspace), keyspace.suppression_meta(workspace)
        upper, found, chunk = ("+" if after is None else f"({after}"), 0, max(enough * 2, 100)
        while found < enough:
            members = [
                as_text(m) for m in await self.redis.zrevrangebylex(index, upper, "-", start=0, num=chunk)
            ]
            if not members:
                return
            raws = await self.redis.hmget(meta, [m.partition(SEPARATOR)[2] for m in members])
            for member, raw in zip(members, raws, strict=True):
                if raw is not None and wanted(record := _decode_record(as_bytes(raw))):
                    found += 1
                    yield member, record
            upper = f"({members[-1]}"

    async def _by_email(
        self, workspace: str, email: str, after: str | None
    ) -> list[tuple[str, SuppressionRecord]]:
        fields = [
            as_text(f) for f in await self.redis.smembers(keyspace.suppression_by_email(workspace, email))
        ]
        raws = await self.redis.hmget(keyspace.suppression_meta(workspace), fields) if fields else []
        records = [_decode_record(as_bytes(raw)) for raw in raws if raw is not None]
        items = sorted(
            ((r.id + SEPARATOR + meta_field(r.scope, r.scope_value, r.email), r) for r in records),
            reverse=True,
        )
        return [item for item in items if after is None or item[0] < after]


def changes(workspace: str, op: str, entries: list[SuppressionEntry]) -> list[Change]:
    by_owner: dict[str, list[tuple[str, Scope, str | None, Reason]]] = {}
    for e in entries:
        by_owner.setdefault(owner(workspace, e.scope), []).append((e.email, e.scope, e.scope_value, e.reason))
    return [Change(workspace=home, op=op, entries=items) for home, items in by_owner.items()]


async def add_suppressions(
    redis: aioredis.Redis, workspace: str, entries: Sequence[SuppressionEntry]
) -> list[bool]:
    """For consumers (bounce, complaint, unsubscribe handlers): write Redis; the shards follow via pub/sub."""
    return await SuppressionStore(redis).add(workspace, entries)
