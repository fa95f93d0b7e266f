"""CampaignRunner: sends launched campaigns, a chunk at a time, from checkpoints in Redis.

One `step()` does, in order:
1. counts a batch of message events of campaign messages into their campaigns' counters (a consumer
   group on `m:events`; the counts and the XACK are one MULTI, so each event is counted once);
2. advances every active campaign (`store.campaigns.CampaignStore.active`) by at most one chunk.

A campaign's phases (the `phase` field of its hash; docs/campaigns.md has the diagram):
  resolve   list members (`subscribed`) and segment members are added to the campaign's audience
            snapshot (a lex zset of subscriber ids: each subscriber, so each address, once), one
            chunk per step, each chunk and the source cursor in one MULTI;
  exclude   members of `exclude_lists` (any status) are removed from the snapshot the same way;
  pack      the final snapshot is packed into pages of ids (~32 B a subscriber instead of the zset's ~128),
            four pages of 500 ids per step, each step's pages and cursor in one MULTI; then the zset goes;
  test      (A/B only) the test fraction gets its variants;   winner: waits `wait_minutes`, then picks;
  send      the rest of the audience (with the winner);        retry: recipients of retry-failed;
  settle    everything is handed over; `sent` (campaign.completed) once nothing is still queued, or
            `failed` when no recipient's message was sent and some failed.
A campaign is also `failed` at once when its pinned template is gone (every item of a chunk rejected
with `template_not_found`): nothing more can be rendered, and no recipient is marked failed for it.
A sending chunk: the next ids after the cursor → their subscriber records (one HMGET) → the still
eligible ones (active, still `subscribed` to one of the campaign's lists) become `OutboundItem`s with
`message_id = derived_id("msg", launch_ms, campaign, subscriber)` → `Outbound.send` (render the pinned
template with the subscriber's variables, route, track, enqueue) → one MULTI with the cursor, the counts
and the failed recipients. A crash before that MULTI replays the chunk: the enqueue treats the derived
ids as already sent (`Accepted.replayed`) and nothing is queued twice.

Pacing: a chunk is only made while fewer than `in_flight` of the campaign's messages are queued and not
yet settled (the in-flight window: what a pause cannot recall), at most `rate.per_second` per second,
only inside the send window; while it waits the campaign says why in `progress.waiting`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
import redis.asyncio as aioredis

from actors.campaigns.archiver import CampaignArchiver, slice_span
from actors.outbound.service import Accepted, Outbound, OutboundItem, Rejected
from actors.policies import send_window
from actors.policies.quota import WindowQuota
from actors.stepping import IdleBlock, until_idle
from analytics.errors import StoreUnavailable
from schemas.audience import MEMBER_STATUSES, SubscriberRecord, subscriber_decoder
from schemas.campaigns import FINISHED, CampaignRecord, FailureRecord, Variant
from schemas.events import Event, event_msgpack_decoder
from schemas.ids import derived_id, new_id, ulid_text
from schemas.segments import SegmentQuery
from schemas.send import RoutingIn, SendRequest, TemplateRef, TrackingIn
from schemas.settings import Settings
from store import keyspace
from store.campaigns import (
    AUDIENCE_PAGE,
    EVENT_COUNTERS,
    CampaignState,
    CampaignStore,
    queued,
    variant_scores,
)
from store.group_reader import GroupReader
from store.replies import as_bytes_or_none, as_text
from store.segments import SegmentStore
from store.servers import ServerStore
from store.workspace_routing import WorkspaceRoutingCache

log = logging.getLogger("mailers.campaigns")

RESOLVE_CHUNK = 2000
PACK_CHUNK = 4 * AUDIENCE_PAGE  # whole pages a step: every page of a packed snapshot is full but its last
SEND_CHUNK = 500
EVENT_BATCH = 200
LIST_ID_KEY = "list_id"  # actors.policies.suppression.LIST_ID_KEY: list-scope suppressions apply
SUBSCRIBER_KEY = "subscriber_id"
VARIANT_KEY = "campaign_variant"
MAX_UNSUBSCRIBE_LISTS = 16


class SegmentsUnavailable(Exception):
    """No analytics reader to page a segment's members (the event sink is not running yet)."""


class SegmentMembers(Protocol):
    """What the runner needs of the analytics reader: a page of a segment's members, newest first."""

    async def segment_members(
        self, workspace: str, query: SegmentQuery, *, after: str | None = None, limit: int = 20
    ) -> Any: ...


VariantMetric = Callable[[str, str, str], Awaitable[dict[str, float]]]


class CampaignRunner:
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        segments: Callable[[], SegmentMembers | None] = lambda: None,
        variant_metric: VariantMetric | None = None,
        in_flight: int | None = None,
        chunk: int = SEND_CHUNK,
        parallel: int = 2,
        consumer: str | None = None,
        index: int = 0,
        runners: int = 1,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.clock = clock
        self.segments = segments
        self.variant_metric = variant_metric
        self.in_flight = in_flight if in_flight is not None else settings.campaign_in_flight
        self.chunk = chunk
        self.parallel = max(1, parallel)
        # This runner is `index` of `runners`: it sends the slices j of a campaign with j % runners ==
        # index; runner 0 also does every phase that is not sliced (resolve, exclude, winner, retry,
        # settle). A campaign is cut into `runners` slices when its sending begins (fewer when small).
        self.runners = max(1, runners)
        self.index = index % self.runners
        consumer = consumer or ("runner" if self.index == 0 else f"runner-{self.index}")
        self.store = CampaignStore(redis)
        self.outbound = Outbound(redis, settings)
        self.routing = WorkspaceRoutingCache(redis)
        self.servers = ServerStore(redis)
        self.segment_store = SegmentStore(redis)
        self.reader = GroupReader(
            redis,
            keyspace.EVENT_STREAM,
            keyspace.CAMPAIGN_EVENTS_GROUP,
            consumer,
            count=EVENT_BATCH,
            block_ms=0,
            reclaim_idle_ms=30_000,
            clock=clock,
        )
        self._group_ready = False
        # Runner 0 packs the settled messages of packed campaigns into the archive (archiver.py).
        self.archiver = CampaignArchiver(
            redis, settings, clock=clock, range_of=lambda launch_ms, cid: message_id_at(launch_ms, cid, 0)
        )
        self.idle_block = IdleBlock()  # idle: no active campaign and nothing done (see `run`)

    # --- the loop ----------------------------------------------------------------------------------
    async def step(self) -> int:
        done = await self.count_events(block_ms=self.idle_block.block_ms())
        active = await self.store.active()
        for workspace, campaign_id in active:
            try:
                done += await self.advance(workspace, campaign_id)
            except Exception:
                log.exception("campaign %s of %s: step failed; retried next step", campaign_id, workspace)
        if self.index == 0:
            done += await self.archiver.step()
        self.idle_block.idle = not done and not active
        return done

    async def run_until_idle(self) -> int:
        return await until_idle(self.step)

    async def run(self, stop: asyncio.Event, *, idle_wait: float = 0.05, idle_block: float = 0.25) -> None:
        """Steps `idle_wait` apart while a campaign is active. With none, a step waits on `m:events` up to
        `idle_block` (`IdleBlock`): any new entry, a launch's `campaign.launched` too, ends the wait of
        every runner at once, whichever of them the group hands it to."""
        await self.idle_block.run(
            self.step, stop, block=idle_block, idle_wait=idle_wait, log=log, on_error=self._reread
        )

    def _reread(self) -> None:
        self._group_ready = False
        self.reader.reread_own()

    # --- counters from message events ----------------------------------------------------------------
    async def count_events(self, *, block_ms: int | None = None) -> int:
        if not self._group_ready:
            await self.reader.ensure_group("0")
            self._group_ready = True
        entries = await self.reader.read_own()
        if not entries:
            # Idle: wait for the stream's next entry, whichever runner the group hands it to. A launch's
            # `campaign.launched` goes to one runner of the group, and the others must wake too: runner 0
            # resolves the audience, and a blocked group read left it asleep for up to `idle_block` when
            # the entry went to runner 1 (~300 ms of a 3,000-message campaign, docs/campaigns.md). The
            # mark is taken before the group read, so an entry landing in between ends the wait at once.
            mark = await self.reader.last_id() if block_ms else None
            entries = await self.reader.read_new()
            if not entries and mark is not None and block_ms:
                if await self.reader.wait_for_entry(block_ms, after=mark):
                    entries = await self.reader.read_new()
        if not entries:
            return 0
        tally = _Tally()
        for _, fields in entries:
            blob = fields.get(keyspace.EVENT_FIELD)
            # An entry none of whose events names a campaign (API sends, subscriber changes) is skipped
            # undecoded: campaign ids all start with `cmp_` (a stray match only costs the decode).
            if blob is None or _CAMPAIGN_ID_MARK not in blob:
                continue
            for raw in _raw_events.decode(blob):
                # Most events count for no campaign (every message's `message.accepted` among them):
                # only their type and campaign are read; the few that count are decoded whole.
                head = _head_decoder.decode(raw)
                if head.type in _COUNTED and head.message is not None and head.message.campaign_id:
                    tally.add(event_msgpack_decoder.decode(raw))
        async with self.redis.pipeline(transaction=True) as pipe:
            CampaignStore.count_events(pipe, tally.counts, tally.failures, tally.variants, tally.uniques)
            pipe.xack(keyspace.EVENT_STREAM, keyspace.CAMPAIGN_EVENTS_GROUP, *[i for i, _ in entries])
            await pipe.execute()
        # A short batch drained the stream: no reason to read again before the idle wait.
        return len(entries) if len(entries) >= EVENT_BATCH else 0

    # --- one campaign ----------------------------------------------------------------------------------
    async def advance(self, workspace: str, campaign_id: str) -> int:
        state = await self.store.get(workspace, campaign_id)
        if state is None or state.status in FINISHED or state.status == "draft":
            await self.store.deactivate(workspace, campaign_id)
            return 1
        if state.status == "paused":
            return await self._waiting(state, None)
        now_ms = int(self.clock() * 1000)
        send_at_ms = state.number("send_at_ms")
        if state.status == "scheduled":
            if now_ms < send_at_ms:
                return await self._waiting(state, "send_at")
            moved = await self.store.transition(workspace, campaign_id, ("scheduled",), "sending")
            return 1 if moved.done else 0
        phase = state.text("phase") or "resolve"
        if phase in SLICED:
            return await self._send_slices(state, phase, now_ms, send_at_ms)
        if self.index != 0:  # every phase but the sliced ones is runner 0's
            return 0
        if phase == "resolve":
            return await self._resolve(state)
        if phase == "exclude":
            return await self._exclude(state)
        if phase == "pack":
            return await self._pack(state)
        if phase == "settle":
            return await self._settle(state)
        if now_ms < send_at_ms:  # resumed before its time
            return await self._waiting(state, "send_at")
        if phase == "winner":
            return await self._pick_winner(state, now_ms)
        if not send_window.is_open(state.record.window, _at(now_ms)):
            return await self._waiting(state, "outside_window")
        return await self._send_chunk(state, phase, 0, now_ms)

    async def _send_slices(self, state: CampaignState, phase: str, now_ms: int, send_at_ms: int) -> int:
        """One chunk of each slice of this runner not yet done in this phase; runner 0 moves the phase on
        once every slice is."""
        slices = max(1, state.number("slices"))
        mine = [
            j for j in range(slices) if j % self.runners == self.index and state.text(f"done:{j}") != phase
        ]
        if mine:
            if now_ms < send_at_ms:  # resumed before its time
                return await self._waiting(state, "send_at")
            if not send_window.is_open(state.record.window, _at(now_ms)):
                return await self._waiting(state, "outside_window")
        done = 0
        for j in mine:
            done += await self._send_chunk(state, phase, j, now_ms)
        if self.index == 0 and all(
            state.text(f"done:{j}") == phase for j in range(slices)
        ):  # `state` as read at the start of the step: a slice finished in this step counts next step
            return await self._phase_done(state, phase, now_ms)
        return done

    async def _waiting(self, state: CampaignState, reason: str | None) -> int:
        if state.text("waiting") != reason:
            record = state.record
            if reason is None:
                await self.store.clear_fields(record.workspace, record.id, "waiting")
            else:
                await self.store.set_fields(record.workspace, record.id, {"waiting": reason})
        return 0

    # --- resolve the audience -------------------------------------------------------------------------
    async def _resolve(self, state: CampaignState) -> int:
        record = state.record
        sources = [("l", i) for i in record.audience.lists] + [("s", i) for i in record.audience.segments]
        index = state.number("src")
        if index >= len(sources):
            await self.store.set_fields(
                record.workspace, record.id, {"phase": "exclude", "src": 0, "cur": ""}
            )
            return 1
        kind, source_id = sources[index]
        cursor = state.text("cur")
        if kind == "l":
            key = keyspace.list_members(record.workspace, source_id, "subscribed")
            low = f"({cursor}" if cursor else "-"
            ids = [
                as_text(i) for i in await self.redis.zrangebylex(key, low, "+", start=0, num=RESOLVE_CHUNK)
            ]
            ended = len(ids) < RESOLVE_CHUNK
        else:
            try:
                ids, ended = await self._segment_page(record, source_id, cursor)
            except (StoreUnavailable, SegmentsUnavailable):
                return await self._waiting(state, "analytics_unavailable")
        checkpoint: dict[str, str | int] = {"src": index + 1, "cur": ""} if ended else {"cur": ids[-1]}
        await self.store.snapshot_add(record.workspace, record.id, ids, checkpoint)
        return 1

    async def _segment_page(
        self, record: CampaignRecord, segment_id: str, cursor: str | None
    ) -> tuple[list[str], bool]:
        segment = await self.segment_store.get(record.workspace, segment_id)
        if segment is None:  # deleted since launch: it adds nobody
            return [], True
        reader = self.segments()
        if reader is None:
            raise SegmentsUnavailable("no analytics reader: segment members cannot be resolved yet")
        page = await reader.segment_members(
            record.workspace,
            SegmentQuery(lists=tuple(segment.lists), filter=segment.filter),
            after=cursor,
            limit=RESOLVE_CHUNK,
        )
        ids = [m.id for m in page.data]
        return ids, not page.has_more or not ids

    async def _exclude(self, state: CampaignState) -> int:
        record = state.record
        sources = [(i, s) for i in record.audience.exclude_lists for s in MEMBER_STATUSES]
        index = state.number("src")
        if index >= len(sources):
            size = await self.store.audience_size(record.workspace, record.id)
            # The sending phases are cut into slices of the final snapshot, one cursor each, so several
            # runners send one campaign; a small audience is one slice (at least a chunk a slice).
            slices = max(1, min(self.runners, size // self.chunk))
            bounds = await self.store.slice_bounds(record.workspace, record.id, slices)
            fields: dict[str, str | int] = {"phase": "pack", "src": 0, "cur": "", "pg": 0, "n:audience": size}
            fields |= {"slices": len(bounds) + 1, "bounds": ",".join(bounds)}
            await self.store.set_fields(record.workspace, record.id, fields)
            return 1
        list_id, status = sources[index]
        cursor = state.text("cur")
        key = keyspace.list_members(record.workspace, list_id, status)
        low = f"({cursor}" if cursor else "-"
        ids = [as_text(i) for i in await self.redis.zrangebylex(key, low, "+", start=0, num=RESOLVE_CHUNK)]
        ended = len(ids) < RESOLVE_CHUNK
        checkpoint: dict[str, str | int] = {"src": index + 1, "cur": ""} if ended else {"cur": ids[-1]}
        await self.store.snapshot_remove(record.workspace, record.id, ids, checkpoint)
        return 1

    async def _pack(self, state: CampaignState) -> int:
        """The final snapshot into pages (`CampaignStore.pack_pages`), PACK_CHUNK ids a step; then the
        first sending phase. Slices and their bounds were cut from the zset before."""
        record = state.record
        cursor, page = state.text("cur") or "", state.number("pg")
        ids = await self.store.audience_chunk(record.workspace, record.id, after=cursor, count=PACK_CHUNK)
        if ids:
            pages = -(-len(ids) // AUDIENCE_PAGE)
            checkpoint: dict[str, str | int] = {"cur": ids[-1], "pg": page + pages}
            await self.store.pack_pages(
                record.workspace, record.id, page=page, ids=ids, checkpoint=checkpoint
            )
        if len(ids) < PACK_CHUNK:
            first = "test" if record.ab_test is not None else "send"
            await self.store.finish_pack(record.workspace, record.id, {"phase": first, "cur": ""})
        return 1

    # --- send ------------------------------------------------------------------------------------------
    async def _send_chunk(self, state: CampaignState, phase: str, slice_index: int, now_ms: int) -> int:
        record = state.record
        retry = phase == "retry"
        grant, why = await self.store.grant(
            record.workspace,
            record.id,
            slice_index=slice_index,
            slices=max(1, state.number("slices")),
            wanted=self.chunk,
            in_flight=self.in_flight,
            per_second=record.rate.per_second,
            now_ms=now_ms,
        )
        if grant <= 0:
            if why == "window":
                return await self._waiting(state, await self._why_full(record.workspace))
            return await self._waiting(state, "rate") if why == "rate" else 0
        # Slice j is the snapshot's ids in (bounds[j-1], bounds[j]] (the first from the start, the last
        # to the end); its cursor starts at its lower bound.
        cursor_field = _cursor_field(slice_index)
        bounds = [""] + (state.text("bounds") or "").split(",") + [""]
        cursor = "" if retry else (state.text(cursor_field) or bounds[slice_index])
        upto = None if retry else bounds[slice_index + 1] or None
        by_position = not retry and bool(state.number("packed"))  # else a zset: the retry set, or a
        if by_position:  # snapshot of before round 10, whose recipients' ids are hashed from them
            found = await self.store.packed_chunk(
                record.workspace, record.id, after=cursor, count=grant, upto=upto
            )
            ids, positions = [sub_id for sub_id, _ in found], [at for _, at in found]
        else:
            ids = await self.store.audience_chunk(
                record.workspace, record.id, after=cursor, count=grant, retry=retry, upto=upto
            )
        if not ids:
            if retry:
                return await self._phase_done(state, phase, now_ms)
            await self.store.commit_chunk(
                record.workspace,
                record.id,
                checkpoint={f"done:{slice_index}": phase},
                counts={},
                slice_index=slice_index,
                refund=grant if record.rate.per_second else 0,
            )
            return 1
        await self._waiting(state, None)
        raws = await self.redis.hmget(keyspace.subscribers(record.workspace), ids)
        launch_ms = state.number("launch_ms")
        failed_at = await self.store.retried_failures(record.workspace, record.id, ids) if retry else []
        items: list[OutboundItem] = []
        item_subs: list[tuple[str, str]] = []
        skipped = 0
        for index, (sub_id, raw) in enumerate(zip(ids, raws, strict=True)):
            blob = as_bytes_or_none(raw)
            subscriber = None if blob is None else subscriber_decoder.decode(blob)
            lists = None if subscriber is None else _eligible(subscriber, record.eligible_lists)
            if subscriber is None or lists is None:
                skipped += 1
                continue
            variant = self._variant_of(record, sub_id, phase, state)
            if variant is _NOT_NOW:
                continue
            if by_position:
                made = message_id_at(launch_ms, record.id, positions[index])
            else:
                made = derived_id(
                    "msg", launch_ms, record.id, sub_id, *([f"retry{failed_at[index]}"] if retry else [])
                )
            items.append(
                OutboundItem(
                    request=_request(record, subscriber, lists, variant),
                    message_id=made,
                    campaign_id=record.id,
                    ranged=by_position,
                )
            )
            item_subs.append((sub_id, subscriber.email))
        outcomes = await self._send(record.workspace, items, now_ms)
        if outcomes and all(_code(o) == "template_not_found" for o in outcomes):
            # The pinned template (version) is gone: every recipient would fail the same way. The
            # chunk is not committed; the campaign fails as a whole (docs/campaigns.md, "Failed").
            return await self._fail(state, TEMPLATE_DELETED)
        enqueued = rejected = 0
        failures: list[tuple[str, FailureRecord]] = []
        for (sub_id, email), outcome in zip(item_subs, outcomes, strict=True):
            if isinstance(outcome, Accepted):
                enqueued += 1
            elif isinstance(outcome, Rejected):
                rejected += 1
                failures.append((sub_id, _failure(email, outcome, now_ms)))
        processed = enqueued + rejected + skipped
        checkpoint: dict[str, str | int] = {} if retry else {cursor_field: ids[-1]}
        if by_position and phase == "send":  # these positions are done for good: the archiver may pack them
            checkpoint[f"sp:{slice_index}"] = slice_span(state, slice_index, positions)
        await self.store.commit_chunk(
            record.workspace,
            record.id,
            checkpoint=checkpoint or {"phase": phase},
            counts={"n:enq": enqueued, "n:rej": rejected, "n:skip": skipped, "n:done": processed},
            failures=failures,
            retried=ids if retry else (),
            slice_index=slice_index,
            refund=grant - len(items) if record.rate.per_second else 0,
            archiving=by_position,
        )
        return 1

    async def _send(self, workspace: str, items: list[OutboundItem], now_ms: int) -> list[Any]:
        """The chunk through `Outbound` in `self.parallel` parts at once: one part's render and routing
        (CPU) runs while another's enqueue script is in Redis. One commit follows for the whole chunk."""
        if not items:
            return []
        size = -(-len(items) // self.parallel)
        parts = [items[i : i + size] for i in range(0, len(items), size)]
        answers = await asyncio.gather(
            *(self.outbound.send(workspace, part, now=_at(now_ms)) for part in parts)
        )
        return [outcome for answer in answers for outcome in answer]

    async def _phase_done(self, state: CampaignState, phase: str, now_ms: int) -> int:
        record = state.record
        if phase == "test":
            fields: dict[str, str | int] = {"phase": "winner", "cur": "", "test_done_ms": now_ms}
        elif phase == "send":
            fields = {"phase": "retry", "cur": ""}
        else:
            fields = {"phase": "settle", "cur": ""}
        fields |= {_cursor_field(j): "" for j in range(1, state.number("slices"))}
        await self.store.set_fields(record.workspace, record.id, fields)
        return 1

    def _variant_of(self, record: CampaignRecord, sub_id: str, phase: str, state: CampaignState) -> Any:
        """The variant index for this recipient in this phase, None without an A/B test, or _NOT_NOW
        when the recipient belongs to the other phase (the test fraction, or the rest)."""
        test = record.ab_test
        if test is None:
            return None
        share = _share(record.id, sub_id)
        in_test = share < test.test_fraction
        if phase == "test":
            return int(share / test.test_fraction * len(test.variants)) if in_test else _NOT_NOW
        if phase == "send" and in_test:
            return _NOT_NOW
        if in_test:  # a retried test recipient keeps their variant
            return int(share / test.test_fraction * len(test.variants))
        return int(state.text("winner") or 0)

    async def _pick_winner(self, state: CampaignState, now_ms: int) -> int:
        record = state.record
        test = record.ab_test
        assert test is not None
        if now_ms < state.number("test_done_ms") + test.wait_minutes * 60_000:
            return await self._waiting(state, "ab_test_wait")
        scores: dict[str, float] = {}
        if self.variant_metric is not None:  # the analytics store's figures (the campaign report)
            try:
                scores = await self.variant_metric(record.workspace, record.id, test.metric)
            except (StoreUnavailable, SegmentsUnavailable):
                log.warning(
                    "campaign %s: the analytics store is unavailable; A/B metric from Redis", record.id
                )
        if not scores:  # no report reader, or it has no events of the variants yet: the runner's own counts
            scores = await variant_scores(
                self.redis, record.workspace, record.id, test.metric, len(test.variants)
            )
        winner = pick_winner(scores, len(test.variants))
        await self.store.set_fields(
            record.workspace, record.id, {"phase": "send", "cur": "", "winner": winner}
        )
        return 1

    async def _settle(self, state: CampaignState) -> int:
        record = state.record
        if await self.redis.zcard(keyspace.campaign_retry(record.workspace, record.id)):
            await self.store.set_fields(record.workspace, record.id, {"phase": "retry"})
            return 1
        if queued(state) > 0:
            return await self._waiting(state, "queued_messages")
        if state.number("n:sent") == 0 and await self.store.failed_count(record.workspace, record.id):
            return await self._fail(state, ALL_RECIPIENTS_FAILED)
        return await self._finish(state, "sent")

    async def _fail(self, state: CampaignState, reason: str) -> int:
        """`sending` → `failed` with its reason (`progress.failure`): see `_finish`. The failed recipients
        stay listed; `retry-failed` takes the campaign back to `sending` if there are any."""
        return await self._finish(state, "failed", reason)

    async def _finish(self, state: CampaignState, status: str, reason: str | None = None) -> int:
        """`sending` → `sent` or `failed` (with `reason`), `campaign.completed` with that status, out of the
        runner's set, the snapshot dropped: nothing more is sent."""
        record = state.record
        now = _at(int(self.clock() * 1000))
        done_ms = int(now.timestamp() * 1000)
        event = Event(
            id=new_id("evt"),
            type="campaign.completed",
            created_at=now,
            workspace=record.workspace,
            data={
                "campaign": {"id": record.id, "name": record.name},
                "status": status,
                **({"reason": reason} if reason is not None else {}),
                "audience": state.number("n:audience"),
                "sent": state.number("n:sent"),
                "failed": state.number("n:rej") + state.number("n:failed"),
            },
        )
        moved = await self.store.transition(
            record.workspace,
            record.id,
            ("sending",),
            status,
            fields={"done_ms": done_ms, **({"failure": reason} if reason is not None else {})},
            events=[event],
            active="rem",
            drop=("waiting",),
        )
        if moved.done and reason is not None:
            log.warning("campaign %s of %s failed: %s", record.id, record.workspace, reason)
        return 1 if moved.done else 0

    # --- pacing (the rate and the in-flight window: `CampaignStore.grant`) ---------------------------
    async def _why_full(self, workspace: str) -> str:
        """Why the in-flight window stays full: every server down, every server at its quota, or only
        that the servers are busy sending what is queued."""
        snapshot = await self.routing.get(workspace)
        if snapshot.servers and all(s.status == "down" for s in snapshot.servers):
            return "servers_down"
        now = self.clock()
        at_quota = 0
        for view in snapshot.servers:
            record = await self.servers.get(workspace, view.id)
            if record is None:
                continue
            quota = WindowQuota(record.quotas.per_minute, record.quotas.per_hour, record.quotas.per_day)
            keys = quota.window_keys(now)
            if not keys:
                continue
            counts = await self.redis.mget([keyspace.quota_window(view.id, k) for k in keys])
            quota.load({k: int(c) for k, c in zip(keys, counts, strict=True) if c})
            at_quota += quota.available(now) == 0
        if snapshot.servers and at_quota == len(snapshot.servers):
            return "servers_at_quota"
        return "in_flight_window"


_NOT_NOW = object()
SLICED = ("test", "send")  # the phases several runners share, each slice with its own cursor


def _cursor_field(slice_index: int) -> str:
    return "cur" if slice_index == 0 else f"cur:{slice_index}"


# Why a campaign is `failed` (its `failure` field, `progress.failure`).
TEMPLATE_DELETED = "template_deleted"
ALL_RECIPIENTS_FAILED = "all_recipients_failed"
VARIANT_METRICS = {
    "message.delivered": "delivered",
    "message.opened": "opened",
    "message.clicked": "clicked",
}
# The event types `_Tally.add` counts something for.
_COUNTED = frozenset(EVENT_COUNTERS) | frozenset(VARIANT_METRICS) | {"message.failed"}


class _MessageHead(msgspec.Struct):
    campaign_id: str | None = None


class _EventHead(msgspec.Struct):
    """What decides whether an event counts for a campaign (the rest of it is skipped undecoded)."""

    type: str
    message: _MessageHead | None = None


_raw_events = msgspec.msgpack.Decoder(list[msgspec.Raw])
_CAMPAIGN_ID_MARK = b"cmp_"
_head_decoder = msgspec.msgpack.Decoder(_EventHead)


class _Tally:
    """What one batch of events adds to the campaigns: counters, failed recipients, A/B figures."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], dict[str, int]] = {}
        self.failures: dict[tuple[str, str], list[tuple[str, FailureRecord]]] = {}
        self.variants: dict[tuple[str, str], dict[str, int]] = {}
        self.uniques: dict[tuple[str, str, str, str], list[str]] = {}

    def add(self, event: Event) -> None:
        message = event.message
        if message is None or not message.campaign_id:
            return
        key = (event.workspace, message.campaign_id)
        name = EVENT_COUNTERS.get(event.type)
        if name is not None:
            by_name = self.counts.setdefault(key, {})
            by_name[name] = by_name.get(name, 0) + 1
        variant = message.metadata.get(VARIANT_KEY)
        metric = VARIANT_METRICS.get(event.type)
        if variant is not None and metric is not None:
            by_metric = self.variants.setdefault(key, {})
            by_metric[f"{variant}:{metric}"] = by_metric.get(f"{variant}:{metric}", 0) + 1
            if metric != "delivered" and not event.data.get("machine_open"):
                self.uniques.setdefault((*key, variant, f"{metric}_unique"), []).append(message.id)
        subscriber = message.metadata.get(SUBSCRIBER_KEY)
        if event.type == "message.failed" and subscriber:
            reason = str(
                event.data.get("error") or event.data.get("reason") or "the message could not be sent"
            )
            failure = FailureRecord(
                email=message.to,
                code="delivery_failed",
                reason=reason[:500],
                message_id=message.id,
                at_ms=int(event.created_at.timestamp() * 1000),
            )
            self.failures.setdefault(key, []).append((subscriber, failure))


def pick_winner(scores: dict[str, float], variants: int) -> int:
    """The variant with the highest score ("0", "1", … as the report groups them); ties and variants
    without a score go to the lowest index."""
    best, best_score = 0, float("-inf")
    for index in range(variants):
        score = float(scores.get(str(index), float("-inf")))
        if score > best_score:
            best, best_score = index, score
    return best


def message_id_at(launch_ms: int, campaign_id: str, position: int) -> str:
    """A campaign message's id from its recipient's position in the packed snapshot (which never changes,
    so a replayed chunk derives the same ids): a ULID of the launch time, 40 bits of the campaign id's
    hash (campaigns launched in the same millisecond differ) and the position (40 bits). A campaign's
    ids rise in the order its runners go, so each lands next to the one before in the workspace's message
    index, where ids hashed from the subscriber land at random (docs/campaigns.md, "Exactly once")."""
    head = launch_ms.to_bytes(6, "big") + _campaign_digest(campaign_id)
    return "msg_" + ulid_text(head + position.to_bytes(5, "big"))


@functools.lru_cache(maxsize=64)
def _campaign_digest(campaign_id: str) -> bytes:
    return hashlib.sha256(campaign_id.encode()).digest()[:5]


def _share(campaign_id: str, sub_id: str) -> float:
    """A stable number in [0, 1) per (campaign, subscriber): who is in the A/B test and which variant."""
    digest = hashlib.sha256(f"{campaign_id}\x1f{sub_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _eligible(subscriber: SubscriberRecord, eligible_lists: Sequence[str]) -> list[str] | None:
    """The campaign lists the subscriber is still subscribed to (an unsubscribe mid-campaign removes
    them), [] when the campaign checks no list, None when they may not get the campaign."""
    if subscriber.status != "active":
        return None
    if not eligible_lists:
        return []
    lists = [
        i for i in eligible_lists if (m := subscriber.lists.get(i)) is not None and m.status == "subscribed"
    ]
    return lists or None


def _request(
    record: CampaignRecord, subscriber: SubscriberRecord, lists: list[str], variant: int | None
) -> SendRequest:
    chosen: Variant | None = (
        record.ab_test.variants[variant] if record.ab_test and variant is not None else None
    )
    template = chosen.template if chosen and chosen.template else record.template
    html = chosen.html if chosen and chosen.html is not None else record.html
    text = chosen.text if chosen and chosen.text is not None else record.text
    if chosen and (chosen.html is not None or chosen.text is not None):
        template = None
    if chosen and chosen.template:
        html = text = None
    subject = chosen.subject if chosen and chosen.subject else record.subject
    metadata = {**record.metadata, SUBSCRIBER_KEY: subscriber.id}
    if lists:  # the one-click link unsubscribes from each (at most 16 ids: a metadata value is <= 500)
        metadata[LIST_ID_KEY] = ",".join(lists[:MAX_UNSUBSCRIBE_LISTS])
    if variant is not None:
        metadata[VARIANT_KEY] = str(variant)
    variables: dict[str, Any] = {
        **subscriber.attributes,
        "email": subscriber.email,
        "name": subscriber.name,
        "subscriber": {
            "id": subscriber.id,
            "email": subscriber.email,
            "name": subscriber.name,
            "attributes": subscriber.attributes,
        },
        "campaign": {"id": record.id, "name": record.name},
    }
    return SendRequest(
        from_=record.from_,
        to=subscriber.email,
        reply_to=record.reply_to,
        subject=subject or "",
        html=html if template is None else None,
        text=text if template is None else None,
        template=None
        if template is None
        # An in-process dict, taken as is by actors.outbound.templating.template_variables (no JSON trip).
        else TemplateRef(id=template.id, version=template.version, variables=variables),  # type: ignore[arg-type]
        tags=record.tags,
        metadata=metadata,
        routing=RoutingIn(purpose=record.routing.purpose, server=record.routing.server),
        tracking=TrackingIn(opens=record.tracking.opens, clicks=record.tracking.clicks),
        unsubscribe=True,
    )


_ITEM_POINTER = re.compile(r"^#/items/\d+")


def _code(outcome: Any) -> str | None:
    """The problem code of a rejected item (its first field error's, as the API would point it)."""
    if not isinstance(outcome, Rejected):
        return None
    error = outcome.error
    return error.errors[0].code if error.errors else error.code


def _failure(email: str, outcome: Rejected, now_ms: int) -> FailureRecord:
    error = outcome.error
    detail = error.errors[0].detail if error.errors else error.detail
    pointer = error.errors[0].pointer if error.errors else ""
    reason = f"{detail} ({_ITEM_POINTER.sub('#', pointer)})" if pointer else detail
    return FailureRecord(email=email, code=error.code, reason=reason[:500], message_id=None, at_ms=now_ms)


def _at(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, UTC)
