"""Subscribers in Redis: one msgpack record per person, an address index, per-list status sets.

Layout per workspace (`store/keyspace.py`): the `subs` hash (sub id → `SubscriberRecord`, memberships
inside), the `subs:email` hash (normalised address → sub id) and, per list and status, a lex zset of sub
ids (`list_members`). About 300 bytes of Redis per subscriber on one list (docs/audience.md, "Memory per
subscriber"; `python -m bench.audience` measures it).

Every change is read → plan (`store/subscriber_changes.py`, pure) → one compare-and-apply script that
checks the records read are unchanged, writes records, index and status sets, and appends the events to
`m:events` in the same script; a conflict re-reads and re-plans. Callers may add commands of their own
to the same script (the import runner's progress and stream trimming), so those commit with the rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis.asyncio as aioredis

from schemas.audience import (
    ListRecord,
    SubscriberInput,
    SubscriberRecord,
    subscriber_decoder,
    subscriber_encoder,
)
from schemas.events import event_msgpack_encoder
from schemas.subscriber_chunks import NewMembers, chunk_encoder
from store import keyspace
from store.compare_apply import Batch, CompareAndApply
from store.lua import lua_string
from store.replies import as_bytes_or_none, as_text
from store.script_call import PendingReply, send_script
from store.subscriber_changes import (
    ChangeEvent,
    Plan,
    member_event,
    merge_fields,
    plan_upsert,
    set_membership,
    subscriber_event,
)

ATTEMPTS = 20
# KEYS: the address index, the records; ARGV[1]: msgpack array of addresses. Returns {ids (nil where
# absent), the records of the ids found, in their order (nil where gone)}; chunks keep unpack() small.
_READ_BY_EMAIL = """
local emails = cmsgpack.unpack(ARGV[1])
local ids, found, records = {}, {}, {}
for start = 1, #emails, 1000 do
  local part = redis.call('HMGET', KEYS[1], unpack(emails, start, math.min(start + 999, #emails)))
  for j = 1, #part do
    ids[#ids + 1] = part[j]
    if part[j] then found[#found + 1] = part[j] end
  end
end
for start = 1, #found, 1000 do
  local part = redis.call('HMGET', KEYS[2], unpack(found, start, math.min(start + 999, #found)))
  for j = 1, #part do records[#records + 1] = part[j] end
end
return {ids, records}
"""
_encode_args = msgspec.msgpack.Encoder().encode


@dataclass
class Staged:
    """An upsert read and planned (`SubscriberStore.stage`), its batch not yet applied."""

    target: ListRecord
    items: list[SubscriberInput]
    mode: str
    now_ms: int
    extra: Callable[[Batch, Plan], None] | None
    plan: Plan = field(default_factory=Plan)
    batch: Batch = field(default_factory=Batch)


@dataclass
class SentRead:
    """Addresses whose read script was sent (`pending` None: there were none)."""

    emails: list[str]
    pending: PendingReply | None


@dataclass
class Reading:
    """An upsert whose read was sent (`SubscriberStore.send_read`); `SubscriberStore.staged` plans it."""

    staged: Staged
    read: SentRead


# workspace -> whether its last bulk write created every subscriber it named (`SubscriberStore.upsert`);
# bounded: cleared when full (a forgotten workspace starts optimistic again).
_all_new: dict[str, bool] = {}
_ALL_NEW_KEPT = 10_000


def remember_all_new(memory: dict[str, bool], key: str, plan: Plan) -> None:
    """Whether the next write for `key` may plan without reading (`SubscriberStore.assume_new`)."""
    if len(memory) >= _ALL_NEW_KEPT:
        memory.clear()
    memory[key] = plan.count("created") == len(plan.outcomes)


class Conflict(Exception):
    """The records kept changing under a write (20 attempts); the caller answers 409/retries later."""


class AddressTaken(Exception):
    """A PATCH of `email` to an address another subscriber of the workspace has."""


class SubscriberStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.apply = CompareAndApply(redis)
        self._read_script = redis.register_script(_READ_BY_EMAIL)

    # --- reads -----------------------------------------------------------------------------------
    async def get_raw(self, workspace: str, ids: list[str]) -> list[bytes | None]:
        if not ids:
            return []
        return [as_bytes_or_none(raw) for raw in await self.redis.hmget(keyspace.subscribers(workspace), ids)]

    async def get(self, workspace: str, subscriber_id: str) -> SubscriberRecord | None:
        [raw] = await self.get_raw(workspace, [subscriber_id])
        return None if raw is None else subscriber_decoder.decode(raw)

    async def id_for(self, workspace: str, email: str) -> str | None:
        found = await self.redis.hget(keyspace.subscriber_emails(workspace), email)
        return None if found is None else as_text(found)

    async def many(self, workspace: str, ids: list[str]) -> list[SubscriberRecord]:
        return [subscriber_decoder.decode(raw) for raw in await self.get_raw(workspace, ids) if raw]

    async def _read_by_email(
        self, workspace: str, emails: list[str]
    ) -> tuple[dict[str, bytes | None], dict[str, bytes | None], dict[str, SubscriberRecord]]:
        """(email index as read, raw records as read, records by email), in one script call: the
        addresses cross as one msgpack argument (redis-py packs a command's arguments one by one in
        Python, ~2 µs each) and the records of those found are read in the same call."""
        return await self._found(await self._send_read(workspace, emails))

    async def _send_read(self, workspace: str, emails: list[str]) -> SentRead:
        if not emails:
            return SentRead(emails, None)
        keys = [keyspace.subscriber_emails(workspace), keyspace.subscribers(workspace)]
        return SentRead(
            emails, await send_script(self.redis, self._read_script, keys, [_encode_args(emails)])
        )

    @staticmethod
    async def _found(
        read: SentRead,
    ) -> tuple[dict[str, bytes | None], dict[str, bytes | None], dict[str, SubscriberRecord]]:
        if read.pending is None:
            return {}, {}, {}
        found_ids, found_raws = await read.pending.reply()
        index = dict(zip(read.emails, found_ids, strict=True))
        raws: dict[str, bytes | None] = {}
        records: dict[str, SubscriberRecord] = {}
        found = iter(found_raws)
        for email, subscriber_id in index.items():
            if subscriber_id is not None:
                raw = next(found)
                raws[subscriber_id.decode()] = raw
                if raw is not None:
                    records[email] = subscriber_decoder.decode(raw)
        return index, raws, records

    # --- bulk upsert ----------------------------------------------------------------------------------
    async def upsert(
        self,
        target: ListRecord,
        items: list[SubscriberInput],
        *,
        mode: str,
        now_ms: int,
        extra: Callable[[Batch, Plan], None] | None = None,
    ) -> Plan:
        """Merge `items` (normalised emails) into the workspace and onto `target`; atomic per call.

        While this workspace's writes keep creating every subscriber they name (a first load, a bulk
        import), the write is planned with no read at all (`assume_new`): its script checks that none of
        the addresses exists, which is the read's answer, so a pass applies exactly what a read-first
        plan would. A write that finds one existing goes on as any conflict does (read, re-plan, apply)
        and the workspace's next write reads first again."""
        return await self.commit_upsert(
            await self.plan_upsert(target, items, mode=mode, now_ms=now_ms, extra=extra)
        )

    async def plan_upsert(
        self,
        target: ListRecord,
        items: list[SubscriberInput],
        *,
        mode: str,
        now_ms: int,
        extra: Callable[[Batch, Plan], None] | None = None,
    ) -> Staged:
        """`upsert`'s first half: planned without a read (`assume_new`) or read first (`stage`)."""
        if _all_new.get(target.workspace, True):
            return self.assume_new(target, items, mode=mode, now_ms=now_ms, extra=extra)
        return await self.stage(target, items, mode=mode, now_ms=now_ms, extra=extra)

    async def commit_upsert(self, staged: Staged) -> Plan:
        """`upsert`'s second half: `commit`, and what the workspace's next write should assume."""
        plan = await self.commit(staged)
        remember_all_new(_all_new, staged.target.workspace, plan)
        return plan

    def assume_new(
        self,
        target: ListRecord,
        items: list[SubscriberInput],
        *,
        mode: str,
        now_ms: int,
        extra: Callable[[Batch, Plan], None] | None = None,
    ) -> Staged:
        """Plan an upsert as if none of the addresses existed, without reading: its batch checks that
        they all are absent from the address index, so it applies only if that was true (else `commit`
        reads and re-plans)."""
        staged = Staged(target, items, mode, now_ms, extra)
        emails = list(dict.fromkeys(item.email for item in items))
        staged.plan, staged.batch = self._plan_on(staged, dict.fromkeys(emails), {}, {})
        return staged

    async def stage(
        self,
        target: ListRecord,
        items: list[SubscriberInput],
        *,
        mode: str,
        now_ms: int,
        extra: Callable[[Batch, Plan], None] | None = None,
    ) -> Staged:
        """Read and plan an upsert without applying it (`commit` does). The import runner stages its
        next batch while the previous one's script runs; if that script changed what this one read,
        the commit's checks fail and it re-reads and re-plans, as any conflict does."""
        return await self.staged(await self.send_read(target, items, mode=mode, now_ms=now_ms, extra=extra))

    async def send_read(
        self,
        target: ListRecord,
        items: list[SubscriberInput],
        *,
        mode: str,
        now_ms: int,
        extra: Callable[[Batch, Plan], None] | None = None,
    ) -> Reading:
        """`stage`'s read sent to Redis, not yet answered: the import runner sends the next batch's read
        ahead of the current batch's write (`send_commit`), so the read is not queued behind it."""
        staged = Staged(target, items, mode, now_ms, extra)
        emails = list(dict.fromkeys(item.email for item in items))
        return Reading(staged, await self._send_read(target.workspace, emails))

    async def staged(self, reading: Reading) -> Staged:
        """The read's answer, and the upsert planned on it."""
        staged = reading.staged
        staged.plan, staged.batch = self._plan_on(staged, *await self._found(reading.read))
        return staged

    async def commit(self, staged: Staged, *, fresh: bool = True) -> Plan:
        """Apply a staged upsert; on a conflict (or if not `fresh`: its first plan is known stale)
        re-read, re-plan and try again."""
        for attempt in range(ATTEMPTS):
            if attempt or not fresh:
                staged.plan, staged.batch = await self._plan_batch(staged)
            if await self.apply(staged.batch):
                return staged.plan
        raise Conflict(f"subscribers of {staged.target.workspace} kept changing")

    async def send_commit(self, staged: Staged) -> PendingReply | None:
        """`commit`'s first attempt sent, not yet answered (`finish_commit`)."""
        return await self.apply.send(staged.batch)

    async def finish_commit(self, staged: Staged, pending: PendingReply | None) -> Plan:
        """The answer to `send_commit`; a conflict goes on as `commit` does (re-read, re-plan, apply)."""
        if await self.apply.outcome(pending):
            return staged.plan
        return await self.commit(staged, fresh=False)

    async def _plan_batch(self, staged: Staged) -> tuple[Plan, Batch]:
        emails = list(dict.fromkeys(item.email for item in staged.items))
        return self._plan_on(staged, *await self._read_by_email(staged.target.workspace, emails))

    def _plan_on(
        self,
        staged: Staged,
        index: dict[str, bytes | None],
        raws: dict[str, bytes | None],
        records: dict[str, SubscriberRecord],
    ) -> tuple[Plan, Batch]:
        workspace = staged.target.workspace
        plan = plan_upsert(staged.target, staged.items, records, mode=staged.mode, now_ms=staged.now_ms)
        batch = Batch()
        batch.expect(keyspace.subscriber_emails(workspace), index)
        batch.expect(keyspace.subscribers(workspace), {i: raws[i] for i in plan.records if i in raws})
        self._write_plan(batch, workspace, plan)
        if staged.extra is not None:
            staged.extra(batch, plan)
        return plan, batch

    @staticmethod
    def _write_plan(batch: Batch, workspace: str, plan: Plan) -> None:
        if plan.records:
            encode = subscriber_encoder.encode
            encoded = {i: lua_string(encode(r)) for i, r in plan.records.items()}
            batch.hset(keyspace.subscribers(workspace), encoded)
        if plan.new_emails:
            batch.hset(keyspace.subscriber_emails(workspace), plan.new_emails)
        for (list_id, old, new), ids in plan.moves.items():
            if old is not None:
                batch.spread("ZREM", keyspace.list_members(workspace, list_id, old), ids)
            pairs = [x for i in ids for x in (0, i)]
            batch.spread("ZADD", keyspace.list_members(workspace, list_id, new), pairs)
        append_new_members(batch, list(plan.new_members.values()))
        append_events(batch, plan.events)

    # --- one subscriber ----------------------------------------------------------------------------------
    async def change(
        self,
        workspace: str,
        subscriber_id: str,
        mutate: Callable[[SubscriberRecord, Batch], list[ChangeEvent] | None],
    ) -> SubscriberRecord | None:
        """Read, `mutate` (in place; adds its own commands; returns the events, or None for no change),
        write back atomically. None if there is no such subscriber."""
        key = keyspace.subscribers(workspace)
        for _ in range(ATTEMPTS):
            [raw] = await self.get_raw(workspace, [subscriber_id])
            if raw is None:
                return None
            record = subscriber_decoder.decode(raw)
            batch = Batch()
            batch.expect(key, {subscriber_id: raw})
            events = mutate(record, batch)
            if events is None:
                return record
            if record.id:  # an erasure blanks the id: nothing to write back
                batch.hset(key, {subscriber_id: subscriber_encoder.encode(record)})
            append_events(batch, events)
            if await self.apply(batch):
                return record
        raise Conflict(f"subscriber {subscriber_id} kept changing")

    async def set_status(
        self, workspace: str, subscriber_id: str, list_id: str, status: str, now_ms: int
    ) -> SubscriberRecord | None:
        """Move a member of `list_id` to `status` (unsubscribe, confirm); a non-member stays one."""

        def mutate(record: SubscriberRecord, batch: Batch) -> list[ChangeEvent] | None:
            plan = Plan()
            member = record.lists.get(list_id)
            if member is None or member.status == status:
                return None
            set_membership(plan, record, workspace, list_id, status, now_ms)
            self._write_moves(batch, workspace, plan)
            return plan.events

        return await self.change(workspace, subscriber_id, mutate)

    async def remove_from_list(self, workspace: str, subscriber_id: str, list_id: str, now_ms: int) -> bool:
        """Drop the membership (no unsubscribe, no suppression). False if it was not a member.

        Appends `list.removed` so the segments mirror drops the membership too (its row becomes
        `removed` at the new version, which no older event can overwrite)."""
        removed = False

        def mutate(record: SubscriberRecord, batch: Batch) -> list[ChangeEvent] | None:
            nonlocal removed
            member = record.lists.pop(list_id, None)
            if member is None:
                return None
            removed = True
            batch.command("ZREM", keyspace.list_members(workspace, list_id, member.status), subscriber_id)
            return [member_event(record, workspace, list_id, "removed", now_ms)]

        await self.change(workspace, subscriber_id, mutate)
        return removed

    async def update(
        self, workspace: str, subscriber_id: str, fields: dict[str, Any], now_ms: int
    ) -> SubscriberRecord | None:
        """PATCH: `fields` may hold email (normalised), name, attributes (a patch), status."""

        def mutate(record: SubscriberRecord, batch: Batch) -> list[ChangeEvent] | None:
            changed = merge_fields(record, fields.get("name"), fields.get("attributes", {}))
            if "name" in fields and fields["name"] is None and record.name is not None:
                record.name, changed = None, True
            if "status" in fields and fields["status"] != record.status:
                record.status, changed = fields["status"], True
            new_email = fields.get("email")
            if new_email is not None and new_email != record.email:
                emails = keyspace.subscriber_emails(workspace)
                batch.expect(emails, {new_email: None})
                batch.command("HDEL", emails, record.email)
                batch.command("HSET", emails, new_email, record.id)
                record.email, changed = new_email, True
            if not changed:
                return None
            return [subscriber_event("subscriber.updated", record, workspace, now_ms)]

        email = fields.get("email")
        if email is not None:
            owner = await self.id_for(workspace, email)
            if owner is not None and owner != subscriber_id:
                raise AddressTaken(email)
        return await self.change(workspace, subscriber_id, mutate)

    async def erase(self, workspace: str, subscriber_id: str, now_ms: int) -> SubscriberRecord | None:
        """Remove the person: record, address index, every membership; `subscriber.deleted` (no email)."""

        def mutate(record: SubscriberRecord, batch: Batch) -> list[ChangeEvent] | None:
            batch.command("HDEL", keyspace.subscribers(workspace), record.id)
            batch.command("HDEL", keyspace.subscriber_emails(workspace), record.email)
            for list_id, member in record.lists.items():
                batch.command("ZREM", keyspace.list_members(workspace, list_id, member.status), record.id)
            event = subscriber_event("subscriber.deleted", record, workspace, now_ms)
            event.data = {"subscriber": record.id, "version": record.version}
            erased.append(msgspec_copy(record))
            record.id = ""  # tells `change` not to write the record back
            return [event]

        erased: list[SubscriberRecord] = []
        await self.change(workspace, subscriber_id, mutate)
        return erased[0] if erased else None

    @staticmethod
    def _write_moves(batch: Batch, workspace: str, plan: Plan) -> None:
        for (list_id, old, new), ids in plan.moves.items():
            for subscriber_id in ids:
                if old is not None:
                    batch.command("ZREM", keyspace.list_members(workspace, list_id, old), subscriber_id)
                batch.command("ZADD", keyspace.list_members(workspace, list_id, new), 0, subscriber_id)


def msgspec_copy(record: SubscriberRecord) -> SubscriberRecord:
    return subscriber_decoder.decode(subscriber_encoder.encode(record))


def append_new_members(batch: Batch, chunks: list[NewMembers]) -> None:
    """The created subscribers' events as one columnar entry per chunk (`schemas/subscriber_chunks.py`),
    in the write's own script: ~60 bytes of msgpack per subscriber instead of two events of ~250."""
    for chunk in chunks:
        if chunk.ids:
            blob = lua_string(chunk_encoder.encode(chunk))
            batch.command("XADD", keyspace.EVENT_STREAM, "*", keyspace.EVENT_CHUNK_FIELD, blob)


def append_events(batch: Batch, events: list[ChangeEvent]) -> None:
    """All of a write's events as one entry of the event stream, in the write's own script."""
    if events:
        batch.command(
            "XADD", keyspace.EVENT_STREAM, "*", keyspace.EVENT_FIELD, event_msgpack_encoder.encode(events)
        )


__all__ = ["AddressTaken", "Conflict", "Reading", "Staged", "SubscriberStore", "member_event"]
