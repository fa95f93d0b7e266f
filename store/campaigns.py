"""Campaigns in Redis: the one owner of every campaign key (`store/keyspace.py`, "campaigns").

Per campaign one hash holds the configuration (`r`, msgpack `CampaignRecord`), the status, the runner's
checkpoint and the counters:

    r          the record            status   draft|scheduled|sending|paused|sent|cancelled|failed
    phase      resolve|exclude|pack|test|winner|send|settle (the runner's)   src, cur   source index, cursor
    packed pg  1 once the snapshot is packed (`pack_pages`): chunks come from its pages and message ids
               from the recipient's position in it (absent: the zset and ids hashed from the subscriber, as
               for campaigns launched before); the next page number while it is being packed
    slices     how many slices the test/send phases are split into (absent: 1)   bounds  their upper ids
    cur:<j>    slice j's cursor (slice 0's is `cur`)    done:<j>  the phase slice j finished
    resv:<j>   the recipients granted to slice j's chunk not yet committed (the in-flight window)
    rt rl      the campaign's rate bucket: tokens, time of the last grant (ms)
    waiting    why nothing is sent now (outside_window, servers_paused, ...) or absent
    failure    why the campaign is `failed` (template_deleted, all_recipients_failed) or absent
    launch_ms  done_ms  send_at_ms  test_done_ms  winner  round (retry-failed calls)
    n:audience n:done n:enq n:rej n:skip            counted by the runner with its checkpoint
    n:sent n:delivered n:failed n:suppressed n:canceled   counted from message events, with their XACK

Every status change is one Lua script (`_TRANSITION`): it checks the current status is one the change
may leave, writes the new one (and any fields that go with it) and appends the campaign event to
`m:events`, so either all of it happens or none. A runner checkpoint and the counters of the chunk it
finished are one MULTI: a chunk is counted exactly when its cursor advances.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from schemas.campaigns import (
    FINISHED,
    CampaignRecord,
    FailureRecord,
    failure_decoder,
    failure_encoder,
    record_decoder,
    record_encoder,
)
from schemas.events import Event, event_msgpack_encoder
from store import keyspace, pages
from store.replies import as_bytes, as_text, hash_fields

# Counters the runner commits with its checkpoint, and those the event consumer commits with its XACK.
RUNNER_COUNTERS = ("n:audience", "n:done", "n:enq", "n:rej", "n:skip")
EVENT_COUNTERS = {
    "message.sent": "n:sent",
    "message.delivered": "n:delivered",
    "message.failed": "n:failed",
    "message.suppressed": "n:suppressed",
    "message.canceled": "n:canceled",
}

# A campaign that finishes (sent, cancelled, failed) forgets its audience snapshot in the same script:
# no crash between the two can leave it behind, and nothing else would ever drop it (the campaign leaves
# the active set). Its size stays in `n:audience`. UNLINK: Redis frees a million ids off its main thread.
_TRANSITION = (
    "local finished = {"
    + ", ".join(f"['{s}'] = true" for s in FINISHED)
    + """}
-- KEYS: campaign hash, active set, event stream, then the snapshot's zset, pages and page firsts
-- ARGV: allowed (space separated), new status, active op (add|rem|-), member, events blob ('' none),
--       fields to delete (space separated), then field/value pairs to set
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {0, ''} end
local allowed = false
for s in string.gmatch(ARGV[1], '%S+') do if s == current then allowed = true end end
if not allowed then return {0, current} end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
if finished[ARGV[2]] then redis.call('UNLINK', KEYS[4], KEYS[5], KEYS[6]) end
for f in string.gmatch(ARGV[6], '%S+') do redis.call('HDEL', KEYS[1], f) end
if #ARGV > 6 then redis.call('HSET', KEYS[1], unpack(ARGV, 7)) end
if ARGV[3] == 'add' then redis.call('SADD', KEYS[2], ARGV[4]) end
if ARGV[3] == 'rem' then redis.call('SREM', KEYS[2], ARGV[4]) end
if ARGV[5] ~= '' then redis.call('XADD', KEYS[3], '*', 'b', ARGV[5]) end
return {1, current}
"""
)

_RETRY = """
-- KEYS: campaign hash, failed zset, failures hash, retry zset, active set, retried failures hash
-- ARGV: allowed statuses, member
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {0, ''} end
local allowed = false
for s in string.gmatch(ARGV[1], '%S+') do if s == current then allowed = true end end
if not allowed then return {0, current} end
local n = redis.call('ZCARD', KEYS[2])
if n == 0 then return {1, current, 0} end
redis.call('ZUNIONSTORE', KEYS[4], 2, KEYS[4], KEYS[2])
-- The failures move with their recipients: a retried message's id is derived from its failure, so a
-- retry chunk replayed after a crash (even after another retry-failed) derives the same ids.
local cursor = '0'
repeat
  local page = redis.call('HSCAN', KEYS[3], cursor, 'COUNT', 500)
  cursor = page[1]
  if #page[2] > 0 then redis.call('HSET', KEYS[6], unpack(page[2])) end
until cursor == '0'
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HINCRBY', KEYS[1], 'n:done', -n)
redis.call('HINCRBY', KEYS[1], 'round', 1)
if current == 'sent' or current == 'failed' then
  redis.call('HSET', KEYS[1], 'status', 'sending', 'phase', 'retry', 'cur', '')
  redis.call('HDEL', KEYS[1], 'done_ms', 'failure')
elseif redis.call('HGET', KEYS[1], 'phase') == 'settle' then
  redis.call('HSET', KEYS[1], 'phase', 'retry', 'cur', '')
end
redis.call('SADD', KEYS[5], ARGV[2])
return {1, current, n}
"""


_GRANT = """
-- KEYS: campaign hash
-- ARGV: slice, slices, wanted, in-flight window, per_second (0: no rate), now (ms)
-- How many recipients slice ARGV[1]'s next chunk may take: only while `sending`; the window counts the
-- queued messages (enqueued, not yet settled) and every other slice's granted, uncommitted chunk; the
-- rate is one bucket per campaign (one second of burst), shared by every runner. The grant is kept as
-- the slice's reservation (`resv:<slice>`) until its chunk commits (`commit_chunk` deletes it); a chunk
-- replayed after a crash overwrites it.
local h = KEYS[1]
if redis.call('HGET', h, 'status') ~= 'sending' then return {0, 'status'} end
local function n(f) return tonumber(redis.call('HGET', h, f) or '0') or 0 end
local settled = n('n:sent') + n('n:failed') + n('n:suppressed') + n('n:canceled')
local queued = math.max(0, n('n:enq') - settled)
local slice = tonumber(ARGV[1])
local others = 0
for j = 0, tonumber(ARGV[2]) - 1 do
  if j ~= slice then others = others + n('resv:' .. j) end
end
local room = tonumber(ARGV[4]) - queued - others
if room <= 0 then return {0, 'window'} end
local grant = math.min(tonumber(ARGV[3]), room)
local rate = tonumber(ARGV[5])
if rate > 0 then
  local now = tonumber(ARGV[6])
  local tokens = rate
  local last = redis.call('HGET', h, 'rl')
  if last then tokens = math.min(rate, n('rt') + math.max(0, now - tonumber(last)) / 1000 * rate) end
  if tokens < 1 then
    redis.call('HSET', h, 'rt', tostring(tokens), 'rl', now)
    return {0, 'rate'}
  end
  grant = math.min(grant, math.floor(tokens))
  redis.call('HSET', h, 'rt', tostring(tokens - grant), 'rl', now)
end
redis.call('HSET', h, 'resv:' .. slice, grant)
return {grant, ''}
"""


class CampaignState(msgspec.Struct, kw_only=True):
    record: CampaignRecord
    status: str
    fields: dict[str, str]

    def number(self, name: str) -> int:
        return int(self.fields.get(name) or 0)

    def text(self, name: str) -> str | None:
        return self.fields.get(name) or None


class Transition(msgspec.Struct):
    done: bool
    previous: str  # the status before (or "" where there is no such campaign)


def _snapshot_keys(workspace: str, campaign_id: str) -> tuple[str, str, str]:
    return (
        keyspace.campaign_audience(workspace, campaign_id),
        keyspace.campaign_audience_pages(workspace, campaign_id),
        keyspace.campaign_audience_firsts(workspace, campaign_id),
    )


def member(workspace: str, campaign_id: str) -> str:
    return f"{workspace}|{campaign_id}"


# The audience snapshot is a lex zset while it is built (resolve adds, exclude removes: a set, each
# subscriber once), ~128 B a subscriber in Redis. Once final it is packed (`pack_pages`, `finish_pack`):
# pages of AUDIENCE_PAGE ids in order (a hash of msgpack lists) and each page's first id (a list), ~32 B a
# subscriber, and the zset goes. A packed snapshot never changes again, so a runner keeps its page firsts.
AUDIENCE_PAGE = 500
_FIRSTS_KEPT = 64  # campaigns whose page firsts a store keeps (a few dozen KB each at 1M)
_encode_ids = msgspec.msgpack.Encoder().encode
_decode_ids = msgspec.msgpack.Decoder(list[str]).decode


class CampaignStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._firsts: dict[tuple[str, str], list[str]] = {}
        self._transition = redis.register_script(_TRANSITION)
        self._retry = redis.register_script(_RETRY)
        self._grant = redis.register_script(_GRANT)

    # --- records -----------------------------------------------------------------------------------
    async def create(self, record: CampaignRecord) -> None:
        key = keyspace.campaign(record.workspace, record.id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"r": record_encoder.encode(record), "status": "draft"})
            pages.index_add(pipe, keyspace.campaign_index(record.workspace), record.id)
            await pipe.execute()

    async def get(self, workspace: str, campaign_id: str) -> CampaignState | None:
        raw = hash_fields(await self.redis.hgetall(keyspace.campaign(workspace, campaign_id)))
        return _state(raw)

    async def many(self, workspace: str, ids: Sequence[str]) -> list[CampaignState]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for campaign_id in ids:
                pipe.hgetall(keyspace.campaign(workspace, campaign_id))
            found = await pipe.execute()
        states = [_state(hash_fields(raw)) for raw in found]
        return [s for s in states if s is not None]

    async def page(
        self, workspace: str, *, limit: int, after: str | None
    ) -> tuple[list[CampaignState], bool]:
        ids, has_more = await pages.newest_first(
            self.redis, keyspace.campaign_index(workspace), limit=limit, after=after
        )
        return await self.many(workspace, ids), has_more

    async def save_draft(self, record: CampaignRecord) -> Transition:
        """Store a changed draft; refused (done=False) once the campaign left `draft`."""
        return await self.transition(
            record.workspace, record.id, ("draft",), "draft", fields={"r": record_encoder.encode(record)}
        )

    async def transition(
        self,
        workspace: str,
        campaign_id: str,
        allowed: Iterable[str],
        to: str,
        *,
        fields: Mapping[str, bytes | str | int] | None = None,
        events: Sequence[Event] = (),
        active: str | None = None,
        drop: Sequence[str] = (),
    ) -> Transition:
        """`allowed` → `to` in one script, with `fields`, the `events` and the active-set change."""
        pairs: list[bytes | str | int] = []
        for name, value in (fields or {}).items():
            pairs += [name, value]
        blob = event_msgpack_encoder.encode(list(events)) if events else b""
        reply = await self._transition(
            keys=[
                keyspace.campaign(workspace, campaign_id),
                keyspace.CAMPAIGNS_ACTIVE,
                keyspace.EVENT_STREAM,
                *_snapshot_keys(workspace, campaign_id),
            ],
            args=[
                " ".join(allowed),
                to,
                active or "-",
                member(workspace, campaign_id),
                blob,
                " ".join(drop),
                *pairs,
            ],
        )
        return Transition(bool(int(reply[0])), as_text(reply[1]))

    # --- the runner's side ---------------------------------------------------------------------------
    async def active(self) -> list[tuple[str, str]]:
        return await self._campaigns(keyspace.CAMPAIGNS_ACTIVE)

    async def deactivate(self, workspace: str, campaign_id: str) -> None:
        await self.redis.srem(keyspace.CAMPAIGNS_ACTIVE, member(workspace, campaign_id))

    async def archiving(self) -> list[tuple[str, str]]:
        """The campaigns whose settled messages the archiver packs (actors/campaigns/archiver.py)."""
        return await self._campaigns(keyspace.CAMPAIGNS_ARCHIVING)

    async def _campaigns(self, key: str) -> list[tuple[str, str]]:
        """The (workspace, campaign) members of a set of `member`s, sorted."""
        pairs = [as_text(m).split("|", 1) for m in await self.redis.smembers(key)]
        return sorted((p[0], p[1]) for p in pairs if len(p) == 2)

    async def archived(self, workspace: str, campaign_id: str) -> None:
        """Out of the archiver's set: the campaign is finished and every bucket of it archived."""
        await self.redis.srem(keyspace.CAMPAIGNS_ARCHIVING, member(workspace, campaign_id))

    async def set_fields(
        self, workspace: str, campaign_id: str, fields: Mapping[str, bytes | str | int]
    ) -> None:
        await self.redis.hset(keyspace.campaign(workspace, campaign_id), mapping=_mapping(fields))

    async def clear_fields(self, workspace: str, campaign_id: str, *names: str) -> None:
        await self.redis.hdel(keyspace.campaign(workspace, campaign_id), *names)

    async def snapshot_add(
        self, workspace: str, campaign_id: str, ids: Sequence[str], checkpoint: Mapping[str, str | int]
    ) -> None:
        """Add resolved subscriber ids to the audience and advance the resolve cursor, together (a
        replay of the chunk adds nothing: the snapshot is a set)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            if ids:
                pipe.zadd(keyspace.campaign_audience(workspace, campaign_id), dict.fromkeys(ids, 0))
            pipe.hset(keyspace.campaign(workspace, campaign_id), mapping=_mapping(checkpoint))
            await self._write_snapshot(pipe, workspace, campaign_id)

    async def snapshot_remove(
        self, workspace: str, campaign_id: str, ids: Sequence[str], checkpoint: Mapping[str, str | int]
    ) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            if ids:
                pipe.zrem(keyspace.campaign_audience(workspace, campaign_id), *ids)
            pipe.hset(keyspace.campaign(workspace, campaign_id), mapping=_mapping(checkpoint))
            await self._write_snapshot(pipe, workspace, campaign_id)

    async def pack_pages(
        self,
        workspace: str,
        campaign_id: str,
        *,
        page: int,
        ids: Sequence[str],
        checkpoint: Mapping[str, str | int],
    ) -> None:
        """Pages `page`, `page + 1`, ... of the packed snapshot from `ids` (the zset's next ids, in order;
        every page full but the last), with the pack cursor, in one MULTI: a replayed step writes the same
        pages, or found them written and its cursor moved."""
        pages = keyspace.campaign_audience_pages(workspace, campaign_id)
        firsts = keyspace.campaign_audience_firsts(workspace, campaign_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            for n, start in enumerate(range(0, len(ids), AUDIENCE_PAGE)):
                part = list(ids[start : start + AUDIENCE_PAGE])
                pipe.hset(pages, str(page + n), _encode_ids(part))
                pipe.rpush(firsts, part[0])
            pipe.hset(keyspace.campaign(workspace, campaign_id), mapping=_mapping(checkpoint))
            await self._write_snapshot(pipe, workspace, campaign_id)

    async def finish_pack(self, workspace: str, campaign_id: str, fields: Mapping[str, str | int]) -> None:
        """Every page written: the zset goes, and `packed` and `fields` (the next phase) are set."""
        key = keyspace.campaign(workspace, campaign_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.unlink(keyspace.campaign_audience(workspace, campaign_id))
            pipe.hset(key, mapping=_mapping({**fields, "packed": 1}))
            pipe.hdel(key, "pg")
            await self._write_snapshot(pipe, workspace, campaign_id)

    async def _write_snapshot(self, pipe: aioredis.client.Pipeline, workspace: str, campaign_id: str) -> None:
        """Run a MULTI that writes the snapshot, reading the campaign's status in it. A runner's step may
        write after the campaign finished (a cancel between its read of the campaign and its write): the
        finishing script dropped the snapshot before, so the step drops what it wrote."""
        pipe.hget(keyspace.campaign(workspace, campaign_id), "status")
        status = (await pipe.execute())[-1]
        if status is not None and as_text(status) in FINISHED:
            self._firsts.pop((workspace, campaign_id), None)
            await self.redis.unlink(*_snapshot_keys(workspace, campaign_id))

    async def audience_size(self, workspace: str, campaign_id: str) -> int:
        return int(await self.redis.zcard(keyspace.campaign_audience(workspace, campaign_id)))

    async def audience_chunk(
        self,
        workspace: str,
        campaign_id: str,
        *,
        after: str,
        count: int,
        retry: bool = False,
        upto: str | None = None,
    ) -> list[str]:
        """The next `count` ids after `after`, up to `upto` included (a slice's upper bound; None: to the
        end), from the snapshot's zset (being built, or not packed) or the retry set."""
        key = (keyspace.campaign_retry if retry else keyspace.campaign_audience)(workspace, campaign_id)
        low = f"({after}" if after else "-"
        high = f"[{upto}" if upto else "+"
        return [as_text(i) for i in await self.redis.zrangebylex(key, low, high, start=0, num=count)]

    async def packed_chunk(
        self, workspace: str, campaign_id: str, *, after: str, count: int, upto: str | None
    ) -> list[tuple[str, int]]:
        """`audience_chunk` of a packed snapshot, each id with its position in it: page * AUDIENCE_PAGE +
        its index in the page, unique and rising in snapshot order (the snapshot never changes again)."""
        # Python orders str by code point, as Redis orders the zset by UTF-8 bytes: the same order.
        firsts = await self._page_firsts(workspace, campaign_id)
        page = max(0, bisect.bisect_right(firsts, after) - 1) if after else 0
        key = keyspace.campaign_audience_pages(workspace, campaign_id)
        found: list[tuple[str, int]] = []
        span = 1  # first the page holding the cursor: a small grant (a paced campaign) needs no more
        while page < len(firsts) and len(found) < count:
            numbers = range(page, min(len(firsts), page + span))
            raws = await self.redis.hmget(key, [str(p) for p in numbers])
            for number, raw in zip(numbers, raws, strict=True):
                if raw is None:
                    raise RuntimeError(f"campaign {campaign_id}: a page of its packed snapshot is missing")
                ids = _decode_ids(as_bytes(raw))
                start = bisect.bisect_right(ids, after) if after else 0  # only the first page has any
                end = bisect.bisect_right(ids, upto) if upto else len(ids)
                base = number * AUDIENCE_PAGE
                found += [(ids[i], base + i) for i in range(start, end)]
                if end < len(ids) or len(found) >= count:  # the slice's bound, or enough
                    return found[:count]
            page = numbers.stop
            span = -(-(count - len(found)) // AUDIENCE_PAGE)  # then every page still needed at once
        return found[:count]

    async def _page_firsts(self, workspace: str, campaign_id: str) -> list[str]:
        key = (workspace, campaign_id)
        found = self._firsts.get(key)
        if found is None:
            firsts = keyspace.campaign_audience_firsts(workspace, campaign_id)
            found = [as_text(i) for i in await self.redis.lrange(firsts, 0, -1)]
            if len(self._firsts) >= _FIRSTS_KEPT:
                self._firsts.pop(next(iter(self._firsts)))
            self._firsts[key] = found
        return found

    async def slice_bounds(self, workspace: str, campaign_id: str, slices: int) -> list[str]:
        """The upper ids of the first `slices - 1` of `slices` equal slices of the final snapshot (lex
        order; the last slice runs to the end): read once, when the sending phases begin."""
        key = keyspace.campaign_audience(workspace, campaign_id)
        size = int(await self.redis.zcard(key))
        async with self.redis.pipeline(transaction=False) as pipe:
            for j in range(1, slices):
                rank = size * j // slices - 1
                pipe.zrange(key, rank, rank)
            found = await pipe.execute()
        return [as_text(ids[0]) for ids in found if ids]

    async def grant(
        self,
        workspace: str,
        campaign_id: str,
        *,
        slice_index: int,
        slices: int,
        wanted: int,
        in_flight: int,
        per_second: int | None,
        now_ms: int,
    ) -> tuple[int, str]:
        """How many recipients slice `slice_index`'s next chunk may take, and why none ('' when some):
        'status' (not `sending`), 'window' (the in-flight window is full), 'rate'. See `_GRANT`."""
        reply = await self._grant(
            keys=[keyspace.campaign(workspace, campaign_id)],
            args=[slice_index, slices, wanted, in_flight, per_second or 0, now_ms],
        )
        return int(reply[0]), as_text(reply[1])

    async def commit_chunk(
        self,
        workspace: str,
        campaign_id: str,
        *,
        checkpoint: Mapping[str, str | int],
        counts: Mapping[str, int],
        failures: Sequence[tuple[str, FailureRecord]] = (),
        retried: Sequence[str] = (),
        slice_index: int = 0,
        refund: int = 0,
        archiving: bool = False,
    ) -> None:
        """One chunk done: its cursor, its counts and its failed recipients, in one MULTI, which also ends
        its slice's reservation of the in-flight window and gives back the rate tokens granted for
        recipients that were not sent (skipped). `archiving`: the chunk was sent by position, and the
        campaign joins the archiver's set (actors/campaigns/archiver.py)."""
        key = keyspace.campaign(workspace, campaign_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            if checkpoint:
                pipe.hset(key, mapping=_mapping(checkpoint))
            if archiving:
                pipe.sadd(keyspace.CAMPAIGNS_ARCHIVING, member(workspace, campaign_id))
            pipe.hdel(key, f"resv:{slice_index}")
            if refund:
                pipe.hincrbyfloat(key, "rt", refund)
            for name, value in counts.items():
                if value:
                    pipe.hincrby(key, name, value)
            if failures:
                pipe.zadd(keyspace.campaign_failed(workspace, campaign_id), {sub: 0 for sub, _ in failures})
                pipe.hset(
                    keyspace.campaign_failures(workspace, campaign_id),
                    mapping={sub: failure_encoder.encode(f) for sub, f in failures},
                )
            if retried:
                pipe.zrem(keyspace.campaign_retry(workspace, campaign_id), *retried)
                pipe.hdel(keyspace.campaign_retry_why(workspace, campaign_id), *retried)
            await pipe.execute()

    async def retry_failed(self, workspace: str, campaign_id: str) -> tuple[Transition, int]:
        reply = await self._retry(
            keys=[
                keyspace.campaign(workspace, campaign_id),
                keyspace.campaign_failed(workspace, campaign_id),
                keyspace.campaign_failures(workspace, campaign_id),
                keyspace.campaign_retry(workspace, campaign_id),
                keyspace.CAMPAIGNS_ACTIVE,
                keyspace.campaign_retry_why(workspace, campaign_id),
            ],
            args=["sending paused sent failed", member(workspace, campaign_id)],
        )
        count = int(reply[2]) if len(reply) > 2 else 0
        return Transition(bool(int(reply[0])), as_text(reply[1])), count

    async def retried_failures(self, workspace: str, campaign_id: str, ids: Sequence[str]) -> list[int]:
        """For recipients being retried: when their failure happened (ms; 0 if unknown), which their
        new message id is derived from."""
        raws = await self.redis.hmget(keyspace.campaign_retry_why(workspace, campaign_id), list(ids))
        return [failure_decoder.decode(as_bytes(raw)).at_ms if raw else 0 for raw in raws]

    # --- failed recipients ---------------------------------------------------------------------------
    async def failed_count(self, workspace: str, campaign_id: str) -> int:
        return int(await self.redis.zcard(keyspace.campaign_failed(workspace, campaign_id)))

    async def failed_page(
        self, workspace: str, campaign_id: str, *, limit: int, after: str | None
    ) -> tuple[list[tuple[str, FailureRecord]], bool]:
        low = f"({after}" if after else "-"
        ids = [
            as_text(i)
            for i in await self.redis.zrangebylex(
                keyspace.campaign_failed(workspace, campaign_id), low, "+", start=0, num=limit + 1
            )
        ]
        page = ids[:limit]
        raws = (
            await self.redis.hmget(keyspace.campaign_failures(workspace, campaign_id), page) if page else []
        )
        found = [
            (sub, failure_decoder.decode(as_bytes(raw))) for sub, raw in zip(page, raws, strict=True) if raw
        ]
        return found, len(ids) > limit

    # --- counters from message events ----------------------------------------------------------------
    @staticmethod
    def count_events(
        pipe: aioredis.client.Pipeline,
        counts: Mapping[tuple[str, str], Mapping[str, int]],
        failures: Mapping[tuple[str, str], Sequence[tuple[str, FailureRecord]]],
        variants: Mapping[tuple[str, str], Mapping[str, int]] | None = None,
        uniques: Mapping[tuple[str, str, str, str], Sequence[str]] | None = None,
    ) -> None:
        """Queue the counter increments (and failed recipients, and the A/B variants' counts and unique
        message sets) of a batch of message events on `pipe`, a MULTI the caller also acks the stream
        entries in."""
        for (workspace, campaign_id), by_name in (variants or {}).items():
            key = keyspace.campaign_variant_counts(workspace, campaign_id)
            for name, value in by_name.items():
                pipe.hincrby(key, name, value)
        for (workspace, campaign_id, variant, metric), message_ids in (uniques or {}).items():
            pipe.pfadd(
                keyspace.campaign_variant_unique(workspace, campaign_id, variant, metric), *message_ids
            )
        for (workspace, campaign_id), by_name in counts.items():
            key = keyspace.campaign(workspace, campaign_id)
            for name, value in by_name.items():
                pipe.hincrby(key, name, value)
        for (workspace, campaign_id), items in failures.items():
            if items:
                pipe.zadd(keyspace.campaign_failed(workspace, campaign_id), {sub: 0 for sub, _ in items})
                pipe.hset(
                    keyspace.campaign_failures(workspace, campaign_id),
                    mapping={sub: failure_encoder.encode(f) for sub, f in items},
                )


async def variant_scores(
    redis: aioredis.Redis, workspace: str, campaign_id: str, metric: str, variants: int
) -> dict[str, float]:
    """Each A/B variant's `metric` as counted from the message events (`*_unique`: distinct messages,
    a HyperLogLog, ~1% error), by variant ("0", "1", …)."""
    names = [str(v) for v in range(variants)]
    if metric.endswith("_unique"):
        async with redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.pfcount(keyspace.campaign_variant_unique(workspace, campaign_id, name, metric))
            found = await pipe.execute()
    else:
        found = await redis.hmget(
            keyspace.campaign_variant_counts(workspace, campaign_id), [f"{n}:{metric}" for n in names]
        )
    return {name: float(value or 0) for name, value in zip(names, found, strict=True)}


def _mapping(fields: Mapping[str, Any]) -> dict[Any, Any]:
    """A field mapping as redis-py's HSET types it (its key type is a union a dict[str, ...] is not)."""
    return dict(fields)


def _state(raw: dict[bytes, bytes]) -> CampaignState | None:
    if b"r" not in raw:
        return None
    fields = {k.decode(): v.decode() for k, v in raw.items() if k != b"r"}
    return CampaignState(
        record=record_decoder.decode(raw[b"r"]), status=fields.get("status", "draft"), fields=fields
    )


def queued(state: CampaignState) -> int:
    settled = sum(state.number(n) for n in ("n:sent", "n:failed", "n:suppressed", "n:canceled"))
    return max(0, state.number("n:enq") - settled)


def counters(state: CampaignState, *, audience: int, failed: int) -> dict[str, Any]:
    """The live counters of `GET /v1/campaigns/:id` (docs/campaigns.md, "Counters")."""
    return {
        "audience": audience,
        "queued": queued(state),
        "sent": state.number("n:sent"),
        "delivered": state.number("n:delivered"),
        "failed": failed,
        "suppressed": state.number("n:suppressed") + state.number("n:skip"),
        "remaining": max(0, audience - state.number("n:done")),
    }
