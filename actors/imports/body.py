"""ImportRunner: applies the rows of CSV imports (`store/imports.py`) to subscribers, a batch at a time.

One step applies one waiting entry (≈2,000 rows) of each active import: rows → inputs
(`schemas/subscriber_items.row_item`, bad rows become errors with their line numbers) → one
`SubscriberStore.upsert` whose script also adds the progress counters, appends the row errors and
deletes the entry. A crash before that script re-applies the entry later (an upsert of the same rows is
idempotent and nothing was counted yet); after it, the entry is gone. An import whose upload finished and
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

from schemas.audience import ImportRecord, RowError, SubscriberInput
from schemas.subscriber_items import row_item
from store.compare_apply import EntryGone
from store.confirmation_outbox import PendingConfirmations
from store.confirmation_outbox import queue as queue_confirmations
from store.imports import ImportStore, commit_entry
from store.lists import ListStore
from store.subscriber_changes import Plan
from store.subscribers import SubscriberStore

log = logging.getLogger("mailers.imports")
# An upload that appended no rows for this long has lost its ingress (a live one appends a batch every
# ~2,000 rows, far more often than this even on a slow link).
STALE_UPLOAD_AFTER = 600.0


def rows_to_items(
    columns: list[str], rows: list[tuple[int, list[str]]]
) -> tuple[list[SubscriberInput], list[RowError], int]:
    """(inputs, errors, how many data rows): blank lines and the header row (line 1) are not rows."""
    items: list[SubscriberInput] = []
    errors: list[RowError] = []
    counted = 0
    for line, cells in rows:
        result = row_item(columns, line, cells)
        if result is None:
            continue
        counted += 1
        if isinstance(result, RowError):
            errors.append(result)
        else:
            items.append(result)
    return items, errors, counted


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
        total = 0
        while done := await self.step():
            total += done
        return total

    async def run(self, stop: asyncio.Event, *, idle_wait: float = 0.2) -> None:
        while not stop.is_set():
            try:
                done = await self.step()
            except Exception:
                log.exception("import step failed; retrying")
                done = 0
            if not done:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), idle_wait)

    async def advance(self, workspace: str, import_id: str) -> int:
        record = await self.imports.get(workspace, import_id)
        target = None if record is None else await self.lists.get(workspace, record.list_id)
        if record is None or target is None:
            await self.imports.fail(workspace, import_id, "the list was deleted")
            return 1
        entry = await self.imports.next_entry(workspace, import_id)
        if entry is None:
            if (await self.imports.progress(workspace, import_id))["status"] == "running":
                await self.imports.complete(workspace, import_id)
                return 1
            now_ms = int(self.clock() * 1000)
            if await self.imports.stalled(workspace, import_id, now_ms, self.stale_upload_ms):
                await self.imports.fail(workspace, import_id, "the upload stopped before the end of the file")
                return 1
            return 0  # still uploading
        try:
            await self.apply(record, target, *entry)
        except EntryGone:  # another runner applied this entry meanwhile; its counts are in
            pass
        return 1

    async def apply(
        self, record: ImportRecord, target, entry_id: bytes, rows: list[tuple[int, list[str]]]
    ) -> Plan:
        items, errors, counted = rows_to_items(record.columns, rows)

        def progress(batch, plan: Plan) -> None:
            counts = {
                "rows": counted,
                "created": plan.count("created"),
                "updated": plan.count("updated"),
                "unchanged": plan.count("unchanged"),
                "rejected": len(errors),
            }
            commit_entry(batch, record.workspace, record.id, entry_id, counts, errors)
            pending = PendingConfirmations(
                record.workspace, target.id, record.key_id, now_ms, plan.confirmations
            )
            queue_confirmations(batch, pending)

        now_ms = int(self.clock() * 1000)
        return await self.subscribers.upsert(target, items, mode=record.mode, now_ms=now_ms, extra=progress)
