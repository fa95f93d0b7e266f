"""ImportRunner: applies the rows of CSV imports (`store/imports.py`) to subscribers, a batch at a time.

One step applies up to eight waiting entries (≈2,000 rows each) of each active import, four per script:
rows → inputs (`schemas/subscriber_items.row_items`, bad rows become errors with their line numbers) →
one upsert whose script also adds the progress counters, appends the row errors and deletes the
entries; the second batch is read and planned while the first one's script runs. A crash before a
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
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from actors.stepping import poll, until_idle
from schemas.audience import ImportRecord, ListRecord, RowError, SubscriberInput
from schemas.subscriber_items import row_items
from store.compare_apply import Batch, EntryGone
from store.confirmation_outbox import PendingConfirmations
from store.confirmation_outbox import queue as queue_confirmations
from store.imports import ImportStore, commit_entry
from store.lists import ListStore
from store.subscriber_changes import Plan
from store.subscribers import Staged, SubscriberStore

log = logging.getLogger("mailers.imports")
# An upload that appended no rows for this long has lost its ingress (a live one appends a batch every
# ~2,000 rows, far more often than this even on a slow link).
STALE_UPLOAD_AFTER = 600.0
# Entries (≈2,000 rows each, `ingress/csv_upload.BATCH_ROWS`) applied by one script, and such batches
# per step: the per-call costs (round trips, the script's set-up) are paid per ≈8,000 rows, and a step
# holds at most ≈16,000 rows in memory.
ENTRIES_PER_BATCH = 4
BATCHES_PER_STEP = 2
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

    async def step(self) -> int:
        """One entry of every active import; returns how many entries or completions it made."""
        done = 0
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
        groups = [entries[i : i + ENTRIES_PER_BATCH] for i in range(0, len(entries), ENTRIES_PER_BATCH)]
        await self._apply_overlapped(record, target, groups)
        return len(entries)

    async def _apply_overlapped(
        self, record: ImportRecord, target: ListRecord, groups: list[list[Entry]]
    ) -> None:
        """Apply each group of entries with one script. The next group's read is sent before the
        previous group's script starts, so its planning and encoding (most of the runner's CPU) run
        while Redis runs that script. A group read before the previous one landed is checked like any
        other: if the two share an address, its commit's checks fail and it re-plans."""
        running: asyncio.Task[Plan] | None = None
        try:
            for group in groups:
                staged = await self.stage(record, target, group)
                if running is not None:
                    await _entries_applied(running)
                running = asyncio.ensure_future(self.subscribers.commit(staged))
            if running is not None:
                await _entries_applied(running)
        finally:  # staging failed (or the step was cancelled): let the script in flight finish
            if running is not None and not running.done():
                with contextlib.suppress(Exception):
                    await running

    async def apply(
        self, record: ImportRecord, target: ListRecord, entry_id: bytes, rows: list[tuple[int, list[str]]]
    ) -> Plan:
        """One entry's rows (`EntryGone` if another runner applied it meanwhile)."""
        return await self.subscribers.commit(await self.stage(record, target, [(entry_id, rows)]))

    async def stage(self, record: ImportRecord, target: ListRecord, entries: list[Entry]) -> Staged:
        """The rows of `entries` read and planned as one upsert whose script also adds their counts,
        appends their row errors, queues confirmation mails and deletes the entries."""
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

        return await self.subscribers.stage(target, items, mode=record.mode, now_ms=now_ms, extra=progress)


async def _entries_applied(running: asyncio.Task[Plan]) -> None:
    try:
        await running
    except EntryGone:  # another runner applied one of these entries meanwhile; its counts are in
        pass
