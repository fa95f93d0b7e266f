"""CampaignArchiver: a packed campaign's settled messages into the archive while it sends, and after.

The archive (store/ledger/archive.py) holds `BUCKET` positions of a campaign's range in one compressed
string. A bucket may be archived only where the campaign will never enqueue again, since an archived
position's hash is gone (the enqueue's guard then treats the position as sent, so a late enqueue there would
be dropped, never sent twice). Which positions those are (`committed`):
- in the `send` phase, each slice's positions from its first to the end of its last committed chunk
  (`sp:{slice}` = "first,end", written with the chunk's cursor in the same MULTI);
- once the sending by position is over (`retry`, `settle`, or the campaign finished), every position
  enqueued (the range's count). Retried recipients get ids of their own, outside the range;
- nothing before: the A/B `test` phase sends some positions of a bucket, `send` the others later.

Each pass (at most once a `PASS_SECONDS`) looks at up to `LOOKAHEAD` buckets from the campaign's archive
cursor (`arc`, the first bucket not yet archived): each is archived if every message in it is settled and
quiet (`MAILERS_CAMPAIGN_ARCHIVE_AFTER_SECONDS` since its last event), skipped if one is still sending;
the pass ends at a bucket too recent (later ones are newer still). The cursor moves over the buckets
archived. A campaign leaves the set `CAMPAIGNS_ARCHIVING` when it is finished and its cursor has passed its
last bucket.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import redis.asyncio as aioredis

from schemas.campaigns import FINISHED
from schemas.settings import Settings
from store.campaigns import CampaignState, CampaignStore
from store.ledger import MessageLedger
from store.ledger.archive import BUCKET
from store.ledger.index_ranges import range_prefix

PASS_SECONDS = 1.0
LOOKAHEAD = 64  # buckets a pass looks at, per campaign (8,192 positions)
DONE_PHASES = ("retry", "settle")


def committed(status: str, fields: Mapping[str, str], count: int) -> list[tuple[int, int]]:
    """The position intervals [start, end) a campaign (its status and hash `fields`) will never enqueue
    again, merged, in order; `count`: its range's positions enqueued (store/ledger/index_ranges.py)."""
    phase = fields.get("phase") or ""
    if status in FINISHED or phase in DONE_PHASES:  # to the end of the last bucket: nothing follows
        return [(0, -(-count // BUCKET) * BUCKET)] if count else []
    if phase != "send":
        return []
    spans: list[tuple[int, int]] = []
    for j in range(max(1, int(fields.get("slices") or 0))):
        first, _, after = (fields.get(f"sp:{j}") or "").partition(",")
        if first and after:
            spans.append((int(first), int(after)))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def covered(intervals: list[tuple[int, int]], bucket: int) -> bool:
    low, high = bucket * BUCKET, (bucket + 1) * BUCKET
    return any(start <= low and high <= end for start, end in intervals)


def slice_span(state: CampaignState, slice_index: int, positions: list[int]) -> str:
    """The slice's committed span once the chunk of `positions` is (`sp:{slice}`)."""
    start = (state.text(f"sp:{slice_index}") or "").partition(",")[0]
    return f"{start or positions[0]},{positions[-1] + 1}"


class CampaignArchiver:
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        range_of: Callable[[int, str], str],
    ) -> None:
        self.redis = redis
        self.clock = clock
        self.quiet_ms = settings.campaign_archive_after_seconds * 1000
        self.retention_ms = settings.message_retention_seconds * 1000
        self.range_of = range_of  # (launch ms, campaign id) -> the id of the campaign's position 0
        self.ledger = MessageLedger(redis)
        self.store = CampaignStore(redis)
        self._next_pass = 0.0

    async def step(self) -> int:
        """One pass over the campaigns being archived, if one is due: the buckets archived."""
        now = self.clock()
        if now < self._next_pass:
            return 0
        self._next_pass = now + PASS_SECONDS
        archived = 0
        for workspace, campaign_id in await self.store.archiving():
            archived += await self.advance(workspace, campaign_id)
        return archived

    async def advance(self, workspace: str, campaign_id: str) -> int:
        state = await self.store.get(workspace, campaign_id)
        if state is None or not state.number("launch_ms"):
            await self.store.archived(workspace, campaign_id)
            return 0
        prefix = range_prefix(self.range_of(state.number("launch_ms"), campaign_id))
        cursor = state.number("arc")
        count, archived_before = await self.ledger.range_progress(
            workspace, prefix, range(cursor, cursor + LOOKAHEAD)
        )
        intervals = committed(state.status, state.fields, count)
        last = -(-count // BUCKET)  # the buckets of the range: [0, last)
        window = list(range(cursor, min(cursor + LOOKAHEAD, last)))
        done = dict(zip(window, archived_before, strict=False))
        now_ms = int(self.clock() * 1000)
        archived = 0
        for bucket in window:
            if done[bucket] or not covered(intervals, bucket):
                continue
            outcome = await self.ledger.archive_bucket(
                workspace,
                prefix,
                bucket,
                now_ms=now_ms,
                quiet_ms=self.quiet_ms,
                retention_ms=self.retention_ms,
            )
            if outcome == "recent":
                break
            if isinstance(outcome, int):
                done[bucket] = True
                archived += 1
        moved = cursor
        while moved in done and done[moved]:
            moved += 1
        if moved != cursor:
            await self.store.set_fields(workspace, campaign_id, {"arc": moved})
        if state.status in FINISHED and moved >= last:
            await self.store.archived(workspace, campaign_id)
        return archived
