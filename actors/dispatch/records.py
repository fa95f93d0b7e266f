"""Redis side of dispatch: claim a batch for sending, record outcomes, move due messages.

Every function is one round trip. Claiming is a Lua script (a compare-and-set on each message's
status), so a message delivered twice to the stream (a reclaimed entry, a failover race) is sent
once: only entries whose message is still `queued` for this server, or was left `sending` by a
consumer that died, are handed out.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis

from schemas.events import Event
from schemas.messages import OutboundMessage
from store import keyspace
from store.lua import LUA_ARRAY, lua_string
from store.messages import MessageMeta

_CLAIM = """
local out = {}
for i, key in ipairs(KEYS) do
  local f = redis.call('HMGET', key, 's', 'srv', 'p', 'm', 'att')
  local status, server = f[1], f[2]
  if server == ARGV[1] and (status == 'queued' or status == 'sending') then
    redis.call('HSET', key, 's', 'sending')
    out[i] = {f[3], f[4], f[5]}
  else
    out[i] = {}
  end
end
return out
"""

_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local moved = 0
for _, key in ipairs(due) do
  redis.call('ZREM', KEYS[1], key)
  local f = redis.call('HMGET', key, 's', 'srv')
  if (f[1] == 'scheduled' or f[1] == 'queued') and f[2] then
    local ws, id = string.match(key, '^m:{(.-)}:msg:(.+)$')
    redis.call('HSET', key, 's', 'queued')
    redis.call('XADD', 'm:{' .. ws .. '}:dispatch:' .. f[2], '*', 'id', id)
    moved = moved + 1
  end
end
return moved
"""


# One round trip records a whole set of outcomes (see `DispatchRecords.record`); ARGV[1] is one msgpack
# batch (store/lua.py). A message's events go first: its timeline list may be created by that RPUSH,
# and a finished message's EXPIRE must find it.
_RECORD = (
    LUA_ARRAY
    + """
local batch = cmsgpack.unpack(ARGV[1])
local retention, mapping_ttl, group = ARGV[2], ARGV[3], ARGV[4]
local outcomes, waiting, windows, acks = batch[1], batch[2], batch[3], batch[4]
local streamed = {}
for _, o in ipairs(outcomes) do
  local key, timeline, id, status, events, fields = o[1], o[2], o[3], o[4], o[5], o[6]
  local mapping, mapped_to, failover, attempted, finished, retry_ms = o[7], o[8], o[9], o[10], o[11], o[12]
  if #events > 0 then
    redis.call('RPUSH', timeline, unpack(events))
    for _, e in ipairs(events) do streamed[#streamed + 1] = e end
  end
  if status ~= '' then
    local current = redis.call('HGET', key, 's')
    if current == 'sending' or current == 'queued' then
      redis.call('HSET', key, 's', status)  -- unless a provider webhook has moved it further already
    end
  end
  if #fields > 0 then redis.call('HSET', key, unpack(fields)) end
  if mapping ~= '' then redis.call('SET', mapping, mapped_to, 'EX', mapping_ttl) end
  if failover ~= '' then redis.call('XADD', failover, '*', 'id', id) end
  if attempted == 1 then redis.call('HINCRBY', key, 'att', 1) end
  if finished == 1 then
    redis.call('EXPIRE', key, retention)
    redis.call('EXPIRE', timeline, retention)
  end
  if retry_ms ~= '' then redis.call('ZADD', KEYS[2], retry_ms, key) end
end
for _, w in ipairs(waiting) do
  redis.call('HSET', w[1], 's', 'queued')
  redis.call('ZADD', KEYS[2], w[2], w[1])
end
for _, w in ipairs(windows) do
  redis.call('INCRBY', w[1], w[2])
  redis.call('EXPIRE', w[1], w[3])
end
if #streamed > 0 then redis.call('XADD', KEYS[1], '*', 'b', msgpack_array(streamed)) end
for i = 1, #acks, 1000 do
  redis.call('XACK', KEYS[3], group, unpack(acks, i, math.min(i + 999, #acks)))
end
return #outcomes
"""
)


class Claimed(msgspec.Struct):
    message: OutboundMessage
    meta: MessageMeta
    attempts: int


class OutcomeRecord(msgspec.Struct, array_like=True):
    """One message's recorded outcome, as the record script reads it (field order is the script's).
    Built by `DispatchRecords.outcome`."""

    key: str  # the message hash
    timeline: str  # its timeline list
    id: str
    status: str  # "" leaves the status as it is
    events: list[msgspec.Raw] = []  # each framed by `lua_string`
    fields: list[str] = []  # further hash fields, flat: name, value, ...
    mapping: str = ""  # provider message id → message key, or ""
    mapped_to: str = ""
    failover: str = ""  # the next server's dispatch stream, or ""
    attempted: int = 0  # 1: count an attempt
    finished: int = 0  # 1: expire after the retention
    retry_ms: str = ""  # back into the schedule at this time, or ""


class DispatchRecords:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._record = redis.register_script(_RECORD)
        self._claim = redis.register_script(_CLAIM)
        self._due = redis.register_script(_DUE)
        self._decode_message = msgspec.msgpack.Decoder(OutboundMessage).decode
        self._decode_meta = msgspec.msgpack.Decoder(MessageMeta).decode
        self._encode = msgspec.msgpack.Encoder().encode

    async def claim(self, workspace: str, server_id: str, ids: Sequence[str]) -> list[Claimed | None]:
        if not ids:
            return []
        rows = await self._claim(keys=[keyspace.message(workspace, i) for i in ids], args=[server_id])
        return [
            Claimed(self._decode_message(row[0]), self._decode_meta(row[1]), int(row[2] or 0))
            if row
            else None
            for row in rows
        ]

    async def record(
        self,
        stream: str,
        outcomes: Sequence[OutcomeRecord],
        waiting: Sequence[tuple[str, int]],
        windows: Sequence[tuple[str, int, int]],
        acks: Sequence[bytes],
        *,
        retention_seconds: int,
        mapping_ttl: int,
    ) -> None:
        """Outcomes, waiting messages (key, due ms), quota window counts (key, increment, ttl), the acks of
        `stream`'s entries and every event into the event stream: one script, so all or nothing."""
        batch = self._encode((outcomes, waiting, windows, [a.decode() for a in acks]))  # ids as str, not bin
        await self._record(
            keys=[keyspace.EVENT_STREAM, keyspace.SCHEDULE, stream],
            args=[batch, retention_seconds, mapping_ttl, keyspace.DISPATCH_GROUP],
        )

    def outcome(
        self, message: OutboundMessage, status: str, events: Sequence[Event], **more: object
    ) -> OutcomeRecord:
        """`message`'s row for `record`: its keys, `status` ("" to keep it) and its events framed."""
        return OutcomeRecord(
            key=keyspace.message(message.workspace, message.id),
            timeline=keyspace.message_events(message.workspace, message.id),
            id=message.id,
            status=status,
            events=[lua_string(self._encode(e)) for e in events],
            **more,  # type: ignore[arg-type]
        )

    async def move_due(self, now_ms: int, limit: int = 500) -> int:
        return int(await self._due(keys=[keyspace.SCHEDULE], args=[now_ms, limit]))

    async def load_scripts(self) -> None:
        for script in (self._record, self._claim, self._due):
            await self.redis.script_load(script.script)

    def append_events(self, pipe, events: Sequence[Event]) -> None:
        """Each event into its message's timeline, and all of them as one entry of the event stream."""
        if not events:
            return
        for event in events:
            if event.message is not None:
                pipe.rpush(keyspace.message_events(event.workspace, event.message.id), self._encode(event))
        pipe.xadd(keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: self._encode(list(events))})
