"""A packed campaign's messages in the workspace's message index: one member for the campaign, not one per
message (~130 B a message in a skiplist zset, so ~130 MB for a million).

A packed campaign's message ids come from its recipients' positions (actors/campaigns/body.message_id_at):
`msg_` and 26 Crockford digits, of which the first 18 are the launch time and 40 bits of the campaign id's
hash (its *prefix*, `RANGE_PREFIX_LENGTH` characters with `msg_`) and the last 8 the position (40 bits).
The enqueue script (store/ledger/scripts.py, ENQUEUE) adds `prefix + "~"` to the index instead of each id,
and keeps the count of positions enqueued (the highest + 1) in the workspace's hash `message-ranges`
(prefix → count). `~` sorts after every Crockford digit, so the mark sits just above the range's ids and
below any greater id: walking the index newest first, a reader meets the mark where the range's ids would
be and expands it, highest position first (`newest_first`). A position whose message was never enqueued
(a subscriber skipped at the send) or has expired has no hash: the list passes over it as over any id
whose hash is gone. A campaign that was sending when the ranges came (round 12) has its first ids in the
index one by one as well: the script that adds its mark raises the count over the highest of them, and
`newest_first` passes over a plain id that a count covers, so each id is listed once, in order.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from schemas.ids import ulid_bytes, ulid_text
from store import keyspace
from store.replies import as_text

RANGE_PREFIX_LENGTH = 22  # "msg_" + 18 digits: the launch time and the campaign's 40 bits
RANGE_MARK = "~"


def range_prefix(message_id: str) -> str:
    return message_id[:RANGE_PREFIX_LENGTH]


def position_of(message_id: str) -> int:
    """The position a range's id carries in its last 8 digits (40 bits)."""
    return int.from_bytes(ulid_bytes(message_id[4:])[-5:], "big")


def id_in_range(prefix: str, position: int) -> str:
    return prefix + ulid_text(position.to_bytes(16, "big"))[-8:]


async def newest_first(
    redis: aioredis.Redis, workspace: str, *, limit: int, after: str | None
) -> tuple[list[str], bool]:
    """Up to `limit` ids of the workspace's message index below `after` (all of them when None), newest
    first, with each range expanded; and whether more follow. An `after` inside a range continues with the
    range's lower positions, then below the range."""
    index, ranges = keyspace.message_index(workspace), keyspace.message_ranges(workspace)
    out: list[str] = []
    upper = "+" if after is None else f"({after}"
    if after is not None and len(after) == RANGE_PREFIX_LENGTH + 8:
        prefix = range_prefix(after)
        if await redis.hget(ranges, prefix) is not None:
            below = position_of(after) - 1
            out += [id_in_range(prefix, p) for p in range(below, max(below - limit - 1, -1), -1)]
            upper = f"({prefix}"
    while len(out) <= limit:
        members = [
            as_text(m)
            for m in await redis.zrevrangebylex(index, upper, "-", start=0, num=limit + 1 - len(out))
        ]
        if not members:
            break
        # Each mark's count, and whether a plain id is one a range stands for: a campaign that was sending
        # when the ranges came (round 12) has its earlier ids in the index one by one as well.
        prefixes = sorted({m[:-1] if m.endswith(RANGE_MARK) else range_prefix(m) for m in members})
        counts = {p: int(c) for p, c in zip(prefixes, await redis.hmget(ranges, prefixes), strict=True) if c}
        for member in members:
            if not member.endswith(RANGE_MARK):
                count = counts.get(range_prefix(member))
                if count is None or position_of(member) >= count:
                    out.append(member)
                continue
            count, prefix = counts.get(member[:-1], 0), member[:-1]
            take = limit + 1 - len(out)
            out += [id_in_range(prefix, p) for p in range(count - 1, max(count - 1 - take, -1), -1)]
            if len(out) > limit:
                break
        upper = f"({members[-1]}"
    return out[:limit], len(out) > limit


async def trim(redis: aioredis.Redis, workspace: str, cutoff: str) -> int:
    """The ranges whose mark is below `cutoff` (an exclusive `ZREMRANGEBYLEX` bound, `(msg_…`) leave the
    ranges hash; the caller removed their marks from the index with the other old ids."""
    ranges = keyspace.message_ranges(workspace)
    old = [p for p in map(as_text, await redis.hkeys(ranges)) if f"({p}{RANGE_MARK}" < cutoff]
    return int(await redis.hdel(ranges, *old)) if old else 0
