"""The Redis side of audit checkpoints (security/audit_checkpoint.py): the latest per workspace, a bounded
history, and the outbox the exporter drains to the operator's external sink.

Only the AuditSink writes here, one MULTI per batch of checkpoints, so the latest, the history and the
outbox never disagree. The history is kept in Redis only (no analytics table): a checkpoint is worth
something because it lives apart from the store it vouches for, and the analytics store is exactly what
someone who truncates the log would edit. `verify` needs only the latest; the full record goes to the
external sink. HISTORY_PER_WORKSPACE at most one checkpoint a minute is a week of continuous traffic.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from security.audit_checkpoint import AuditCheckpoint, decode_checkpoint, encode_checkpoint
from store import keyspace
from store.replies import as_text, hash_fields, members, stream_entries

HISTORY_PER_WORKSPACE = 10_000
OUTBOX_MAX = 100_000  # a sink down for long: older checkpoints are superseded by newer ones anyway


class CheckpointLog:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def publish(self, checkpoints: Sequence[AuditCheckpoint], *, outbox: bool) -> None:
        """Record checkpoints as the latest of their workspaces, in the history, and (`outbox`) for export."""
        if not checkpoints:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            for checkpoint in checkpoints:
                raw = encode_checkpoint(checkpoint)
                history = keyspace.audit_checkpoints(checkpoint.workspace)
                pipe.hset(keyspace.AUDIT_CHECKPOINT_LATEST, checkpoint.workspace, raw)
                pipe.zadd(history, {raw: checkpoint.seq})
                pipe.zremrangebyrank(history, 0, -HISTORY_PER_WORKSPACE - 1)
                if outbox:
                    pipe.xadd(
                        keyspace.AUDIT_CHECKPOINT_OUTBOX,
                        {keyspace.AUDIT_FIELD: raw},
                        maxlen=OUTBOX_MAX,
                        approximate=True,
                    )
            await pipe.execute()

    async def latest(self, workspace: str) -> AuditCheckpoint | None:
        raw = await self.redis.hget(keyspace.AUDIT_CHECKPOINT_LATEST, workspace)
        return None if raw is None else decode_checkpoint(raw)

    async def latest_seqs(self) -> dict[str, int]:
        """Workspace -> seq of its latest checkpoint (a restarted sink compares them with the heads)."""
        raw = hash_fields(await self.redis.hgetall(keyspace.AUDIT_CHECKPOINT_LATEST))
        return {as_text(ws): decode_checkpoint(value).seq for ws, value in raw.items()}

    async def page(
        self, workspace: str, *, limit: int, before_seq: int | None
    ) -> tuple[list[AuditCheckpoint], bool]:
        """Newest first (highest seq first), continuing below `before_seq`."""
        top = "+inf" if before_seq is None else f"({before_seq}"
        rows = members(
            await self.redis.zrevrangebyscore(
                keyspace.audit_checkpoints(workspace), top, "-inf", start=0, num=limit + 1
            )
        )
        return [decode_checkpoint(raw) for raw in rows[:limit]], len(rows) > limit

    async def outbox(self, count: int) -> list[tuple[bytes, AuditCheckpoint]]:
        """The oldest checkpoints not yet exported."""
        rows = stream_entries(await self.redis.xrange(keyspace.AUDIT_CHECKPOINT_OUTBOX, count=count))
        return [(entry_id, decode_checkpoint(fields[keyspace.AUDIT_FIELD])) for entry_id, fields in rows]

    async def exported(self, entry_ids: Sequence[bytes]) -> None:
        if entry_ids:
            await self.redis.xdel(keyspace.AUDIT_CHECKPOINT_OUTBOX, *entry_ids)
