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

Each pass (at most once a `PASS_SECONDS`) walks each span of committed buckets from where the last pass left
it (a cursor per span, in memory; the buckets' existence is the truth, so a restarted runner finds them
again): a bucket is archived if every message in it is settled and quiet
(`MAILERS_CAMPAIGN_ARCHIVE_AFTER_SECONDS` since its last event), skipped if one is still sending (a later
pass tries again); the span's walk ends at a bucket too recent (the ones after it were sent later still),
and the pass after `PER_PASS` buckets. A campaign leaves the set `CAMPAIGNS_ARCHIVING` when it is finished
and every bucket of it is archived. Each pass also packs again the buckets a late event restored messages
from, once those are quiet (`pack_restored`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import redis.asyncio as aioredis

from schemas.campaigns import FINISHED
from schemas.settings import Settings
from store.campaigns import CampaignState, CampaignStore
from store.ledger.archive import BUCKET
from store.ledger.archive_store import ArchiveStore
from store.ledger.index_ranges import range_prefix

PASS_SECONDS = 0.25
PER_PASS = 32  # buckets archived a pass, per campaign: 4,096 messages (~16,000/s, above any send rate here)
WINDOW = 256  # buckets whose being archived one round trip checks
BUSY_SECONDS = 30.0  # a bucket busy this long (a message held in the queue) is read again this often, at most
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


def whole_buckets(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The buckets [first, end) wholly inside each interval of positions."""
    spans = [(-(-start // BUCKET), end // BUCKET) for start, end in intervals]
    return [(first, end) for first, end in spans if first < end]


def slice_span(state: CampaignState, slice_index: int, positions: list[int]) -> str:
    """The slice's committed span once the chunk of `positions` is (`sp:{slice}`)."""
    start = (state.text(f"sp:{slice_index}") or "").partition(",")[0]
    return f"{start or positions[0]},{positions[-1] + 1}"


class _Span(NamedTuple):
    workspace: str
    prefix: str  # the campaign's range (store/ledger/index_ranges.py)
    cursor: tuple[str, str, int]  # (workspace, campaign, first): its key in `_cursors`
    first: int
    end: int


class CampaignArchiver:
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        range_of: Callable[[int, str], str],
    ) -> None:
        self.clock = clock
        self.quiet_ms = settings.campaign_archive_after_seconds * 1000
        self.retention_ms = settings.message_retention_seconds * 1000
        self.range_of = range_of  # (launch ms, campaign id) -> the id of the campaign's position 0
        self.archive = ArchiveStore(redis)
        self.store = CampaignStore(redis)
        self._next_pass = 0.0
        self._cursors: dict[tuple[str, str, int], int] = {}
        # (…cursor, bucket) -> (busy since, look again at), ms
        self._busy: dict[tuple[str, str, int, int], tuple[int, int]] = {}

    async def step(self) -> int:
        """One pass over the campaigns being archived, if one is due: the buckets archived."""
        now = self.clock()
        if now < self._next_pass:
            return 0
        self._next_pass = now + PASS_SECONDS
        archived = 0
        for workspace, campaign_id in await self.store.archiving():
            archived += await self.advance(workspace, campaign_id)
        return archived + await self.pack_restored()

    async def pack_restored(self) -> int:
        """The buckets whose messages a late event restored (`ArchiveStore.restore`), packed again once
        those are quiet: a delivery that came after the quiet time does not keep its message a hash."""
        now_ms = int(self.clock() * 1000)
        packed = 0
        for workspace, prefix, bucket, at in await self.archive.restored(now_ms - self.quiet_ms, PER_PASS):
            outcome = await self.archive.repack(
                workspace, prefix, bucket, restored_at=at, now_ms=now_ms, quiet_ms=self.quiet_ms
            )
            packed += isinstance(outcome, int) and outcome > 0
        return packed

    async def advance(self, workspace: str, campaign_id: str) -> int:
        """Archive what is ready of one campaign: each span of committed buckets, from where the last pass
        left it. The buckets' existence is the truth; the cursors only save looking again."""
        state = await self.store.get(workspace, campaign_id)
        if state is None or not state.number("launch_ms"):
            await self._done(workspace, campaign_id)
            return 0
        prefix = range_prefix(self.range_of(state.number("launch_ms"), campaign_id))
        count = await self.archive.range_count(workspace, prefix)
        archived, complete = 0, True
        for first, end in whole_buckets(committed(state.status, state.fields, count)):
            span = _Span(workspace, prefix, (workspace, campaign_id, first), first, end)
            archived += await self._span(span, PER_PASS - archived)
            complete = complete and self._cursors.get(span.cursor, first) >= end
        if state.status in FINISHED and complete:
            await self._done(workspace, campaign_id)
        return archived

    async def _span(self, span: _Span, budget: int) -> int:
        """Up to `budget` buckets of `span` archived, from its cursor; its cursor moved past the first run
        of archived ones (in memory: after a restart the first passes find them again, `WINDOW` buckets
        a round trip). Ends at a bucket too recent: the ones after it were sent later still."""
        archived, contiguous = 0, True
        bucket = max(span.first, self._cursors.get(span.cursor, span.first))
        now_ms = int(self.clock() * 1000)
        while bucket < span.end:
            window = range(bucket, min(bucket + WINDOW, span.end))
            found = await self.archive.archived(span.workspace, span.prefix, window)
            for at, done in zip(window, found, strict=True):
                if not done:
                    if archived >= budget:
                        return archived
                    outcome = await self._bucket(span, at, now_ms)
                    if outcome == "recent":
                        return archived
                    done = isinstance(outcome, int)  # else "busy" or "changed": a later pass
                    archived += done
                contiguous = contiguous and done
                if contiguous:
                    self._cursors[span.cursor] = at + 1
            bucket = window[-1] + 1
        return archived

    async def _bucket(self, span: _Span, bucket: int, now_ms: int) -> int | str:
        """`ArchiveStore.pack`, but a busy bucket (a message still queued: just handed to the dispatchers,
        or held by a paused server or a quota) is read again only after half as long as it has been busy,
        at most `BUSY_SECONDS`: a few reads while its messages are just being sent, then fewer. Before
        round 15 one busy for less than `BUSY_SECONDS` was read every pass (4 a second): a campaign held
        with a large in-flight window had every queued bucket's 128 hashes read that often."""
        key = (*span.cursor, bucket)
        since, retry_at = self._busy.get(key, (now_ms, 0))
        if retry_at > now_ms:
            return "busy"
        outcome = await self.archive.pack(
            span.workspace,
            span.prefix,
            bucket,
            now_ms=now_ms,
            quiet_ms=self.quiet_ms,
            retention_ms=self.retention_ms,
        )
        if outcome == "busy":
            self._busy[key] = (since, now_ms + min(int(BUSY_SECONDS * 1000), (now_ms - since) // 2))
        else:
            self._busy.pop(key, None)
        return outcome

    async def _done(self, workspace: str, campaign_id: str) -> None:
        await self.store.archived(workspace, campaign_id)
        for cursor in [c for c in self._cursors if c[:2] == (workspace, campaign_id)]:
            del self._cursors[cursor]
        for busy in [b for b in self._busy if b[:2] == (workspace, campaign_id)]:
            del self._busy[busy]
