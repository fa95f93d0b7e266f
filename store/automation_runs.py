"""Automation runs in Redis: the only writer of a run's record, its due entry and the live-run index.

Stored compactly (a waiting run should cost at most ~300 B of Redis memory): the hash field and the zset
member are the run id's bare ULID (26 characters: with the `run_` prefix an sds string no longer fits the
32-byte allocation class), the record names its subscriber by the bare ULID too, and a waiting run's
wake-up lives only in the due zset's score (`due_at` reads it back for the API).

A run is one msgpack `RunRecord` in its automation's `runs` hash (field: the run id). Every run that has
a step to do is a member of the automation's `due` zset, scored by when: now for a run just started or
between steps, the wake-up for a waiting one. The runner moves a run through three transitions, each one
script:

- `start`: create the record (refused by the reentry rule, or a no-op when the id exists: run ids of
  `never` automations and of retried triggers are derived, so a repeat creates nothing), add it to `due`
  and to the start-order list (what the API lists newest first), append `automation.triggered` (and, for
  an api trigger, the request's audit entry to `m:audit`).
- `claim`: take the due runs (score <= now) and push their score to now + lease: nobody else takes them
  until the lease ends (or a restarted runner takes them over: `release_leases`). A paused automation's
  runs are not taken: they hold where they are. A runner that dies mid-step leaves the run due again
  when the lease ends, and the step is done again: what makes that safe is per step (the send step's
  message id is derived from the run and the step, so its enqueue is a no-op the second time; see
  docs/automations.md).
- `commit`: only if the run still holds the lease its claim gave it (its due score: a per-claim token,
  random to the 1/1024 ms so two claims never share one), write the next state, move or remove the due
  entry and append the step's events, all in one script. A run cancelled or deleted meanwhile, committed
  by another runner, or claimed again after its lease ended (or by a restarted runner's release) is left
  as it is: a runner whose lease was taken over writes nothing, even though the record is unchanged. A
  transition without a lease (a cancel, which claims nothing) is compared with the record's bytes.
  The claim also answers the automation's earliest due score and its head record, so the runner knows
  when to claim it next and reads no head of its own.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from schemas.automations import HistoryEntry, RunRecord, run_decoder
from schemas.events import Event, event_msgpack_encoder
from store import keyspace
from store.idempotency import LUA_FUNCTIONS as IDEMPOTENCY_LUA
from store.lua import LUA_ARRAY, lua_string
from store.replies import as_bytes, as_text

_encoder = msgspec.msgpack.Encoder()
_encode, _encode_into = _encoder.encode, _encoder.encode_into
_random = random.Random()


def _field(run_id: str) -> str:
    return run_id[4:]  # "run_" + ULID -> ULID


def _run_id(field: bytes | str) -> str:
    return "run_" + as_text(field)


# Crockford base32 <-> Python's base-32 digits, to pack a 26-character ULID into 17 bytes (130 bits: the
# ids' first character may carry 5 bits).
_TO_INT32 = str.maketrans("0123456789ABCDEFGHJKMNPQRSTVWXYZ", "0123456789abcdefghijklmnopqrstuv")
_PAIRS = [a + b for a in "0123456789ABCDEFGHJKMNPQRSTVWXYZ" for b in "0123456789ABCDEFGHJKMNPQRSTVWXYZ"]


def _ulid_bytes(ulid: str) -> bytes:
    return int(ulid.translate(_TO_INT32), 32).to_bytes(17, "big")


def _ulid_text(raw: bytes) -> str:
    value = int.from_bytes(raw, "big")
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(120, -1, -10)])


class _Stored(msgspec.Struct, array_like=True, omit_defaults=True):
    """A RunRecord as stored: the subscriber's ULID as 17 bytes, history times as ms after `created_ms`.
    Keeps a waiting run's record under 61 bytes (a 64-byte allocation instead of 80: 16 B a run). `status`
    comes first: the release script reads it as the record's bytes 2-3 (Redis' cmsgpack cannot unpack
    the bin type the subscriber is)."""

    status: str
    subscriber: bytes
    version: int
    at: int
    created_ms: int
    history: list[HistoryEntry] = []
    data: dict[str, Any] = {}
    reason: str = ""


_stored_decoder = msgspec.msgpack.Decoder(_Stored)


def _subscriber_of(raw: bytes) -> bytes | None:
    """The packed subscriber id of a stored record (a fixarray, a one-letter status, bin8 of 17 bytes)."""
    return raw[5:22] if raw[3:5] == b"\xc4\x11" else None


def _stored(record: RunRecord, subscriber: bytes | None = None) -> _Stored:
    created = record.created_ms
    return _Stored(
        record.status,
        subscriber or _ulid_bytes(record.subscriber[4:]),
        record.version,
        record.at,
        created,
        [HistoryEntry(h.step, h.at_ms - created, h.outcome, h.message_id) for h in record.history],
        record.data,
        record.reason,
    )


def _pack(record: RunRecord, subscriber: bytes | None = None) -> bytes:
    """`subscriber`: the packed id when the caller has it (a commit: the claimed record's), else computed."""
    return _encode(_stored(record, subscriber))


def unpack(raw: bytes) -> RunRecord:
    try:
        stored = _stored_decoder.decode(raw)
    except msgspec.ValidationError:  # written before records were packed (the subscriber as text)
        record = run_decoder.decode(raw)
        record.subscriber = "sub_" + record.subscriber
        return record
    created = stored.created_ms
    return RunRecord(
        subscriber="sub_" + _ulid_text(stored.subscriber),
        version=stored.version,
        status=stored.status,
        at=stored.at,
        created_ms=created,
        history=[HistoryEntry(h.step, h.at_ms + created, h.outcome, h.message_id) for h in stored.history],
        data=stored.data,
        reason=stored.reason,
    )


_START = (
    LUA_ARRAY
    + """
local runs, due, live, active, stream, order = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local audit_stream, audit_field = KEYS[7], ARGV[2]
local batch = cmsgpack.unpack(ARGV[1])
local member, after_exit = batch[1], batch[2]
local events, outcome = {}, {}
for i = 1, #batch[3] do
  local item = batch[3][i]
  local run_id, record, due_ms, sub = item[1], item[2], item[3], item[4]
  if redis.call('HEXISTS', runs, run_id) == 1 then
    outcome[i] = 'exists'
  else
    local other = after_exit and redis.call('HGET', live, sub)
    if other then
      outcome[i] = 'live:' .. other
    else
      redis.call('HSET', runs, run_id, record)
      redis.call('ZADD', due, due_ms, run_id)
      redis.call('RPUSH', order, run_id)
      if after_exit then redis.call('HSET', live, sub, run_id) end
      events[#events + 1] = item[5]
      if item[6] ~= '' then redis.call('XADD', audit_stream, '*', audit_field, item[6]) end
      outcome[i] = 'created'
    end
  end
end
if #events > 0 then
  redis.call('SADD', active, member)
  redis.call('XADD', stream, '*', 'b', msgpack_array(events))
end
return outcome
"""
)

_CLAIM = """
local due, runs, live, head = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- paused (or deleted): runs hold
if redis.call('SISMEMBER', live, ARGV[4]) == 0 then return {{}, {}, '', 1, ''} end
local ids = redis.call('ZRANGEBYSCORE', due, '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
if #ids == 0 then
  local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  return {{}, {}, first[2] or '', 0, ''}
end
local args = {}
for i = 1, #ids do
  args[#args + 1] = ARGV[2]
  args[#args + 1] = ids[i]
end
redis.call('ZADD', due, 'XX', unpack(args))
local records = redis.call('HMGET', runs, unpack(ids))
for i = 1, #ids do
  if not records[i] then
    redis.call('ZREM', due, ids[i])
    records[i] = ''
  end
end
-- when the automation is due next (its earliest score: a wake-up, or a lease's end), for the runner's
-- schedule of claims
local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
-- and the automation's head record (read by the runner with every batch: a deleted one has none)
return {ids, records, first[2] or '', 0, redis.call('GET', head) or ''}
"""

_RELEASE = """
local due, runs = KEYS[1], KEYS[2]
local ids = redis.call(
  'ZRANGEBYSCORE', due, '(' .. ARGV[1], ARGV[2], 'LIMIT', tonumber(ARGV[3]), tonumber(ARGV[4]))
local released = 0
for i = 1, #ids do
  local raw = redis.call('HGET', runs, ids[i])
  if raw and string.sub(raw, 2, 3) == '\\161r' then  -- a fixarray, then status: the str "r"
    redis.call('ZADD', due, 'XX', ARGV[1], ids[i])
    released = released + 1
  end
end
return {#ids, released}
"""

_COMMIT = """
local runs, due, live, active, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local batch = cmsgpack.unpack(ARGV[1])
local member, items, records, events = batch[1], batch[2], batch[3], batch[4]
-- items: {run id, token, score, end of its record in `records`, end of its events in `events`, count}
-- token: the lease score the runner claimed the run with (a number: the run must still hold exactly that
-- score), or the record's bytes as read (a string: the record must still be exactly those bytes)
local applied, all, count, rec_at = {}, true, 0, 1
local has_live = redis.call('EXISTS', live) == 1
for i = 1, #items do
  local item = items[i]
  local run_id, token, score = item[1], item[2], item[3]
  local ok
  if type(token) == 'number' then
    local held = redis.call('ZSCORE', due, run_id)
    ok = held and tonumber(held) == token
  else
    ok = redis.call('HGET', runs, run_id) == token
  end
  if ok then
    local record = string.sub(records, rec_at, item[4])
    redis.call('HSET', runs, run_id, record)
    if score >= 0 then
      redis.call('ZADD', due, score, run_id)
    else
      redis.call('ZREM', due, run_id)
      -- an ended run leaves the after_exit index: its subscriber is the record's bytes 6-22 (bin8 of 17)
      if has_live and string.sub(record, 4, 5) == '\\196\\017' then
        local sub = string.sub(record, 6, 22)
        if redis.call('HGET', live, sub) == run_id then redis.call('HDEL', live, sub) end
      end
    end
    count = count + item[6]
    applied[i] = 1
  else
    applied[i] = 0
    all = false
  end
  rec_at = item[4] + 1
end
if redis.call('ZCARD', due) == 0 then
  redis.call('SREM', active, member)
else
  redis.call('SADD', active, member)
end
if count > 0 then
  if not all then  -- only the applied transitions' events
    local parts, ev_at = {}, 1
    for i = 1, #items do
      if applied[i] == 1 then parts[#parts + 1] = string.sub(events, ev_at, items[i][5]) end
      ev_at = items[i][5] + 1
    end
    events = table.concat(parts)
  end
  local header = string.char(
    0xdd, 0, math.floor(count / 65536) % 256, math.floor(count / 256) % 256, count % 256)
  redis.call('XADD', stream, '*', 'b', header .. events)
end
return applied
"""


class NewRun(msgspec.Struct, kw_only=True):
    run_id: str
    record: RunRecord
    due_ms: int
    event: Event
    # The request's audit entry (encoded), appended to `m:audit` in the same script when the run is created
    # (an api trigger audits its 202 with its write, as the send path does: no round trip of its own).
    audit: bytes | None = None


class Transition(msgspec.Struct, kw_only=True):
    """A run's next state, written only if the run is still as it was read: held under the `lease` the
    runner claimed it with (the runner's commits), or else still exactly the bytes `expected` (a cancel)."""

    run_id: str
    expected: bytes
    record: RunRecord
    due_ms: int | None  # None: no step left (ended)
    events: list[Event] = []
    lease: float | None = None


class Claimed(msgspec.Struct, kw_only=True):
    run_id: str
    raw: bytes
    record: RunRecord
    lease: float | None = None  # the due score the claim gave it: the commit's fencing token


class ClaimedBatch(msgspec.Struct, kw_only=True):
    runs: list[Claimed]
    next_due_ms: int | None  # the automation's earliest due score after the claim (None: no run left)
    paused: bool  # the automation is paused or gone: nothing was claimed
    head: bytes | None = None  # the automation's head record as read with a claim that found runs


class RunStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._start = redis.register_script(_START)
        self._claim = redis.register_script(_CLAIM)
        self._commit = redis.register_script(_COMMIT)
        self._release = redis.register_script(_RELEASE)

    @staticmethod
    def _keys(workspace: str, automation_id: str) -> list[str]:
        return [
            keyspace.automation_runs(workspace, automation_id),
            keyspace.automation_due(workspace, automation_id),
            keyspace.automation_live_runs(workspace, automation_id),
            keyspace.AUTOMATIONS_ACTIVE,
            keyspace.EVENT_STREAM,
            keyspace.automation_run_order(workspace, automation_id),
        ]

    async def start(
        self, workspace: str, automation_id: str, runs: Sequence[NewRun], *, after_exit: bool
    ) -> list[str]:
        """Per run: "created", "exists" (that id was started before) or "live:<run id>" (after_exit:
        the subscriber is in a live run of this automation)."""
        if not runs:
            return []
        items = [
            [
                _field(r.run_id),
                lua_string(_pack(r.record)),
                r.due_ms,
                lua_string(_ulid_bytes(r.record.subscriber[4:])),
                lua_string(event_msgpack_encoder.encode(r.event)),
                lua_string(r.audit) if r.audit is not None else "",
            ]
            for r in runs
        ]
        payload = _encode([f"{workspace}|{automation_id}", after_exit, items])
        outcome = await self._start(
            keys=[*self._keys(workspace, automation_id), keyspace.AUDIT_STREAM],
            args=[payload, keyspace.AUDIT_FIELD],
        )
        return [
            ("live:run_" + text[5:]) if (text := as_text(o)).startswith("live:") else text for o in outcome
        ]

    async def claim_batch(
        self, workspace: str, automation_id: str, *, now_ms: int, lease_ms: int, limit: int
    ) -> ClaimedBatch:
        """Up to `limit` due runs, each leased until now + `lease_ms` (plus a random fraction of a ms, so
        two claims of one run never hold the same token), and when the automation is due next."""
        lease = now_ms + lease_ms + _random.randrange(1, 1024) / 1024
        ids, raws, first, paused, head = await self._claim(
            keys=[
                keyspace.automation_due(workspace, automation_id),
                keyspace.automation_runs(workspace, automation_id),
                keyspace.AUTOMATIONS_LIVE,
                keyspace.automation(workspace, automation_id),
            ],
            args=[now_ms, repr(lease), limit, f"{workspace}|{automation_id}"],
        )
        found = []
        for run_id, raw in zip(ids, raws, strict=True):
            blob = as_bytes(raw)
            if blob:
                found.append(Claimed(run_id=_run_id(run_id), raw=blob, record=unpack(blob), lease=lease))
        next_due = int(float(first)) if first else None
        return ClaimedBatch(
            runs=found, next_due_ms=next_due, paused=bool(paused), head=as_bytes(head) if head else None
        )

    async def commit(self, workspace: str, automation_id: str, moves: Sequence[Transition]) -> list[bool]:
        """Per transition: whether it was written (False: the run changed since it was read, or another
        claim holds it). The records and the events cross as two blobs with each item's end offsets (no
        framing per item), and when every transition applies the events go to the stream as they came."""
        if not moves:
            return []
        items = []
        records, events = bytearray(), bytearray()
        encode_record, encode_event = _encode_into, event_msgpack_encoder.encode_into
        for move in moves:
            # The same run, so the same subscriber: its packed id is taken from the bytes read.
            subscriber = _subscriber_of(move.expected) or _ulid_bytes(move.record.subscriber[4:])
            encode_record(_stored(move.record, subscriber), records, -1)
            for event in move.events:
                encode_event(event, events, -1)
            items.append(
                (
                    _field(move.run_id),
                    move.lease if move.lease is not None else lua_string(move.expected),
                    -1 if move.due_ms is None else move.due_ms,
                    len(records),
                    len(events),
                    len(move.events),
                )
            )
        payload = _encode(
            (f"{workspace}|{automation_id}", items, lua_string(bytes(records)), lua_string(bytes(events)))
        )
        applied = await self._commit(keys=self._keys(workspace, automation_id), args=[payload])
        return [bool(a) for a in applied]

    async def get(self, workspace: str, automation_id: str, run_id: str) -> tuple[bytes, RunRecord] | None:
        raw = await self.redis.hget(keyspace.automation_runs(workspace, automation_id), _field(run_id))
        if raw is None:
            return None
        blob = as_bytes(raw)
        return blob, unpack(blob)

    async def due_at(self, workspace: str, automation_id: str, run_ids: list[str]) -> list[int | None]:
        """When each run is due (a waiting run's wake-up), or None for runs with nothing to do."""
        if not run_ids:
            return []
        scores = await self.redis.zmscore(
            keyspace.automation_due(workspace, automation_id), [_field(r) for r in run_ids]
        )
        return [None if score is None else int(score) for score in scores]

    async def page(
        self,
        workspace: str,
        automation_id: str,
        *,
        status: str | None,
        limit: int,
        before: int | None,
        scan_cap: int = 5000,
    ) -> tuple[list[tuple[str, RunRecord]], int]:
        """Runs newest first (the order they started in, read backwards), filtered by status code: the
        runs at positions below `before` (None: from the newest). At most `scan_cap` runs are read per
        page, so a rare status may answer a short page with more to come. Returns the position to go on
        from (0: nothing older)."""
        order = keyspace.automation_run_order(workspace, automation_id)
        runs = keyspace.automation_runs(workspace, automation_id)
        position = await self.redis.llen(order) if before is None else before
        found: list[tuple[str, RunRecord]] = []
        scanned = 0
        while position > 0 and len(found) < limit and scanned < scan_cap:
            chunk = min(position, max(limit, 100) if status is None else 500)
            fields = await self.redis.lrange(order, position - chunk, position - 1)
            raws = await self.redis.hmget(runs, fields) if fields else []
            for field, raw in zip(reversed(fields), reversed(raws), strict=True):
                position -= 1
                scanned += 1
                if raw is not None:
                    record = unpack(as_bytes(raw))
                    if status is None or record.status == status:
                        found.append((_run_id(field), record))
                        if len(found) == limit:
                            break
            if not fields:
                break
        return found, position

    async def release_leases(self, workspace: str, automation_id: str, *, now_ms: int, lease_ms: int) -> int:
        """Make the runs a dead runner had claimed due now (its leases end within `lease_ms`): what a
        restarted runner does first, so a crash costs no lease's wait. Only `running` runs are released
        (a run waiting for a retry is taken early; a waiting run keeps its wake-up)."""
        keys = [
            keyspace.automation_due(workspace, automation_id),
            keyspace.automation_runs(workspace, automation_id),
        ]
        offset, released = 0, 0
        while True:
            seen, freed = await self._release(keys=keys, args=[now_ms, now_ms + lease_ms, offset, 1000])
            released += freed
            offset += seen - freed  # the released ones left the window
            if seen < 1000:
                return released

    async def active(self) -> list[tuple[str, str]]:
        members = await self.redis.smembers(keyspace.AUTOMATIONS_ACTIVE)
        pairs = []
        for raw in members:
            workspace, _, automation_id = as_text(raw).partition("|")
            pairs.append((workspace, automation_id))
        return pairs

    async def next_due(self, workspace: str, automation_id: str) -> int | None:
        found = await self.redis.zrange(
            keyspace.automation_due(workspace, automation_id), 0, 0, withscores=True
        )
        return int(found[0][1]) if found else None


# --- an api trigger's batch: the checks that need Redis, the start and the idempotency record, in ONE
# script (issue #14). Appended as its own section: the runner's claim/commit scripts above are not touched.
#
# The ingress checks what depends on the automation alone (the trigger type, the status, the data) from
# a head it caches, and passes the head's bytes as it saw them: the script compares them with the stored
# head first and, when they differ (the automation changed, or the ingress had not seen it), starts
# nothing of that automation and answers the head instead, and the ingress checks again with it (a
# second round trip only after a change). The subscriber is looked up in the script (address -> id ->
# record: unknown or blocklisted answers a problem), its id packed into the run record and spliced into
# the `automation.triggered` event there. For a trigger with an Idempotency-Key the same script does what
# the idempotency middleware's claim and completion did (store/idempotency.py's record, its fragment):
# a stored answer is replayed, a different body or a request still running refused, and a new run's 202
# is stored with it, so such a trigger costs no round trip more than one without the key.
#
# KEYS: 1 the workspace's address index, 2 its subscriber records, 3 AUTOMATIONS_ACTIVE, 4 the event
# stream, 5 the audit stream, then per automation five (head, runs, due, live runs, start order) and one
# per idempotency record. ARGV[1]: msgpack [audit field, groups]; a group [index of its head key, the
# head's bytes as the ingress saw them ('' none), active-set member, after_exit, items]; an item [address,
# run field, record prefix, record suffix, due ms, event prefix, event suffix, audit entry ('' none),
# idempotency ('' none, or [index of its key, fingerprint, token, pre, 202 body, 202 headers, lock ms,
# retention ms])], `pre` being '' (start it), 'store' (the ingress answers a problem it stores: claim the
# record) or 'fail' (the ingress answers a problem it does not store: write nothing).
# Returns per group {'stale', head bytes} or {'ok', per item {outcome, ...}}.
_API_START = (
    LUA_ARRAY
    + """
local CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
local DIGIT = {}
for i = 1, 32 do DIGIT[string.byte(CROCKFORD, i)] = i - 1 end
local function packed(ulid)  -- 26 Crockford characters -> 17 bytes (6 zero bits, then 130): _ulid_bytes
  local out, acc, bits = {}, 0, 6
  for i = 1, 26 do
    acc = acc * 32 + DIGIT[string.byte(ulid, i)]
    bits = bits + 5
    if bits >= 8 then
      bits = bits - 8
      local scale = 2 ^ bits
      local byte = math.floor(acc / scale)
      out[#out + 1] = byte
      acc = acc - byte * scale
    end
  end
  return string.char(unpack(out))
end
local function mpstr(s)
  local n = #s
  if n < 32 then return string.char(160 + n) .. s end
  if n < 256 then return string.char(217, n) .. s end
  return string.char(218, math.floor(n / 256), n % 256) .. s
end
"""
    + "__IDEMPOTENCY__"
    + """
local emails, subscribers, active, stream, audit_stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local batch = cmsgpack.unpack(ARGV[1])
local audit_field = batch[1]
local events, results = {}, {}
for g = 1, #batch[2] do
  local group = batch[2][g]
  local k, expected, member, after_exit, items = group[1], group[2], group[3], group[4], group[5]
  local actual = redis.call('GET', KEYS[k]) or ''
  if actual ~= expected then
    results[g] = {'stale', actual}
  else
    local runs, due, live, order = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
    local started = false
    local function start(item)
      local sid = redis.call('HGET', emails, item[1])
      local raw = sid and redis.call('HGET', subscribers, sid)
      if not raw then return {'unknown'} end
      local record = cmsgpack.unpack(raw)  -- SubscriberRecord, array-like: [id, email, name, attrs, status..]
      if record[5] == 'blocklisted' then return {'blocklisted'} end
      local run = item[2]
      if redis.call('HEXISTS', runs, run) == 1 then return {'exists'} end
      local pid = packed(string.sub(sid, 5))
      if after_exit then
        local other = redis.call('HGET', live, pid)
        if other then return {'live', other} end
        redis.call('HSET', live, pid, run)
      end
      redis.call('HSET', runs, run, item[3] .. '\\196\\017' .. pid .. item[4])
      redis.call('ZADD', due, item[5], run)
      redis.call('RPUSH', order, run)
      events[#events + 1] = item[6] .. mpstr(sid) .. '\\165email' .. mpstr(record[2]) .. item[7]
      if item[8] ~= '' then redis.call('XADD', audit_stream, '*', audit_field, item[8]) end
      started = true
      return {'created'}
    end
    local out = {}
    for i = 1, #batch[2][g][5] do
      local item = items[i]
      local idem = item[9]
      if idem == '' then
        out[i] = start(item)
      else
        local key = KEYS[idem[1]]
        local answer = idempotent_answer(key, idem[2])
        if not answer then
          if idem[4] == 'store' then
            idempotent_claim(key, idem[2], idem[3], idem[7])
            answer = {'claimed'}
          elseif idem[4] == 'fail' then
            answer = {'none'}
          else
            answer = start(item)
            local o = answer[1]
            if o == 'created' or o == 'exists' then
              idempotent_done(key, idem[2], idem[3], '202', idem[5], idem[6], idem[8])
            elseif o == 'live' then
              idempotent_claim(key, idem[2], idem[3], idem[7])
              answer[3] = 'claimed'
            end
          end
        end
        out[i] = answer
      end
    end
    if started then redis.call('SADD', active, member) end
    results[g] = {'ok', out}
  end
end
if #events > 0 then redis.call('XADD', stream, '*', 'b', msgpack_array(events)) end
return results
"""
)
_API_START = _API_START.replace("__IDEMPOTENCY__", IDEMPOTENCY_LUA)

# What an api trigger's event names before the script knows the subscriber: these two values are replaced
# there by the subscriber's id and address (`ApiStart.event`'s data holds them side by side).
SUBSCRIBER_SLOT = "sub_" + "0" * 26
EMAIL_SLOT = "-"
_SLOTS = b"".join(_encode(s) for s in ("subscriber", SUBSCRIBER_SLOT, "email", EMAIL_SLOT))
_NO_SUBSCRIBER = bytes(17)


class ApiIdempotency(msgspec.Struct, kw_only=True):
    """A trigger's Idempotency-Key record, claimed and completed in the script (store/idempotency.py)."""

    key: str
    fingerprint: str
    token: str
    pre: str  # '' start the run; 'store': claim (a problem the ingress stores); 'fail': write nothing
    body: bytes  # the 202's body as stored (sealed when stored answers are)
    headers: bytes  # the 202's stored headers (encoded)
    lock_ms: int
    retention_ms: int


class ApiStart(msgspec.Struct, kw_only=True):
    """One trigger: the run to start for the subscriber the address names (looked up in the script)."""

    email: str
    run_id: str
    record: RunRecord  # its subscriber is the script's to fill in
    due_ms: int
    event: Event  # `automation.triggered`, its data's subscriber and email SUBSCRIBER_SLOT, EMAIL_SLOT
    audit: bytes | None = None
    idempotency: ApiIdempotency | None = None


class ApiGroup(msgspec.Struct, kw_only=True):
    automation_id: str
    head: bytes  # the head's bytes as the ingress checked them (b"": none)
    after_exit: bool
    items: list[ApiStart]


def _record_parts(record: RunRecord) -> tuple[bytes, bytes]:
    raw = _pack(record, _NO_SUBSCRIBER)
    assert raw[3:5] == b"\xc4\x11", "a new run's record: fixarray, status, bin8 of 17 bytes"
    return raw[:3], raw[22:]


def _event_parts(event: Event) -> tuple[bytes, bytes]:
    raw = event_msgpack_encoder.encode(event)
    at = raw.index(_SLOTS)
    return raw[:at] + _encode("subscriber"), raw[at + len(_SLOTS) :]


class ApiTriggerStore:
    """An api trigger batch's one script (above): per automation 'stale' with the head's bytes, or per item
    (outcome, ...): created | exists | live <run field> [claimed] | unknown | blocklisted | replay status
    body headers | mismatch | running | claimed | none."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._script = redis.register_script(_API_START)

    async def start(self, workspace: str, groups: Sequence[ApiGroup]) -> list[tuple[str, Any]]:
        keys = [
            keyspace.subscriber_emails(workspace),
            keyspace.subscribers(workspace),
            keyspace.AUTOMATIONS_ACTIVE,
            keyspace.EVENT_STREAM,
            keyspace.AUDIT_STREAM,
        ]
        encoded = []
        for group in groups:
            head_index = len(keys) + 1
            keys.append(keyspace.automation(workspace, group.automation_id))
            keys += RunStore._keys(workspace, group.automation_id)[:3]
            keys.append(keyspace.automation_run_order(workspace, group.automation_id))
            items = []
            for item in group.items:
                record_prefix, record_suffix = _record_parts(item.record)
                event_prefix, event_suffix = _event_parts(item.event)
                idem: Any = ""
                if (i := item.idempotency) is not None:
                    keys.append(i.key)
                    idem = [
                        len(keys),
                        i.fingerprint,
                        i.token,
                        i.pre,
                        lua_string(i.body),
                        lua_string(i.headers),
                        i.lock_ms,
                        i.retention_ms,
                    ]
                items.append(
                    [
                        item.email,
                        _field(item.run_id),
                        lua_string(record_prefix),
                        lua_string(record_suffix),
                        item.due_ms,
                        lua_string(event_prefix),
                        lua_string(event_suffix),
                        lua_string(item.audit) if item.audit is not None else "",
                        idem,
                    ]
                )
            encoded.append(
                [
                    head_index,
                    lua_string(group.head),
                    f"{workspace}|{group.automation_id}",
                    group.after_exit,
                    items,
                ]
            )
        payload = _encode([lua_string(as_bytes(keyspace.AUDIT_FIELD)), encoded])
        replies = await self._script(keys=keys, args=[payload])
        results: list[tuple[str, Any]] = []
        for reply in replies:
            kind = as_text(reply[0])
            if kind == "stale":
                results.append((kind, as_bytes(reply[1])))
            else:
                results.append((kind, [_item_outcome(o) for o in reply[1]]))
        return results


def _item_outcome(reply: list) -> tuple[Any, ...]:
    kind = as_text(reply[0])
    if kind == "live":
        return (kind, _run_id(reply[1]), len(reply) > 2)
    if kind == "replay":
        return (kind, int(reply[1]), as_bytes(reply[2]), as_bytes(reply[3]))
    return (kind,)
