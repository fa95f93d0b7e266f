"""Newest-first pages over a lexicographic index of ULID-ordered ids (a zset whose scores are all 0).

ULIDs sort by creation time, so `ZREVRANGEBYLEX` from just below the previous page's last id gives a
page that stays stable while new items are added at the top.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from store.replies import as_text


async def newest_first(
    redis: aioredis.Redis, index_key: str, *, limit: int, after: str | None
) -> tuple[list[str], bool]:
    upper = "+" if after is None else f"({after}"
    ids = await redis.zrevrangebylex(index_key, upper, "-", start=0, num=limit + 1)
    return [as_text(i) for i in ids[:limit]], len(ids) > limit


def index_add(pipe: aioredis.client.Pipeline, index_key: str, item_id: str) -> None:
    pipe.zadd(index_key, {item_id: 0})
