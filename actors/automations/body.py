"""AutomationRunner: starts runs from triggers and moves every run through its steps (docs/automations.md).

One `step()` is one pass of each duty:
- event triggers: a batch of `m:events` through the `automations` consumer group; each event that matches
  a live automation's `event` trigger (and its filter, evaluated for that subscriber) starts a run whose
  id is derived from the event, so an entry read twice (a crash before the ack) starts nothing twice;
- schedule triggers: each automation whose next cron time has come fans out over its audience (lists and
  segments) with run ids derived from (automation, subscriber, fire time), then moves to the next time;
- segment_entry triggers: every `segment_period` seconds, the members of each such automation's segment
  not seen in it before start a run;
- runs: for each automation with due runs, claim a batch (store/automation_runs.py), do ONE step of each
  run, and commit the batch in one script; the sends of a batch go through `Outbound` in one call. The
  runs of a paused automation are not claimed: they hold where they are until it is activated again.

State is all in Redis, so a restarted runner resumes every run: its first pass makes the runs its dead
predecessor had claimed due again (without waiting for their leases to end), and their step is done
again. Steps are safe to repeat: the send step's message id
is `derived_id("msg", run created_ms, run id, step id)` (the enqueue of an id already enqueued is a no-op,
`replayed`), update sets the same attributes, branch re-evaluates, wait recomputes its wake-up (from the
moment it is redone); a webhook step may POST twice (its `webhook-id` is the same both times, so receivers
dedupe), which is what signed webhooks promise everywhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import redis.asyncio as aioredis

from actors.outbound.service import Accepted, Outbound, OutboundItem
from actors.stepping import IdleBlock, until_idle
from actors.webhooks.sender import WebhookSender
from analytics.store import AudienceReader
from schemas.audience import SubscriberRecord
from schemas.automations import (
    LIVE,
    STATUS_NAMES,
    AutomationRecord,
    BranchStep,
    Definition,
    EventTrigger,
    ExitStep,
    HistoryEntry,
    RunRecord,
    ScheduleTrigger,
    SegmentEntryTrigger,
    SendStep,
    Step,
    UpdateStep,
    WaitStep,
    WebhookStep,
    record_decoder,
    successors,
)
from schemas.domain_names import normalise_email
from schemas.events import Event, events_msgpack_decoder
from schemas.ids import derived_id, new_id, new_ids
from schemas.schedules import next_due
from schemas.segments import SegmentQuery
from schemas.send import RoutingIn, SendRequest, TemplateRef, TrackingIn
from schemas.settings import Settings
from schemas.subscriber_chunks import chunk_decoder
from security.ssrf import ForbiddenUrl, check_webhook_url
from security.webhook_signing import derived_webhook_secret, sign_delivery
from store import keyspace
from store.automation_runs import Claimed, ClaimedBatch, NewRun, RunStore, Transition
from store.automations import AutomationStore
from store.event_entries import entry_events
from store.group_reader import GroupReader, ack_and_read_new
from store.lists import ListStore
from store.replies import as_text
from store.segments import SegmentStore
from store.subscribers import SubscriberStore

log = logging.getLogger("mailers.automations")
WEBHOOK_ATTEMPTS = 3
WEBHOOK_RETRY_SECONDS = 30
RETRY_SECONDS = 5  # a step that could not be done now (analytics store unavailable) is tried again


class Plan(msgspec.Struct, kw_only=True):
    """What one step of one run came to."""

    record: RunRecord
    due_ms: int | None
    events: list[Event] = []


def automation_event(kind: str, workspace: str, now_ms: int, data: dict[str, Any]) -> Event:
    return Event(id=_event_ids(), type=kind, created_at=_at(now_ms), workspace=workspace, data=data)


class _EventIds:
    """Event ids minted 64 at a time (`new_ids`, ~0.5 µs each instead of ~3), never kept past the
    millisecond they were minted in: the id's time stays the event's."""

    def __init__(self) -> None:
        self.ms, self.ids = -1, list[str]()

    def __call__(self) -> str:
        ms = time.time_ns() // 1_000_000
        if ms != self.ms or not self.ids:
            self.ms, self.ids = ms, new_ids("evt", 64)
        return self.ids.pop()


_event_ids = _EventIds()
_last_at: tuple[int, datetime] = (-1, datetime.fromtimestamp(0, UTC))


def _at(now_ms: int) -> datetime:
    """`now_ms` as a datetime (a batch's events share their time: made once)."""
    global _last_at
    if _last_at[0] != now_ms:
        _last_at = (now_ms, datetime.fromtimestamp(now_ms / 1000, UTC))
    return _last_at[1]


def new_run(
    workspace: str,
    head: AutomationRecord,
    definition: Definition,
    subscriber: SubscriberRecord,
    *,
    run_id: str,
    now_ms: int,
    data: dict[str, Any],
    cause: str,
) -> NewRun:
    """A run at its first step, and its `automation.triggered` event."""
    record = RunRecord(
        subscriber=subscriber.id, version=definition.version, status="r", at=0, created_ms=now_ms, data=data
    )
    event = automation_event(
        "automation.triggered",
        workspace,
        now_ms,
        {
            "automation_id": head.id,
            "run_id": run_id,
            "version": definition.version,
            "subscriber": subscriber.id,
            "email": subscriber.email,
            "trigger": cause,
        },
    )
    return NewRun(run_id=run_id, record=record, due_ms=now_ms, event=event)


def run_id_for(head: AutomationRecord, definition: Definition, subscriber_id: str, *cause: str) -> str:
    """`never`: one id per (automation, subscriber), so a second entry finds it taken. Otherwise derived
    from what caused it (an event id, a fire time, an idempotency key), or new when nothing names it."""
    created_ms = int(head.created_at.timestamp() * 1000)
    if definition.reentry == "never":
        return derived_id("run", created_ms, head.id, subscriber_id)
    if cause:
        return derived_id("run", created_ms, head.id, subscriber_id, *cause)
    return new_id("run")


class AutomationRunner:
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        outbound: Outbound | None = None,
        reader: Callable[[], AudienceReader | None] = lambda: None,
        webhooks: WebhookSender | None = None,
        consumer: str = "runner-0",
        batch: int = 500,
        lease_seconds: float = 60.0,
        segment_period: float = 60.0,
        live_ttl: float = 1.0,
        release_on_start: bool = True,
        pipeline: int = 4,
    ) -> None:
        self.redis, self.settings, self.clock = redis, settings, clock
        self.outbound = outbound if outbound is not None else Outbound(redis, settings)
        self.reader = reader
        self.webhooks = webhooks or WebhookSender(
            timeout=10.0,
            allow_private=settings.allow_private_webhooks,
            allow_http=settings.allow_http_webhooks,
        )
        self.automations = AutomationStore(redis)
        self.runs = RunStore(redis)
        self.subscribers = SubscriberStore(redis)
        self.lists = ListStore(redis)
        self.segments = SegmentStore(redis)
        self.events = GroupReader(
            redis,
            keyspace.EVENT_STREAM,
            keyspace.AUTOMATION_GROUP,
            consumer,
            count=200,
            block_ms=0,
            reclaim_idle_ms=30_000,
            clock=clock,
        )
        self.batch, self.lease_ms = batch, int(lease_seconds * 1000)
        self.segment_period, self.live_ttl = segment_period, live_ttl
        self._group_ready = False
        self._released = not release_on_start
        self._versions: dict[tuple[str, str, int], Definition] = {}
        self._live: list[tuple[AutomationRecord, Definition]] = []
        self._live_at = float("-inf")
        self._segments_at = float("-inf")
        self._reclaimed_at = float("-inf")
        self.idle_block = IdleBlock()  # see `run`
        # When each automation with runs is next to be claimed (ms; None: at the next pass), and when the
        # next sweep over every automation with due runs is (see `drive`).
        self._due: dict[tuple[str, str], int | None] = {}
        self._sweep_at: float = float("-inf")
        self.pipeline = pipeline
        self._mark_kinds: frozenset[str] = frozenset()
        self._acks: list[bytes] = []
        self._claim_delay_ms = 0  # set by `run`: see `due_now`
        self._quiet = False  # the last pass read entries and decoded none of them (see `run`)
        self._schedules_at: float = float("-inf")
        self._mark_bytes: tuple[bytes, ...] = ()

    # --- the loop ---------------------------------------------------------------------------------
    async def step(self) -> int:
        if not self._released:
            await self.release_leases()
            self._released = True
        done = await self.consume_events()
        done += await self.fire_schedules()
        done += await self.check_segments()
        done += await self.drive()
        self.idle_block.idle = done == 0
        return done

    async def run_until_idle(self) -> int:
        return await until_idle(self.step)

    async def run(
        self,
        stop: asyncio.Event,
        *,
        idle_wait: float = 1.0,
        min_pass: float = 0.005,
        claim_delay: float = 0.02,
        quiet_wait: float = 0.025,
    ) -> None:
        """Until `stop`: passes `min_pass` apart at least (a trickle of events makes batches, not a pass an
        event), `quiet_wait` after a pass that only read entries nothing can trigger (heavy sending's message
        events: the next read takes that while's in one round trip). After a pass with nothing to do, the
        read waits blocked on the stream (`IdleBlock`) for the first event (an api trigger appends its
        `automation.triggered`), up to `idle_wait` (at most a second: well within any client's socket
        timeout) or until a run, a schedule or the sweep is due (`_wake_in_ms`)."""
        self._claim_delay_ms = int(claim_delay * 1000)
        try:
            await self.idle_block.run(
                self.step,
                stop,
                block=min(idle_wait - min_pass, 1.0),
                idle_wait=lambda: max(quiet_wait, min_pass) if self._quiet else min_pass,
                log=log,
                on_error=self._reread,
            )
        finally:
            self._claim_delay_ms = 0
            if self._acks:  # what the last pass handled
                acks, self._acks = self._acks, []
                await self.redis.xack(keyspace.EVENT_STREAM, keyspace.AUTOMATION_GROUP, *acks)
        await self.webhooks.close()

    async def release_leases(self) -> int:
        """A runner starting takes over at once the runs its dead predecessor had claimed, instead of
        waiting for their leases to end (there is one runner: the actor Ray restarts, or the one a
        restarted `mailers serve` starts)."""
        released = 0
        for workspace, automation_id in await self.runs.active():
            released += await self.runs.release_leases(
                workspace, automation_id, now_ms=self.now_ms(), lease_ms=self.lease_ms
            )
        if released:
            log.info("took over %d runs a previous runner had claimed", released)
        return released

    def _reread(self) -> None:
        self._group_ready = False
        self.events.reread_own()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- definitions --------------------------------------------------------------------------------
    async def definition(self, workspace: str, automation_id: str, version: int) -> Definition | None:
        key = (workspace, automation_id, version)
        found = self._versions.get(key)
        if found is None:
            found = await self.automations.version(workspace, automation_id, version)
            if found is not None:
                if len(self._versions) > 10_000:
                    self._versions.clear()
                self._versions[key] = found
        return found

    async def live(self) -> list[tuple[AutomationRecord, Definition]]:
        """Active automations with their newest definitions, re-read at most every `live_ttl` seconds."""
        if self.clock() - self._live_at < self.live_ttl:
            return self._live
        found = []
        for workspace, automation_id in await self.automations.live():
            head = await self.automations.get(workspace, automation_id)
            if head is None or head.status != "active":
                continue
            definition = await self.definition(workspace, automation_id, head.version)
            if definition is not None:
                found.append((head, definition))
        self._live, self._live_at = found, self.clock()
        return found

    def forget_live(self) -> None:
        self._live_at = float("-inf")

    # --- triggers ---------------------------------------------------------------------------------
    async def consume_events(self) -> int:
        if not self._group_ready:
            await self.events.ensure_group("$")
            self._group_ready = True
        entries = await self.events.read_own()
        if not entries and self.clock() - self._reclaimed_at > 30.0:
            self._reclaimed_at = self.clock()
            _, entries = await self.events.reclaim()  # what a dead runner had read and not acked
        if not entries:
            # Blocks only when idle under `run`; what the last pass handled is acked in the same round trip.
            block, acks, self._acks = self.idle_block.block_ms(self._wake_in_ms), self._acks, []
            entries = await ack_and_read_new(self.events, acks, block_ms=block)
        self._quiet = bool(entries)  # until an entry is decoded for the triggers
        if not entries:
            return 0
        live = [(h, d) for h, d in await self.live() if isinstance(d.trigger, EventTrigger)]
        # Only entries that may hold an event some live trigger wants are decoded: each trigger's type is
        # looked for in the entry's bytes as msgpack writes it (the key `type`, then the name), so a
        # message event of a bulk send that no automation listens for costs a few substring searches.
        # A chunk of new subscribers (`store/event_entries.py`) is expanded only when one of its two event
        # types triggers a live automation of its workspace.
        triggers = {(h.workspace, d.trigger.event) for h, d in live if isinstance(d.trigger, EventTrigger)}
        marks = self._marks(triggers)
        events: list[Event] = []
        for _, fields in entries:
            raw = fields.get(keyspace.EVENT_FIELD)
            if raw is None:
                if triggers and _may_trigger(fields, triggers):
                    events += entry_events(fields)
                    self._quiet = False
                continue
            if marks and any(mark in raw for mark in marks):
                self._quiet = False
                decoded = events_msgpack_decoder.decode(raw)
                events += decoded
                if _TRIGGERED_MARK in raw:
                    for event in decoded:
                        if event.type == "automation.triggered":
                            self._hint(event.workspace, event.data.get("automation_id"))
            elif _TRIGGERED_MARK in raw:
                self._hints(raw)
        if events:
            await self.on_events(events, live)
        # Acked with the next read (a crash before it: read again, and run ids derived from the events
        # start nothing twice).
        self._acks += [entry_id for entry_id, _ in entries]
        # A short batch drained the stream: no reason to read again before the idle wait.
        return len(entries) if len(entries) >= self.events.count else 0

    def _wake_in_ms(self) -> float:
        """Until the runner has something to do (a claim, the sweep, a look at the schedules): an idle read
        blocks that long at most (the segment check, once a minute, may come up to a block late)."""
        due = min(self._sweep_at, self._schedules_at, *(at for at in self._due.values() if at is not None))
        return due - self.now_ms()

    def _marks(self, triggers: set[tuple[str, str]]) -> tuple[bytes, ...]:
        kinds = frozenset(kind for _, kind in triggers)
        if kinds != self._mark_kinds:
            self._mark_kinds = kinds
            self._mark_bytes = tuple(_type_mark(kind) for kind in sorted(kinds))
        return self._mark_bytes

    def _hints(self, raw: bytes) -> None:
        """The automations whose runs an entry's `automation.triggered` events say were started (by an api
        trigger, or by another runner): claimed in the next pass. Only the type, workspace and automation
        are decoded; an entry that fails to decode gives no hint (the sweep finds its runs)."""
        try:
            hints = _hints_decoder.decode(raw)
        except msgspec.DecodeError:
            return
        for hint in hints:
            if hint.type == "automation.triggered":
                self._hint(hint.workspace, hint.data.automation_id)

    def _hint(self, workspace: str, automation_id: object) -> None:
        if isinstance(automation_id, str) and automation_id:
            self.due_now(workspace, automation_id)

    async def on_events(self, events: list[Event], live: list[tuple[AutomationRecord, Definition]]) -> None:
        """Runs for the events that match a live event trigger: subscribers looked up in bulk, one start
        script per automation for the whole batch."""
        by_type: dict[tuple[str, str], list[tuple[AutomationRecord, Definition]]] = {}
        for head, definition in live:
            assert isinstance(definition.trigger, EventTrigger)
            by_type.setdefault((head.workspace, definition.trigger.event), []).append((head, definition))
        matched = [
            (event, pairs)
            for event in events
            if not event.type.startswith("automation.")
            and (pairs := by_type.get((event.workspace, event.type)))
        ]
        if not matched:
            return
        subscribers = await self._event_subscribers([event for event, _ in matched])
        now_ms = self.now_ms()
        starts: dict[tuple[str, str], tuple[Definition, list[NewRun]]] = {}
        for event, pairs in matched:
            subscriber = subscribers.get(event.id)
            if subscriber is None or subscriber.status != "active":
                continue
            for head, definition in pairs:
                assert isinstance(definition.trigger, EventTrigger)
                if definition.trigger.filter is not None and not await self.matches(
                    event.workspace, definition.trigger.filter, subscriber.id
                ):
                    continue
                run_id = run_id_for(head, definition, subscriber.id, event.id)
                start = new_run(
                    event.workspace,
                    head,
                    definition,
                    subscriber,
                    run_id=run_id,
                    now_ms=now_ms,
                    data=_event_data(event),
                    cause=event.type,
                )
                starts.setdefault((event.workspace, head.id), (definition, []))[1].append(start)
        for (workspace, automation_id), (definition, runs) in starts.items():
            await self.runs.start(
                workspace, automation_id, runs, after_exit=definition.reentry == "after_exit"
            )
            self.due_now(workspace, automation_id)

    async def _event_subscribers(self, events: list[Event]) -> dict[str, SubscriberRecord]:
        """The subscriber each event is about (by id, or by address), by event id: two HMGETs a workspace."""
        wanted: dict[str, list[tuple[str, str | None, str | None]]] = {}
        for event in events:
            data, subscriber_id, email = event.data, None, None
            if isinstance(data.get("subscriber"), str):
                subscriber_id = data["subscriber"]
            elif isinstance(data.get("subscriber"), dict):
                subscriber_id = data["subscriber"].get("id")
            if event.message is not None:
                email = event.message.to
            elif isinstance(data.get("email"), str):
                email = data["email"]
            if subscriber_id is None and email is not None:
                try:
                    email = normalise_email(email)
                except ValueError:
                    continue
            wanted.setdefault(event.workspace, []).append((event.id, subscriber_id, email))
        found: dict[str, SubscriberRecord] = {}
        for workspace, items in wanted.items():
            emails = sorted({e for _, s, e in items if s is None and e is not None})
            ids = await self.redis.hmget(keyspace.subscriber_emails(workspace), emails) if emails else []
            by_email = {e: as_text(i) for e, i in zip(emails, ids, strict=True) if i is not None}
            resolved = [(event_id, s or by_email.get(e or "")) for event_id, s, e in items]
            records = {
                r.id: r for r in await self.subscribers.many(workspace, sorted({s for _, s in resolved if s}))
            }
            for event_id, subscriber_id in resolved:
                if subscriber_id and subscriber_id in records:
                    found[event_id] = records[subscriber_id]
        return found

    async def matches(self, workspace: str, condition: Any, subscriber_id: str) -> bool:
        """The CONDITION for this one subscriber now, in the analytics store. Raises when none runs."""
        reader = self.reader()
        if reader is None:
            raise LookupError("no analytics store to evaluate a condition in")
        now = datetime.fromtimestamp(self.clock(), UTC)
        query = SegmentQuery(filter=condition, subscriber=subscriber_id)
        return await reader.segment_count(workspace, query, now=now) > 0

    async def fire_schedules(self) -> int:
        """Fires the schedules that are due. When none is, the schedule zset is looked at again only after
        `live_ttl` (a schedule fires at most that late), not every pass."""
        now_ms = self.now_ms()
        if now_ms < self._schedules_at:
            return 0
        done = 0
        due = await self.automations.due_schedules(now_ms)
        if not due:
            self._schedules_at = now_ms + self.live_ttl * 1000
        for workspace, automation_id, fire_ms in due:
            head = await self.automations.get(workspace, automation_id)
            definition = (
                None if head is None else await self.definition(workspace, automation_id, head.version)
            )
            if head is None or definition is None or not isinstance(definition.trigger, ScheduleTrigger):
                continue
            trigger = definition.trigger
            async for members in self._audience(workspace, trigger.audience.lists, trigger.audience.segments):
                starts = [
                    new_run(
                        workspace,
                        head,
                        definition,
                        s,
                        run_id=run_id_for(head, definition, s.id, str(fire_ms)),
                        now_ms=now_ms,
                        data={},
                        cause="schedule",
                    )
                    for s in members
                    if s.status == "active"
                ]
                await self.runs.start(
                    workspace, automation_id, starts, after_exit=definition.reentry == "after_exit"
                )
                self.due_now(workspace, automation_id)
            await self.automations.advance_schedule(
                workspace,
                automation_id,
                fire_ms,
                next_due(trigger.cron, trigger.timezone, max(fire_ms, now_ms)),
            )
            done += 1
        return done

    async def _audience(self, workspace: str, lists: list[str], segments: list[str]):
        """Subscribers of the audience, in chunks: subscribed members of `lists`, then of `segments`."""
        for list_id in lists:
            after = None
            while True:
                ids, more = await self.lists.member_page(
                    workspace, list_id, statuses=("subscribed",), limit=500, after=after
                )
                if ids:
                    yield await self.subscribers.many(workspace, ids)
                    after = ids[-1]
                if not more:
                    break
        for segment_id in segments:
            async for chunk in self._segment_members(workspace, segment_id):
                yield chunk

    async def _segment_members(self, workspace: str, segment_id: str):
        segment = await self.segments.get(workspace, segment_id)
        reader = self.reader()
        if segment is None or reader is None:
            return
        query = SegmentQuery(lists=tuple(segment.lists), filter=segment.filter)
        after = None
        now = datetime.fromtimestamp(self.clock(), UTC)
        while True:
            page = await reader.segment_members(workspace, query, after=after, limit=500, now=now)
            if page.data:
                yield await self.subscribers.many(workspace, [m.id for m in page.data])
                after = page.data[-1].id
            if not page.has_more:
                return

    async def check_segments(self) -> int:
        if self.clock() - self._segments_at < self.segment_period:
            return 0
        self._segments_at = self.clock()
        done = 0
        for head, definition in await self.live():
            if not isinstance(definition.trigger, SegmentEntryTrigger):
                continue
            now_ms = self.now_ms()
            async for members in self._segment_members(head.workspace, definition.trigger.segment):
                entered = set(
                    await self.automations.not_seen_in_segment(
                        head.workspace, head.id, [m.id for m in members]
                    )
                )
                starts = [
                    new_run(
                        head.workspace,
                        head,
                        definition,
                        s,
                        run_id=run_id_for(head, definition, s.id, "segment_entry"),
                        now_ms=now_ms,
                        data={},
                        cause="segment_entry",
                    )
                    for s in members
                    if s.id in entered and s.status == "active"
                ]
                await self.runs.start(
                    head.workspace, head.id, starts, after_exit=definition.reentry == "after_exit"
                )
                self.due_now(head.workspace, head.id)
                await self.automations.mark_seen_in_segment(head.workspace, head.id, sorted(entered))
                done += len(starts)
        return done

    # --- runs -------------------------------------------------------------------------------------
    def due_now(self, workspace: str, automation_id: str) -> None:
        """A run of this automation was just started (here, or by an api trigger seen on the stream):
        claim it in the next pass; under `run`, `claim_delay` later at most, so that the runs started by
        a stream of triggers are claimed and committed a batch at a time, not a round trip or two each
        (the run itself exists already: this delays only its first step)."""
        pair = (workspace, automation_id)
        if self._claim_delay_ms <= 0:
            self._due[pair] = None
        elif pair not in self._due or (at := self._due[pair]) is not None:
            soon = self.now_ms() + self._claim_delay_ms
            self._due[pair] = soon if pair not in self._due else min(at or soon, soon)

    async def drive(self) -> int:
        """Claim and step the due runs. Which automations to claim is known without asking Redis each
        pass: every claim answers when its automation is due next (its earliest score), a commit knows
        the scores it wrote, and a run started elsewhere is seen on the stream (`automation.triggered`);
        every `live_ttl` seconds a sweep claims every automation with due runs anyway (what another
        runner or process changed). A paused automation is tried every pass (it is held, not forgotten)."""
        now_ms = self.now_ms()
        if now_ms >= self._sweep_at:
            self._sweep_at = now_ms + int(self.live_ttl * 1000)
            self._due = dict.fromkeys(await self.runs.active())  # each claimed this pass
        done = 0
        for pair, at in list(self._due.items()):
            if at is None or at <= now_ms:
                done += await self._drive_one(*pair)
        return done

    async def _drive_one(self, workspace: str, automation_id: str) -> int:
        """Up to `pipeline` batches of this automation's due runs, overlapped: the next batch is claimed
        while this one is planned, and this one's commit runs in Redis while the next is planned."""
        pair = (workspace, automation_id)
        claim = partial(
            self.runs.claim_batch, workspace, automation_id, lease_ms=self.lease_ms, limit=self.batch
        )
        batch = await claim(now_ms=self.now_ms())
        done, rounds = 0, 0
        committing: asyncio.Future[int | None] | None = None
        following: asyncio.Future[ClaimedBatch] | None = None
        next_ms = batch.next_due_ms
        try:
            while batch.runs:
                rounds += 1
                if len(batch.runs) >= self.batch and rounds < self.pipeline:
                    following = asyncio.ensure_future(claim(now_ms=self.now_ms()))
                    await asyncio.sleep(0)  # let it send its call before planning holds the loop
                moves = await self.plan(workspace, automation_id, batch)
                if committing is not None:
                    earliest = await committing
                    next_ms = _earliest(next_ms, earliest)
                    committing = None
                committing = asyncio.ensure_future(self._commit(workspace, automation_id, moves))
                await asyncio.sleep(0)
                done += len(batch.runs)
                if following is None:
                    break
                batch, following = await following, None
                next_ms = _earliest(batch.next_due_ms, next_ms)
        finally:
            for task in (committing, following):
                if task is not None and not task.done():
                    await asyncio.wait([task])
        if committing is not None:
            next_ms = _earliest(next_ms, committing.result())
        if batch.paused or rounds >= self.pipeline:
            self._due[pair] = None  # held (tried every pass), or more may be due: again next pass
        elif next_ms is None:
            self._due.pop(pair, None)  # no run left: a start (or the sweep) puts it back
        else:
            self._due[pair] = next_ms
        return done

    async def _commit(self, workspace: str, automation_id: str, moves: list[Transition]) -> int | None:
        """Commit, and answer the earliest due time written (None: no run left due)."""
        applied = await self.runs.commit(workspace, automation_id, moves)
        due = [m.due_ms for m, ok in zip(moves, applied, strict=True) if ok and m.due_ms is not None]
        return min(due) if due else None

    async def plan(self, workspace: str, automation_id: str, batch: ClaimedBatch) -> list[Transition]:
        """One step of each claimed run: the transitions to commit."""
        if batch.head is None:
            return []  # deleted: its keys are gone, nothing to write
        head = record_decoder.decode(batch.head)
        claimed = batch.runs
        now_ms = self.now_ms()
        definitions: dict[int, Definition | None] = {}
        for version in {run.record.version for run in claimed}:
            definitions[version] = await self.definition(workspace, automation_id, version)
        wanted = set()
        for run in claimed:
            definition = definitions[run.record.version]
            if definition is None or run.record.at >= len(definition.steps):
                continue
            if _needs_subscriber(definition.steps[run.record.at]):
                wanted.add(run.record.subscriber)
        subscribers = (
            {s.id: s for s in await self.subscribers.many(workspace, list(wanted))} if wanted else {}
        )
        plans: dict[str, Plan | None] = {}
        sends: list[tuple[Claimed, Definition, SendStep, SubscriberRecord]] = []
        for run in claimed:
            definition = definitions[run.record.version]
            plans[run.run_id] = None
            if definition is None or run.record.status not in LIVE:
                plans[run.run_id] = Plan(record=run.record, due_ms=None)
                continue
            if run.record.at >= len(definition.steps):
                plans[run.run_id] = _ended(run.record, "c", "", now_ms, "", head, run.run_id, workspace)
                continue
            step = definition.steps[run.record.at]
            subscriber = subscribers.get(run.record.subscriber)
            if subscriber is None and _needs_subscriber(step):
                plans[run.run_id] = _ended(
                    run.record, "x", "", now_ms, "the subscriber was deleted", head, run.run_id, workspace
                )
                continue
            if subscriber is None:  # an exit or a wait in seconds reads nothing of the subscriber
                subscriber = SubscriberRecord(id=run.record.subscriber, email="", created_ms=0)
            if isinstance(step, SendStep):
                sends.append((run, definition, step, subscriber))
                continue
            try:
                plans[run.run_id] = await self.do_step(
                    workspace, head, definition, run, step, subscriber, now_ms
                )
            except Exception as exc:  # a step that cannot be done now is tried again; never a stuck run
                log.warning("automation %s run %s step %s: %s", automation_id, run.run_id, step.id, exc)
                plans[run.run_id] = Plan(record=run.record, due_ms=now_ms + RETRY_SECONDS * 1000)
        if sends:
            for run_id, plan in (await self.do_sends(workspace, head, sends, now_ms)).items():
                plans[run_id] = plan
        return [
            Transition(
                run_id=c.run_id,
                expected=c.raw,
                record=p.record,
                due_ms=p.due_ms,
                events=p.events,
                lease=c.lease,
            )
            for c in claimed
            if (p := plans[c.run_id]) is not None
        ]

    async def do_step(
        self,
        workspace: str,
        head: AutomationRecord,
        definition: Definition,
        run: Claimed,
        step: Step,
        subscriber: SubscriberRecord,
        now_ms: int,
    ) -> Plan:
        record = run.record
        if isinstance(step, WaitStep):
            wake = wake_at_ms(step, subscriber, now_ms)
            return _moved(record, definition, step, now_ms, "waiting", head, run.run_id, workspace, wake=wake)
        if isinstance(step, ExitStep):
            return _ended(record, "x", step.id, now_ms, "exit step", head, run.run_id, workspace)
        if isinstance(step, BranchStep):
            taken = await self.matches(workspace, step.condition, subscriber.id)
            target = successors(definition.steps, record.at)[0 if taken else 1]
            return _moved(
                record,
                definition,
                step,
                now_ms,
                "then" if taken else "else",
                head,
                run.run_id,
                workspace,
                target=target,
            )
        if isinstance(step, UpdateStep):
            await self.subscribers.update(
                workspace, subscriber.id, {"attributes": dict(step.attributes)}, now_ms
            )
            return _moved(record, definition, step, now_ms, "updated", head, run.run_id, workspace)
        assert isinstance(step, WebhookStep)
        return await self.do_webhook(workspace, head, definition, run, step, subscriber, now_ms)

    async def do_webhook(
        self,
        workspace: str,
        head: AutomationRecord,
        definition: Definition,
        run: Claimed,
        step: WebhookStep,
        subscriber: SubscriberRecord,
        now_ms: int,
    ) -> Plan:
        record = run.record
        try:
            check_webhook_url(
                step.url,
                allow_http=self.settings.allow_http_webhooks,
                allow_private=self.settings.allow_private_webhooks,
            )
        except ForbiddenUrl as exc:
            return _ended(
                record,
                "f",
                step.id,
                now_ms,
                f"webhook refused: {exc.code}: {exc.detail}",
                head,
                run.run_id,
                workspace,
            )
        delivery_id = derived_id("evt", record.created_ms, run.run_id, step.id)
        body = msgspec.json.encode(
            {
                "id": delivery_id,
                "type": "automation.webhook",
                "created_at": datetime.fromtimestamp(now_ms / 1000, UTC),
                "data": {
                    "automation_id": head.id,
                    "run_id": run.run_id,
                    "version": record.version,
                    "step": step.id,
                    "subscriber": _subscriber_view(subscriber),
                    "data": record.data,
                    "history": [[h.step, h.at_ms, h.outcome, h.message_id] for h in record.history],
                },
            }
        )
        if self.settings.secret_key is None:
            return _ended(
                record,
                "f",
                step.id,
                now_ms,
                "webhook: MAILERS_SECRET_KEY is not set",
                head,
                run.run_id,
                workspace,
            )
        secret = derived_webhook_secret(self.settings.secret_key, f"{workspace}|{head.id}")
        headers = sign_delivery(delivery_id, now_ms // 1000, body, [secret])
        outcome = await self.webhooks.post(step.url, body, headers)
        if outcome.delivered:
            return _moved(record, definition, step, now_ms, "delivered", head, run.run_id, workspace)
        tries = 1 + sum(1 for h in record.history if h.step == step.id and h.outcome == "retry")
        if tries >= WEBHOOK_ATTEMPTS or (outcome.error or "").startswith("webhook_url"):
            return _ended(
                record, "f", step.id, now_ms, f"webhook failed: {outcome.error}", head, run.run_id, workspace
            )
        history = [*record.history, HistoryEntry(step.id, now_ms, "retry")]
        retry = msgspec.structs.replace(record, history=history)
        return Plan(record=retry, due_ms=now_ms + WEBHOOK_RETRY_SECONDS * 1000 * tries)

    async def do_sends(
        self,
        workspace: str,
        head: AutomationRecord,
        sends: list[tuple[Claimed, Definition, SendStep, SubscriberRecord]],
        now_ms: int,
    ) -> dict[str, Plan]:
        plans: dict[str, Plan] = {}
        items: list[OutboundItem] = []
        pending: list[tuple[Claimed, Definition, SendStep, str]] = []
        for run, definition, step, subscriber in sends:
            list_id = run.record.data.get("list") if isinstance(run.record.data.get("list"), str) else None
            skip = _send_refusal(subscriber, list_id)
            if skip is not None:
                # Blocklisted: the step is skipped (the rest of the run may still update or call back);
                # unsubscribed from the list the run is for: the run ends.
                if skip == "blocklisted":
                    plans[run.run_id] = _moved(
                        run.record, definition, step, now_ms, "skipped", head, run.run_id, workspace
                    )
                else:
                    plans[run.run_id] = _ended(
                        run.record, "x", step.id, now_ms, "unsubscribed", head, run.run_id, workspace
                    )
                continue
            message_id = derived_id("msg", run.record.created_ms, run.run_id, step.id)
            metadata = {"automation_id": head.id, "run_id": run.run_id}
            if list_id is not None:
                metadata["list_id"] = list_id
            variables = {
                **step.variables,
                **subscriber.attributes,
                "email": subscriber.email,
                "name": subscriber.name,
                "subscriber": _subscriber_view(subscriber),
                "automation": {"id": head.id, "name": head.name},
                "data": run.record.data,
            }
            request = SendRequest(
                from_=step.from_,
                to=subscriber.email,
                subject=step.subject or "",
                reply_to=step.reply_to,
                # An in-process dict, taken as is by actors.outbound.templating.template_variables.
                template=TemplateRef(id=step.template.id, version=step.template.version, variables=variables),  # type: ignore[arg-type]
                tags=list(step.tags),
                metadata=metadata,
                routing=step.routing if step.routing is not None else RoutingIn(),
                tracking=TrackingIn(opens=True, clicks=True),
                unsubscribe=True,
            )
            items.append(OutboundItem(request=request, message_id=message_id))
            pending.append((run, definition, step, message_id))
        if items:
            outcomes = await self.outbound.send(
                workspace, items, now=datetime.fromtimestamp(now_ms / 1000, UTC)
            )
            for (run, definition, step, message_id), outcome in zip(pending, outcomes, strict=True):
                if isinstance(outcome, Accepted):
                    plans[run.run_id] = _moved(
                        run.record,
                        definition,
                        step,
                        now_ms,
                        "sent",
                        head,
                        run.run_id,
                        workspace,
                        message_id=message_id,
                    )
                else:
                    reason = f"send refused: {outcome.error.code}: {outcome.error.detail}"[:500]
                    plans[run.run_id] = _ended(
                        run.record, "f", step.id, now_ms, reason, head, run.run_id, workspace
                    )
        return plans


# --- pure helpers ----------------------------------------------------------------------------------
def _send_refusal(subscriber: SubscriberRecord, list_id: str | None) -> str | None:
    if subscriber.status == "blocklisted":
        return "blocklisted"
    if list_id is not None:
        membership = subscriber.lists.get(list_id)
        if membership is not None and membership.status == "unsubscribed":
            return "unsubscribed"
    return None


def _subscriber_view(subscriber: SubscriberRecord) -> dict[str, Any]:
    return {
        "id": subscriber.id,
        "email": subscriber.email,
        "name": subscriber.name,
        "attributes": subscriber.attributes,
    }


def _event_data(event: Event) -> dict[str, Any]:
    """What a run keeps of the event that started it: custom events' properties, the list of a list event."""
    data: dict[str, Any] = {"event": event.type, "event_id": event.id}
    if isinstance(event.data.get("properties"), dict):
        data["properties"] = event.data["properties"]
    if isinstance(event.data.get("list"), str):
        data["list"] = event.data["list"]
    if event.message is not None:
        data["message_id"] = event.message.id
    return data


def _step_event(
    workspace: str, head: AutomationRecord, run_id: str, record: RunRecord, entry: HistoryEntry
) -> Event:
    data = {
        "automation_id": head.id,
        "run_id": run_id,
        "version": record.version,
        "subscriber": record.subscriber,
        "step": entry.step,
        "outcome": entry.outcome,
        "status": STATUS_NAMES[record.status],
    }
    if entry.message_id:
        data["message_id"] = entry.message_id
    return automation_event("automation.step_completed", workspace, entry.at_ms, data)


def _moved(
    record: RunRecord,
    definition: Definition,
    step: Step,
    now_ms: int,
    outcome: str,
    head: AutomationRecord,
    run_id: str,
    workspace: str,
    *,
    target: str | None = None,
    wake: int | None = None,
    message_id: str | None = None,
) -> Plan:
    """The run after `step` went well: on to its successor (`target`, or the step's own), waiting until
    `wake` if given; completed when there is none."""
    steps = definition.steps
    following = target if target is not None else successors(steps, record.at)[0]
    index = (
        next((i for i, s in enumerate(steps) if s.id == following), len(steps)) if following else len(steps)
    )
    entry = HistoryEntry(step.id, now_ms, outcome, message_id)
    history = [*record.history, entry]
    if index >= len(steps) and wake is None:
        done = msgspec.structs.replace(record, status="c", at=index, history=history)
        return Plan(
            record=done,
            due_ms=None,
            events=[_end_event(workspace, head, run_id, done, now_ms)],
        )
    status = "w" if wake is not None else "r"
    moved = msgspec.structs.replace(record, status=status, at=index, history=history)
    return Plan(
        record=moved,
        due_ms=wake if wake is not None else now_ms,
        events=[_step_event(workspace, head, run_id, moved, entry)],
    )


def _ended(
    record: RunRecord,
    status: str,
    step_id: str,
    now_ms: int,
    reason: str,
    head: AutomationRecord,
    run_id: str,
    workspace: str,
) -> Plan:
    outcome = {"c": "completed", "x": "exited", "f": "failed"}[status]
    history = [*record.history, HistoryEntry(step_id, now_ms, outcome)] if step_id else record.history
    done = msgspec.structs.replace(record, status=status, history=history, reason=reason)
    return Plan(record=done, due_ms=None, events=[_end_event(workspace, head, run_id, done, now_ms)])


def _end_event(workspace: str, head: AutomationRecord, run_id: str, record: RunRecord, now_ms: int) -> Event:
    data = {
        "automation_id": head.id,
        "run_id": run_id,
        "version": record.version,
        "subscriber": record.subscriber,
        "status": STATUS_NAMES[record.status],
    }
    if record.history:  # the step that ended it, if one did (it has no step_completed event of its own)
        last = record.history[-1]
        data["step"], data["outcome"] = last.step, last.outcome
        if last.message_id:
            data["message_id"] = last.message_id
    if record.reason:
        data["reason"] = record.reason
    return automation_event("automation.run_ended", workspace, now_ms, data)


def _needs_subscriber(step: Step) -> bool:
    if isinstance(step, ExitStep):
        return False
    if isinstance(step, WaitStep):
        return step.timezone == "subscriber"
    return True


def wake_at_ms(step: WaitStep, subscriber: SubscriberRecord, now_ms: int) -> int:
    if step.seconds is not None:
        return now_ms + step.seconds * 1000
    assert step.until is not None
    zone_name = step.timezone
    if zone_name == "subscriber":
        zone_name = str(subscriber.attributes.get("timezone") or "UTC")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    hour, minute = (int(part) for part in step.until.split(":"))
    local = datetime.fromtimestamp(now_ms / 1000, zone)
    wall = local.replace(tzinfo=None, hour=hour, minute=minute, second=0, microsecond=0)
    if wall <= local.replace(tzinfo=None):
        wall += timedelta(days=1)
    return int(wall.replace(tzinfo=zone).timestamp() * 1000)


def _may_trigger(fields: dict[bytes, bytes], triggers: set[tuple[str, str]]) -> bool:
    """False only for a chunk of new subscribers whose events no live trigger of its workspace wants."""
    raw = fields.get(keyspace.EVENT_CHUNK_FIELD)
    if raw is None:
        return True
    chunk = chunk_decoder.decode(raw)
    return any((chunk.workspace, kind) in triggers for kind in chunk.types)


def _type_mark(kind: str) -> bytes:
    """How an event of type `kind` shows in an entry's msgpack: the map key `type`, then the str."""
    return msgspec.msgpack.encode("type") + msgspec.msgpack.encode(kind)


_TRIGGERED_MARK = _type_mark("automation.triggered")


class _HintData(msgspec.Struct):
    automation_id: str = ""


class _Hint(msgspec.Struct):
    """What the runner reads of an event it is not triggered by (the rest of the map is skipped)."""

    type: str = ""
    workspace: str = ""
    data: _HintData = msgspec.field(default_factory=_HintData)


_hints_decoder = msgspec.msgpack.Decoder(list[_Hint])


def _earliest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)
