"""Imports in Redis: the record, its progress counters, its rows waiting in a stream, its row errors.

The ingress appends parsed rows to the import's stream (`import_rows`) as the body arrives, a batch per
entry (the runner applies them meanwhile: the import is in `IMPORTS_ACTIVE` from its creation); only
when the whole body is durable does it mark the import `running`, and only then may the runner complete it.
The import runner applies an entry's rows and, in the same script as the subscriber
writes (`SubscriberStore.upsert(extra=…)`), adds to the counters, appends the row errors and deletes the
entry: a crash before that script re-applies the entry (nothing was counted), a crash after it finds the
entry gone. So counts are exact however often the runner restarts.
"""

from __future__ import annotations

from typing import Any

import msgspec
import redis.asyncio as aioredis

from schemas.audience import (
    ImportRecord,
    ImportStatus,
    ImportView,
    RowError,
    import_decoder,
    row_error_decoder,
)
from store import keyspace, pages
from store.compare_apply import Batch
from store.lua import lua_string
from store.replies import as_bytes, as_text, hash_fields, stream_entries

ROWS_FIELD = b"r"
TOUCHED = "touched_ms"  # when the upload last appended rows: an upload silent for long has died
COUNTERS = ("rows", "created", "updated", "unchanged", "rejected")
_MARK_UPLOADED = """
if redis.call('HGET', KEYS[1], 'status') ~= 'uploading' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'running')
return 1
"""
_encode = msgspec.msgpack.Encoder().encode
_decode_rows = msgspec.msgpack.Decoder(list[tuple[int, list[str]]]).decode


def active_member(workspace: str, import_id: str) -> str:
    return f"{workspace}|{import_id}"


class ImportStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def create(self, record: ImportRecord) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keyspace.subscriber_import(record.workspace, record.id), _encode(record))
            pipe.hset(
                keyspace.import_progress(record.workspace, record.id),
                mapping={"status": "uploading", TOUCHED: record.created_ms},
            )
            pages.index_add(pipe, keyspace.list_imports(record.workspace, record.list_id), record.id)
            pipe.sadd(keyspace.IMPORTS_ACTIVE, active_member(record.workspace, record.id))
            await pipe.execute()

    async def set_columns(self, record: ImportRecord) -> None:
        await self.redis.set(keyspace.subscriber_import(record.workspace, record.id), _encode(record))

    async def append_rows(
        self,
        workspace: str,
        import_id: str,
        rows: list[tuple[int, list[str]]],
        errors: list[RowError],
        now_ms: int,
    ) -> None:
        """One entry of rows; rows the parser already refused are counted and recorded at once. The
        upload's last sign of life moves to `now_ms` (see `stalled`)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keyspace.import_progress(workspace, import_id), TOUCHED, now_ms)
            if rows:
                pipe.xadd(keyspace.import_rows(workspace, import_id), {ROWS_FIELD: _encode(rows)})
            if errors:
                add_errors(pipe, workspace, import_id, errors)
            await pipe.execute()

    async def uploaded(self, workspace: str, import_id: str) -> bool:
        """The body is durable: the runner may finish the import once its stream is empty. False if the
        import is no longer uploading (the runner failed it as stalled): it stays failed."""
        key = keyspace.import_progress(workspace, import_id)
        return bool(await self.redis.eval(_MARK_UPLOADED, 1, key))

    async def fail(self, workspace: str, import_id: str, reason: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                keyspace.import_progress(workspace, import_id), mapping={"status": "failed", "reason": reason}
            )
            pipe.delete(keyspace.import_rows(workspace, import_id))
            pipe.srem(keyspace.IMPORTS_ACTIVE, active_member(workspace, import_id))
            await pipe.execute()

    async def get(self, workspace: str, import_id: str) -> ImportRecord | None:
        raw = await self.redis.get(keyspace.subscriber_import(workspace, import_id))
        return None if raw is None else import_decoder.decode(as_bytes(raw))

    async def progress(self, workspace: str, import_id: str) -> dict[str, Any]:
        raw = hash_fields(await self.redis.hgetall(keyspace.import_progress(workspace, import_id)))
        found = {k.decode(): v.decode() for k, v in raw.items()}
        return {"status": found.get("status", "running"), **{c: int(found.get(c, 0)) for c in COUNTERS}}

    async def view(self, record: ImportRecord, errors_url: str) -> ImportView:
        progress = await self.progress(record.workspace, record.id)
        status: ImportStatus = "running" if progress["status"] == "uploading" else progress["status"]
        return ImportView(
            id=record.id,
            list=record.list_id,
            status=status,
            created_at=None,
            errors_url=errors_url if progress["rejected"] else None,
            **{c: progress[c] for c in COUNTERS},
        )

    async def errors(self, workspace: str, import_id: str, *, start: int, count: int) -> list[RowError]:
        raws = await self.redis.lrange(keyspace.import_errors(workspace, import_id), start, start + count - 1)
        return [row_error_decoder.decode(as_bytes(r)) for r in raws]

    # --- the runner's side --------------------------------------------------------------------------
    async def active(self) -> list[tuple[str, str]]:
        members = await self.redis.smembers(keyspace.IMPORTS_ACTIVE)
        pairs = (as_text(m).split("|", 1) for m in members)
        return sorted((workspace, import_id) for workspace, import_id in pairs)

    async def next_entry(
        self, workspace: str, import_id: str
    ) -> tuple[bytes, list[tuple[int, list[str]]]] | None:
        found = await self.next_entries(workspace, import_id, 1)
        return found[0] if found else None

    async def next_entries(
        self, workspace: str, import_id: str, count: int
    ) -> list[tuple[bytes, list[tuple[int, list[str]]]]]:
        """The oldest `count` entries of rows waiting (one XRANGE), oldest first."""
        found = stream_entries(
            await self.redis.xrange(keyspace.import_rows(workspace, import_id), count=count)
        )
        return [(entry_id, _decode_rows(fields[ROWS_FIELD])) for entry_id, fields in found]

    async def stalled(self, workspace: str, import_id: str, now_ms: int, after_ms: int) -> bool:
        """Still uploading, with no rows appended for `after_ms`: the ingress that read it is gone (a
        process that dies mid-body runs no `fail`), so nothing will ever mark it uploaded."""
        status, touched = await self.redis.hmget(
            keyspace.import_progress(workspace, import_id), "status", TOUCHED
        )
        return status == b"uploading" and touched is not None and now_ms - int(touched) > after_ms

    async def complete(self, workspace: str, import_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keyspace.import_progress(workspace, import_id), "status", "completed")
            pipe.srem(keyspace.IMPORTS_ACTIVE, active_member(workspace, import_id))
            pipe.delete(keyspace.import_rows(workspace, import_id))
            await pipe.execute()


def add_errors(pipe: Any, workspace: str, import_id: str, errors: list[RowError]) -> None:
    pipe.rpush(keyspace.import_errors(workspace, import_id), *[_encode(e) for e in errors])
    pipe.hincrby(keyspace.import_progress(workspace, import_id), "rows", len(errors))
    pipe.hincrby(keyspace.import_progress(workspace, import_id), "rejected", len(errors))


def commit_entry(
    batch: Batch,
    workspace: str,
    import_id: str,
    entry_id: bytes | list[bytes],
    counts: dict[str, int],
    errors: list[RowError],
) -> None:
    """The runner's progress, in the same script as the rows' subscriber writes, applied only while the
    entries (one, or several applied together) exist: a second runner that read one of them too applies
    nothing (`EntryGone`)."""
    entry_ids = entry_id if isinstance(entry_id, list) else [entry_id]
    stream = keyspace.import_rows(workspace, import_id)
    for one in entry_ids:
        batch.require_entry(stream, one)
    progress = keyspace.import_progress(workspace, import_id)
    for name, value in counts.items():
        if value:
            batch.command("HINCRBY", progress, name, value)
    if errors:
        batch.spread(
            "RPUSH", keyspace.import_errors(workspace, import_id), [lua_string(_encode(e)) for e in errors]
        )
    batch.command("XDEL", stream, *entry_ids)
