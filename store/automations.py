"""Automation records in Redis (the only writer of the automation keys but the runs').

An automation is a head (`AutomationRecord`: name, status, newest version) and its immutable versions
(`Definition`, one hash field each). An update that changes the trigger, the steps or the reentry rule
adds a version; runs carry the version they started on and read only that one, so a running run
finishes on the definition it began with. Active automations are named in AUTOMATIONS_LIVE (what the
runner's triggers look at) and, with a schedule trigger, in AUTOMATION_SCHEDULES with their next time.
"""

from __future__ import annotations

from typing import cast

import msgspec
import redis.asyncio as aioredis

from schemas.automations import (
    AutomationRecord,
    Definition,
    ScheduleTrigger,
    definition_decoder,
    record_decoder,
)
from store import keyspace, pages
from store.replies import as_bytes, as_text

_encode = msgspec.msgpack.Encoder().encode

# An api trigger's reads in one round trip (ingress/routes/automations.py): KEYS[1] the workspace's address
# index, KEYS[2] its subscriber records, KEYS[3..] the heads of the automations triggered; ARGV[1] a msgpack
# array of addresses. Returns {heads ('' where absent), subscriber ids ('' where none), their records
# ('' where none)}. Reads only: the subscriber keys stay store/subscribers.py's to write.
_TRIGGER_LOOKUP = """
local emails = cmsgpack.unpack(ARGV[1])
local heads, ids, records = {}, {}, {}
for i = 3, #KEYS do heads[#heads + 1] = redis.call('GET', KEYS[i]) or '' end
for i = 1, #emails do
  local id = redis.call('HGET', KEYS[1], emails[i])
  ids[i] = id or ''
  records[i] = id and (redis.call('HGET', KEYS[2], id) or '') or ''
end
return {heads, ids, records}
"""


def member(workspace: str, automation_id: str) -> str:
    return f"{workspace}|{automation_id}"


def split_member(raw: bytes | str) -> tuple[str, str]:
    workspace, _, automation_id = as_text(raw).partition("|")
    return workspace, automation_id


class AutomationStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._lookup = redis.register_script(_TRIGGER_LOOKUP)

    async def trigger_lookup(
        self, workspace: str, automation_ids: list[str], emails: list[str]
    ) -> tuple[list[AutomationRecord | None], list[tuple[str, bytes] | None]]:
        """The heads of `automation_ids` and, per address, (subscriber id, raw record) — one script call,
        so an api trigger's checks cost one round trip, not a pipeline and then a read of the records."""
        keys = [keyspace.subscriber_emails(workspace), keyspace.subscribers(workspace)]
        keys += [keyspace.automation(workspace, a) for a in automation_ids]
        heads, ids, records = await self._lookup(keys=keys, args=[_encode(emails)])
        found_heads = [record_decoder.decode(as_bytes(raw)) if raw else None for raw in heads]
        subscribers = [
            (as_text(i), as_bytes(r)) if i and r else None for i, r in zip(ids, records, strict=True)
        ]
        return found_heads, subscribers

    async def create(self, record: AutomationRecord, first: Definition, *, next_fire_ms: int | None) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keyspace.automation(record.workspace, record.id), _encode(record))
            pipe.hset(
                keyspace.automation_versions(record.workspace, record.id), str(first.version), _encode(first)
            )
            pages.index_add(pipe, keyspace.automation_index(record.workspace), record.id)
            _live(pipe, record, first, next_fire_ms)
            await pipe.execute()

    async def save(
        self,
        record: AutomationRecord,
        new: Definition | None,
        current: Definition,
        *,
        next_fire_ms: int | None,
    ) -> bool:
        """Write the head (and a new version) if the head still names `current`'s version and the
        automation was not deleted meanwhile; False otherwise (the caller re-reads)."""
        head = keyspace.automation(record.workspace, record.id)
        written = False

        async def write(pipe: aioredis.client.Pipeline) -> None:
            nonlocal written
            raw = await pipe.get(head)
            if raw is None or record_decoder.decode(as_bytes(raw)).version != current.version:
                return
            pipe.multi()
            pipe.set(head, _encode(record))
            if new is not None:
                pipe.hset(
                    keyspace.automation_versions(record.workspace, record.id), str(new.version), _encode(new)
                )
            _live(pipe, record, new or current, next_fire_ms)
            written = True

        await self.redis.transaction(write, head)
        return written

    async def get(self, workspace: str, automation_id: str) -> AutomationRecord | None:
        raw = await self.redis.get(keyspace.automation(workspace, automation_id))
        return None if raw is None else record_decoder.decode(as_bytes(raw))

    async def version(self, workspace: str, automation_id: str, version: int) -> Definition | None:
        raw = await self.redis.hget(keyspace.automation_versions(workspace, automation_id), str(version))
        return None if raw is None else definition_decoder.decode(as_bytes(raw))

    async def page(
        self, workspace: str, *, limit: int, after: str | None
    ) -> tuple[list[tuple[AutomationRecord, Definition]], bool]:
        ids, has_more = await pages.newest_first(
            self.redis, keyspace.automation_index(workspace), limit=limit, after=after
        )
        found = []
        for automation_id in ids:
            head = await self.get(workspace, automation_id)
            if head is None:
                continue
            definition = await self.version(workspace, automation_id, head.version)
            if definition is not None:
                found.append((head, definition))
        return found, has_more

    async def delete(self, workspace: str, automation_id: str) -> bool:
        """The automation, its versions and every run of it (a run mid-step finds its record gone and
        writes nothing)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keyspace.automation(workspace, automation_id))
            pipe.zrem(keyspace.automation_index(workspace), automation_id)
            pipe.delete(
                keyspace.automation_versions(workspace, automation_id),
                keyspace.automation_runs(workspace, automation_id),
                keyspace.automation_due(workspace, automation_id),
                keyspace.automation_run_order(workspace, automation_id),
                keyspace.automation_live_runs(workspace, automation_id),
                keyspace.automation_segment_seen(workspace, automation_id),
            )
            pipe.srem(keyspace.AUTOMATIONS_LIVE, member(workspace, automation_id))
            pipe.srem(keyspace.AUTOMATIONS_ACTIVE, member(workspace, automation_id))
            pipe.zrem(keyspace.AUTOMATION_SCHEDULES, member(workspace, automation_id))
            deleted, *_ = await pipe.execute()
        return bool(deleted)

    # --- what the runner's triggers read -------------------------------------------------------------
    async def live(self) -> list[tuple[str, str]]:
        return [split_member(raw) for raw in await self.redis.smembers(keyspace.AUTOMATIONS_LIVE)]

    async def due_schedules(self, now_ms: int, limit: int = 100) -> list[tuple[str, str, int]]:
        raws = await self.redis.zrangebyscore(
            keyspace.AUTOMATION_SCHEDULES, "-inf", now_ms, start=0, num=limit, withscores=True
        )
        found = []
        for pair in raws:
            raw, score = cast(tuple[bytes, float], pair)
            workspace, automation_id = split_member(raw)
            found.append((workspace, automation_id, int(score)))
        return found

    async def advance_schedule(self, workspace: str, automation_id: str, fired_ms: int, next_ms: int) -> bool:
        """Move the schedule from the fire time just handled to the next one; False if someone else did
        (or the automation was paused or changed meanwhile)."""
        key, name = keyspace.AUTOMATION_SCHEDULES, member(workspace, automation_id)
        done = False

        async def move(pipe: aioredis.client.Pipeline) -> None:
            nonlocal done
            score = await pipe.zscore(key, name)
            if score is None or int(score) != fired_ms:
                return
            pipe.multi()
            pipe.zadd(key, {name: next_ms})
            done = True

        await self.redis.transaction(move, key)
        return done

    async def not_seen_in_segment(
        self, workspace: str, automation_id: str, subscriber_ids: list[str]
    ) -> list[str]:
        """Of `subscriber_ids` (members of the segment now), those not seen in it before."""
        if not subscriber_ids:
            return []
        key = keyspace.automation_segment_seen(workspace, automation_id)
        seen = await self.redis.smismember(key, subscriber_ids)
        return [s for s, known in zip(subscriber_ids, seen, strict=True) if not known]

    async def mark_seen_in_segment(
        self, workspace: str, automation_id: str, subscriber_ids: list[str]
    ) -> None:
        """Marked after their runs were started (run ids derived from the entry, so a crash in between
        starts nothing twice when they are found again)."""
        if subscriber_ids:
            await self.redis.sadd(keyspace.automation_segment_seen(workspace, automation_id), *subscriber_ids)


def _live(
    pipe: aioredis.client.Pipeline, record: AutomationRecord, definition: Definition, next_fire: int | None
) -> None:
    name = member(record.workspace, record.id)
    if record.status == "active":
        pipe.sadd(keyspace.AUTOMATIONS_LIVE, name)
    else:
        pipe.srem(keyspace.AUTOMATIONS_LIVE, name)
    if (
        record.status == "active"
        and isinstance(definition.trigger, ScheduleTrigger)
        and next_fire is not None
    ):
        pipe.zadd(keyspace.AUTOMATION_SCHEDULES, {name: next_fire})
    else:
        pipe.zrem(keyspace.AUTOMATION_SCHEDULES, name)
