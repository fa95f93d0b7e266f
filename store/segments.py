"""Segment records in Redis: one msgpack `SegmentRecord` per segment and a per-workspace index.

A segment is a saved filter; its members are computed in the analytics store on demand
(analytics/segments.py), so nothing here changes when subscribers do.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from schemas.segments import SegmentRecord, segment_record_decoder, segment_record_encoder
from store import keyspace, pages
from store.replies import as_bytes


class SegmentStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def create(self, record: SegmentRecord) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keyspace.segment(record.workspace, record.id), segment_record_encoder.encode(record))
            pages.index_add(pipe, keyspace.segment_index(record.workspace), record.id)
            await pipe.execute()

    async def save(self, record: SegmentRecord) -> None:
        await self.redis.set(
            keyspace.segment(record.workspace, record.id), segment_record_encoder.encode(record)
        )

    async def get(self, workspace: str, segment_id: str) -> SegmentRecord | None:
        raw = await self.redis.get(keyspace.segment(workspace, segment_id))
        return None if raw is None else segment_record_decoder.decode(as_bytes(raw))

    async def page(
        self, workspace: str, *, limit: int, after: str | None
    ) -> tuple[list[SegmentRecord], bool]:
        ids, has_more = await pages.newest_first(
            self.redis, keyspace.segment_index(workspace), limit=limit, after=after
        )
        raws = await self.redis.mget([keyspace.segment(workspace, i) for i in ids]) if ids else []
        return [segment_record_decoder.decode(as_bytes(r)) for r in raws if r is not None], has_more

    async def delete(self, workspace: str, segment_id: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keyspace.segment(workspace, segment_id))
            pipe.zrem(keyspace.segment_index(workspace), segment_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)
