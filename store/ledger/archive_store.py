"""`ArchiveStore`: the archive's Redis side (the rules are in archive.py, the scripts in scripts.py).

Part of the message ledger: `MessageLedger` reads an archived message through `read` and restores it
through `restore` before a write; the campaign archiver (actors/campaigns/archiver.py) packs buckets
(`pack`) and packs again those a late event restored messages from (`restored`, `repack`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import cast

import redis.asyncio as aioredis

from schemas.ids import is_id
from store import keyspace
from store.ledger import archive
from store.ledger.index_ranges import position_of
from store.ledger.scripts import ARCHIVE, READ_HASHES, REARCHIVE, RESTORE
from store.replies import as_bytes, as_text

Fields = dict[bytes, bytes]
Held = dict[int, tuple[str, Fields]]  # position -> (message id, its hash's fields)


class ArchiveStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._archive = redis.register_script(ARCHIVE)
        self._restore = redis.register_script(RESTORE)
        self._rearchive = redis.register_script(REARCHIVE)
        self._read_hashes = redis.register_script(READ_HASHES)

    # --- reads and restores (the ledger's) -------------------------------------------------------------
    async def read(self, workspace: str, ids: Sequence[str]) -> dict[str, Fields]:
        """The archived records among `ids`, by id, each as its hash's fields. For ids whose hash is gone:
        a message's own hash, when it has one, is newer than its bucket's copy."""
        where = {i: archive.locate(i) for i in ids if is_id(i, "msg")}
        buckets = sorted(set(where.values()))
        if not buckets:
            return {}
        blobs = await self.redis.mget([keyspace.message_archive(workspace, p, b) for p, b in buckets])
        records = {at: archive.unpack(as_bytes(b)) for at, b in zip(buckets, blobs, strict=True) if b}
        found: dict[str, Fields] = {}
        for message_id, at in where.items():
            fields = records.get(at, {}).get(position_of(message_id))
            if fields is not None:
                found[message_id] = fields
        return found

    async def restore(self, workspace: str, ids: Sequence[str]) -> dict[str, Fields]:
        """Archived messages among `ids` back into hashes of their own, to be written: a hash that exists
        is kept as it is. Returns the archived records found, by id (each now has its hash); their buckets
        are marked to be packed again (`restored`)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.exists(keyspace.message(workspace, message_id))
            exists = await pipe.execute()
        found = await self.read(workspace, [i for i, e in zip(ids, exists, strict=True) if not e])
        if found:
            keys: list[str] = [keyspace.ARCHIVE_RESTORED]
            args: list[int | str | bytes] = [int(time.time() * 1000)]
            for message_id, fields in found.items():
                prefix, bucket = archive.locate(message_id)
                keys += [
                    keyspace.message(workspace, message_id),
                    keyspace.message_archive(workspace, prefix, bucket),
                ]
                args += [archive.member(workspace, prefix, bucket), 2 * len(fields)]
                args += [x for pair in fields.items() for x in pair]
            await self._restore(keys=keys, args=args)
        return found

    # --- packing (the archiver's) ----------------------------------------------------------------------
    async def range_count(self, workspace: str, prefix: str) -> int:
        """A packed campaign's range: its positions enqueued (the highest + 1; index_ranges.py)."""
        return int(await self.redis.hget(keyspace.message_ranges(workspace), prefix) or 0)

    async def archived(self, workspace: str, prefix: str, buckets: Sequence[int]) -> list[bool]:
        """Which of a range's `buckets` are in the archive."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.exists(keyspace.message_archive(workspace, prefix, bucket))
            return [bool(found) for found in await pipe.execute()]

    async def pack(
        self, workspace: str, prefix: str, bucket: int, *, now_ms: int, quiet_ms: int, retention_ms: int
    ) -> int | str:
        """The settled messages of a range's bucket into the archive, their hashes deleted. Returns how many
        (0: a bucket of skipped positions only), -1 if the bucket was archived before, or why not now:
        "busy" (a message not settled), "recent" (one's last event less than `quiet_ms` old), "changed"
        (a hash was written while the bucket was packed). Call it only for positions the campaign will never
        enqueue again (actors/campaigns/archiver.py)."""
        _, held = await self._hashes(workspace, prefix, bucket, with_blob=False)
        hashes = _packable(held, now_ms, quiet_ms)
        if isinstance(hashes, str):
            return hashes
        records = {position: fields for position, (_, fields) in hashes.items()}
        keys = [keyspace.message_archive(workspace, prefix, bucket)]
        keys += [keyspace.message(workspace, message_id) for message_id, _ in hashes.values()]
        args: list[int | bytes] = [archive.pack(records), retention_ms]
        args += [archive.fingerprint(f) for _, f in hashes.values()]
        moved = int(await self._archive(keys=keys, args=args))
        return "changed" if moved == 0 and records else moved

    async def restored(self, before_ms: int, limit: int) -> list[tuple[str, str, int, int]]:
        """Buckets with messages restored before `before_ms`, oldest first: (workspace, prefix, bucket,
        when), for `repack`."""
        found = await self.redis.zrangebyscore(
            keyspace.ARCHIVE_RESTORED, "-inf", before_ms, start=0, num=limit, withscores=True
        )
        due: list[tuple[str, str, int, int]] = []
        for raw, score in cast(list[tuple[bytes, float]], found):
            workspace, prefix, bucket = archive.parse_member(as_text(raw))
            due.append((workspace, prefix, bucket, int(score)))
        return due

    async def repack(
        self, workspace: str, prefix: str, bucket: int, *, restored_at: int, now_ms: int, quiet_ms: int
    ) -> int | str:
        """The messages restored from a bucket (`restore`) packed into it again, their hashes deleted, once
        they are settled and quiet: how many, or why not now ("busy", "recent": looked at again after
        the quiet time; "changed": something moved meanwhile, the next pass reads it again)."""
        member = archive.member(workspace, prefix, bucket)
        blob, held = await self._hashes(workspace, prefix, bucket, with_blob=True)
        hashes = _packable(held, now_ms, quiet_ms)
        if isinstance(hashes, str):
            await self.redis.zadd(keyspace.ARCHIVE_RESTORED, {member: now_ms}, xx=True)
            return hashes
        if blob is None or not hashes:  # the bucket expired, or nothing is left to pack
            await self.redis.zrem(keyspace.ARCHIVE_RESTORED, member)
            return 0
        records = archive.unpack(blob) | {position: fields for position, (_, fields) in hashes.items()}
        keys = [keyspace.message_archive(workspace, prefix, bucket), keyspace.ARCHIVE_RESTORED]
        keys += [keyspace.message(workspace, message_id) for message_id, _ in hashes.values()]
        args: list[int | str | bytes] = [archive.pack(records), hashlib.sha1(blob).hexdigest(), member]
        args += [restored_at, *(archive.fingerprint(f) for _, f in hashes.values())]
        return int(await self._rearchive(keys=keys, args=args)) or "changed"

    async def _hashes(
        self, workspace: str, prefix: str, bucket: int, *, with_blob: bool
    ) -> tuple[bytes | None, Held]:
        """The bucket's blob (if `with_blob`) and the message hashes of its positions (position → (id,
        fields)), those that exist."""
        ids = archive.bucket_ids(prefix, bucket)
        keys = [keyspace.message(workspace, message_id) for message_id in ids]
        blob = None
        if with_blob:
            blob = await self.redis.get(keyspace.message_archive(workspace, prefix, bucket))
        rows = await self._read_hashes(keys=keys)
        first = bucket * archive.BUCKET
        return None if blob is None else as_bytes(blob), {
            position: (message_id, dict(zip(flat[::2], flat[1::2], strict=True)))
            for position, (message_id, flat) in enumerate(zip(ids, rows, strict=True), first)
            if flat
        }


def _packable(hashes: Held, now_ms: int, quiet_ms: int) -> Held | str:
    """The hashes to pack, without those that keep their body (`archive.whole`: they stay hashes), or why
    the bucket may not be packed now (`archive.unready` of the first hash that may not)."""
    for _, fields in hashes.values():
        if why := archive.unready(fields, now_ms=now_ms, quiet_ms=quiet_ms):
            return why
    return {position: held for position, held in hashes.items() if not archive.whole(held[1])}
