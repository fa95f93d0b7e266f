"""Mailing lists in Redis: records, the newest-first index, counts and member pages.

A list's members are three lex zsets of subscriber ids, one per membership status, written by
`store/subscribers.py`; a count is a ZCARD, a page a ZREVRANGEBYLEX (newest subscriber first: ids are
ULIDs). Deleting a list drops its record and sets at once; the subscribers' records keep a stale entry
for it, which every view filters out (`existing`), so deleting a list of a million costs no million writes.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from schemas.audience import MEMBER_STATUSES, ListRecord, SubscriberCount, list_decoder, list_encoder
from store import keyspace, pages
from store.replies import as_bytes


class ListStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def save(self, record: ListRecord, *, new: bool = False) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keyspace.mailing_list(record.workspace, record.id), list_encoder.encode(record))
            if new:
                pages.index_add(pipe, keyspace.mailing_lists(record.workspace), record.id)
            await pipe.execute()

    async def get(self, workspace: str, list_id: str) -> ListRecord | None:
        raw = await self.redis.get(keyspace.mailing_list(workspace, list_id))
        return None if raw is None else list_decoder.decode(as_bytes(raw))

    async def page(self, workspace: str, *, limit: int, after: str | None) -> tuple[list[ListRecord], bool]:
        ids, has_more = await pages.newest_first(
            self.redis, keyspace.mailing_lists(workspace), limit=limit, after=after
        )
        raws = await self.redis.mget([keyspace.mailing_list(workspace, i) for i in ids]) if ids else []
        return [list_decoder.decode(as_bytes(r)) for r in raws if r is not None], has_more

    async def existing(self, workspace: str, list_ids: list[str]) -> set[str]:
        if not list_ids:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for list_id in list_ids:
                pipe.exists(keyspace.mailing_list(workspace, list_id))
            found = await pipe.execute()
        return {list_id for list_id, there in zip(list_ids, found, strict=True) if there}

    async def delete(self, workspace: str, list_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keyspace.mailing_list(workspace, list_id))
            pipe.zrem(keyspace.mailing_lists(workspace), list_id)
            pipe.unlink(*[keyspace.list_members(workspace, list_id, s) for s in MEMBER_STATUSES])
            await pipe.execute()

    async def counts(self, workspace: str, list_ids: list[str]) -> list[SubscriberCount]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for list_id in list_ids:
                for status in MEMBER_STATUSES:
                    pipe.zcard(keyspace.list_members(workspace, list_id, status))
            found = await pipe.execute()
        width = len(MEMBER_STATUSES)
        counts = []
        for n in range(len(list_ids)):
            by_status = dict(zip(MEMBER_STATUSES, found[n * width : (n + 1) * width], strict=True))
            counts.append(SubscriberCount(**by_status, total=sum(by_status.values())))
        return counts

    async def member_page(
        self, workspace: str, list_id: str, *, statuses: tuple[str, ...], limit: int, after: str | None
    ) -> tuple[list[str], bool]:
        """Newest-first subscriber ids over the given status sets (merged: each is sorted by id)."""
        upper = "+" if after is None else f"({after}"
        async with self.redis.pipeline(transaction=False) as pipe:
            for status in statuses:
                key = keyspace.list_members(workspace, list_id, status)
                pipe.zrevrangebylex(key, upper, "-", start=0, num=limit + 1)
            found = await pipe.execute()
        ids = sorted({i.decode() for chunk in found for i in chunk}, reverse=True)
        return ids[:limit], len(ids) > limit
