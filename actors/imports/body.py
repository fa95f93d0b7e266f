"""ImportRunner: applies the rows of CSV imports (`store/imports.py`) to subscribers, a batch at a time.

One step applies up to sixteen waiting entries (≈2,000 rows each) of each active import, four per
script: rows → inputs (`schemas/subscriber_items.row_items`, bad rows become errors with their line
numbers) → one upsert whose script also adds the progress counters, appends the row errors and deletes
the entries; the batches are pipelined (the next one read and planned while the previous one's script
runs in Redis, `_apply_pipelined`). A crash before a
script re-applies its entries later (an upsert of the same rows is idempotent and nothing was counted
yet); after it, they are gone. An import whose upload finished and
whose stream is empty is completed; one still uploading that appended nothing for `stale_upload_after`
(its ingress died mid-body) is failed. New members of a double opt-in list are `unconfirmed`: the same
script queues their confirmation mails in the outbox (`store/confirmation_outbox.py`), which the ingress
sends (the send path lives there).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from actors.stepping import poll, until_idle
from schemas.audience import ImportRecord, ListRecord, RowError, SubscriberInput
from schemas.subscriber_items import row_items
from store.compare_apply import Batch, EntryGone
from store.confirmation_outbox import PendingConfirmations
from store.confirmation_outbox import queue as queue_confirmations
from store.imports import ImportStore, commit_entry
from store.lists import ListStore
from store.script_call import PendingReply
from store.subscriber_changes import Plan
from store.subscribers import Reading, Staged, SubscriberStore, remember_all_new

log = logging.getLogger("mailers.imports")
# An upload that appended no rows for this long has lost its ingress (a live one appends a batch every
# ~2,000 rows, far more often than this even on a slow link).
STALE_UPLOAD_AFTER = 600.0
# Entries (≈2,000 rows each, `ingress/csv_upload.BATCH_ROWS`) applied by one script, and such batches
# per step: the per-call costs (round trips, the script's set-up) are paid per ≈8,000 rows, the pipeline
# (`_apply_pipelined`) starts and drains once per four batches, and a step holds at most ≈32,000 rows
# in memory.
ENTRIES_PER_BATCH = 4
BATCHES_PER_STEP = 4
Entry = tuple[bytes, list[tuple[int, list[str]]]]


def rows_to_items(
    columns: list[str], rows: list[tuple[int, list[str]]]
) -> tuple[list[SubscriberInput], list[RowError], int]:
    """(inputs, errors, how many data rows): blank lines and the header row (line 1) are not rows."""
    return row_items(columns, rows)


class ImportRunner:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        clock: Callable[[], float] = time.time,
        stale_upload_after: float = STALE_UPLOAD_AFTER,
    ) -> None:
        self.redis = redis
        self.clock = clock
        self.stale_upload_ms = int(stale_upload_after * 1000)
        self.imports = ImportStore(redis)
        self.lists = ListStore(redis)
        self.subscribers = SubscriberStore(redis)
        # import id -> whether its last batch created every subscriber it named: then the next batch
        # is planned without a read (`SubscriberStore.assume_new`)
        self._all_new: dict[str, bool] = {}

    async def step(self) -> int:
        """Up to sixteen entries of every active import; returns how many entries or completions it made.

        The cyclic garbage collector is paused for the step (`paused_collector`): a step holds up to
        ≈32,000 rows' inputs, records and plans alive at once, and every young-generation collection
        meanwhile traversed them all (≈1 µs of the runner's ≈8 µs per row) to free nothing, since they
        are freed by reference counting when the step ends. The collection that follows the step finds
        only what survived it."""
        done = 0
        with paused_collector():
            for workspace, import_id in await self.imports.active():
                done += await self.advance(workspace, import_id)
        return done

    async def run_until_idle(self) -> int:
        return await until_idle(self.step)

    async def run(self, stop: asyncio.Event, *, idle_wait: float = 0.2) -> None:
        await poll(self.step, stop, idle_wait=idle_wait, log=log)

    async def advance(self, workspace: str, import_id: str) -> int:
        record = await self.imports.get(workspace, import_id)
        target = None if record is None else await self.lists.get(workspace, record.list_id)
        if record is None or target is None:
            await self.imports.fail(workspace, import_id, "the list was deleted")
            return 1
        entries = await self.imports.next_entries(workspace, import_id, ENTRIES_PER_BATCH * BATCHES_PER_STEP)
        if not entries:
            if (await self.imports.progress(workspace, import_id))["status"] == "running":
                await self.imports.complete(workspace, import_id)
                return 1
            now_ms = int(self.clock() * 1000)
            if await self.imports.stalled(workspace, import_id, now_ms, self.stale_upload_ms):
                await self.imports.fail(workspace, import_id, "the upload stopped before the end of the file")
                return 1
            return 0  # still uploading
        if not record.columns:
            # Read before the upload named its columns, which it does before its first rows: read again,
            # or these rows would all be rejected for want of an email column.
            record = await self.imports.get(workspace, import_id) or record
        groups = [entries[i : i + ENTRIES_PER_BATCH] for i in range(0, len(entries), ENTRIES_PER_BATCH)]
        await self._apply_pipelined(record, target, groups)
        return len(entries)

    async def _apply_pipelined(
        self, record: ImportRecord, target: ListRecord, groups: list[list[Entry]]
    ) -> None:
        """Apply each group of entries with one script, pipelined so that Redis and this process work
        at the same time. For group k+1 the order is: its read is sent, then group k's write (so the
        read is not queued behind that long script); while Redis runs the write, group k+1 is planned
        and group k+2's rows are turned into inputs. While the import's batches keep creating every
        subscriber they name, a group is planned without a read (`SubscriberStore.assume_new`: its
        script checks that none of its addresses exists). A group planned before the previous one
        landed is checked like any other: if the two share an address, its commit's checks fail and it
        re-reads and re-plans (`SubscriberStore.finish_commit`). Nothing is left unanswered: on any
        failure the scripts in flight are waited for (their effects are whole, like any script's)."""
        subscribers = self.subscribers
        in_flight: list[PendingReply] = []
        try:
            staged = await self._first_plan(self.prepare(record, target, groups[0]), record.id)
            upcoming = self.prepare(record, target, groups[1]) if len(groups) > 1 else None
            for k in range(len(groups)):
                reading = None
                if upcoming is not None and not self._all_new.get(record.id, True):
                    reading = await subscribers.send_read(upcoming.target, upcoming.items, **upcoming.options)
                    _track(in_flight, reading.read.pending)
                writing = await subscribers.send_commit(staged)
                _track(in_flight, writing)
                following = None
                if reading is not None:
                    following = await subscribers.staged(reading)
                    _untrack(in_flight, reading.read.pending)
                elif upcoming is not None:
                    following = subscribers.assume_new(upcoming.target, upcoming.items, **upcoming.options)
                upcoming = self.prepare(record, target, groups[k + 2]) if k + 2 < len(groups) else None
                _untrack(in_flight, writing)
                plan = await _entries_applied(subscribers.finish_commit(staged, writing))
                if plan is not None:
                    remember_all_new(self._all_new, record.id, plan)
                if following is None:
                    break
                staged = following
        finally:
            for pending in in_flight:  # failed or cancelled midway: read what is still owed
                with contextlib.suppress(Exception):
                    await pending.reply()

    async def _first_plan(self, prepared: Prepared, import_id: str) -> Staged:
        if self._all_new.get(import_id, True):
            return self.subscribers.assume_new(prepared.target, prepared.items, **prepared.options)
        reading = await self.subscribers.send_read(prepared.target, prepared.items, **prepared.options)
        return await self.subscribers.staged(reading)

    def prepare(self, record: ImportRecord, target: ListRecord, entries: list[Entry]) -> Prepared:
        """The rows of `entries` as inputs, and the progress their script adds (`stage`)."""
        rows = [row for _, entry_rows in entries for row in entry_rows]
        items, errors, counted = rows_to_items(record.columns, rows)
        entry_ids = [entry_id for entry_id, _ in entries]
        now_ms = int(self.clock() * 1000)

        def progress(batch: Batch, plan: Plan) -> None:
            counts = {
                "rows": counted,
                "created": plan.count("created"),
                "updated": plan.count("updated"),
                "unchanged": plan.count("unchanged"),
                "rejected": len(errors),
            }
            commit_entry(batch, record.workspace, record.id, entry_ids, counts, errors)
            pending = PendingConfirmations(
                record.workspace, target.id, record.key_id, now_ms, plan.confirmations
            )
            queue_confirmations(batch, pending)

        return Prepared(target, items, {"mode": record.mode, "now_ms": now_ms, "extra": progress})

    async def send_read(self, record: ImportRecord, target: ListRecord, entries: list[Entry]) -> Reading:
        prepared = self.prepare(record, target, entries)
        return await self.subscribers.send_read(prepared.target, prepared.items, **prepared.options)

    async def apply(
        self, record: ImportRecord, target: ListRecord, entry_id: bytes, rows: list[tuple[int, list[str]]]
    ) -> Plan:
        """One entry's rows (`EntryGone` if another runner applied it meanwhile)."""
        return await self.subscribers.commit(await self.stage(record, target, [(entry_id, rows)]))

    async def stage(self, record: ImportRecord, target: ListRecord, entries: list[Entry]) -> Staged:
        """The rows of `entries` read and planned as one upsert whose script also adds their counts,
        appends their row errors, queues confirmation mails and deletes the entries."""
        return await self.subscribers.staged(await self.send_read(record, target, entries))


@dataclass
class Prepared:
    """A group's rows as upsert inputs, with the options of their upsert (`SubscriberStore.send_read`)."""

    target: ListRecord
    items: list[SubscriberInput]
    options: dict[str, Any]


@contextlib.contextmanager
def paused_collector() -> Iterator[None]:
    """`gc` disabled inside (if it was enabled), enabled again on the way out, whatever happens."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _track(in_flight: list[PendingReply], pending: PendingReply | None) -> None:
    if pending is not None:
        in_flight.append(pending)


def _untrack(in_flight: list[PendingReply], pending: PendingReply | None) -> None:
    if pending is not None and pending in in_flight:
        in_flight.remove(pending)


async def _entries_applied(running: Awaitable[Plan]) -> Plan | None:
    try:
        return await running
    except EntryGone:  # another runner applied one of these entries meanwhile; its counts are in
        return None
