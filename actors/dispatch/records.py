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


_SET_STATUS = """
local current = redis.call('HGET', KEYS[1], 's')
if current == 'sending' or current == 'queued' then
  redis.call('HSET', KEYS[1], 's', ARGV[1])
end
return current
"""


class Claimed(msgspec.Struct):
    message: OutboundMessage
    meta: MessageMeta
    attempts: int


class DispatchRecords:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._claim = redis.register_script(_CLAIM)
        self._due = redis.register_script(_DUE)
        self._set_status = redis.register_script(_SET_STATUS)
        self._decode_message = msgspec.msgpack.Decoder(OutboundMessage).decode
        self._decode_meta = msgspec.msgpack.Decoder(MessageMeta).decode
        self._encode = msgspec.msgpack.Encoder().encode

    async def claim(self, workspace: str, server_id: str, ids: Sequence[str]) -> list[Claimed | None]:
        if not ids:
            return []
        rows = await self._claim(keys=[keyspace.message(workspace, i) for i in ids], args=[server_id])
        return [
            Claimed(self._decode_message(row[0]), self._decode_meta(row[1]), int(row[2] or 0)) if row else None
            for row in rows
        ]

    async def move_due(self, now_ms: int, limit: int = 500) -> int:
        return int(await self._due(keys=[keyspace.SCHEDULE], args=[now_ms, limit]))

    def set_status(self, pipe, key: str, status: str) -> None:
        """Our outcome, unless a provider webhook has already moved the message further (e.g. delivered)."""
        pipe.evalsha(self._set_status.sha, 1, key, status)

    async def load_scripts(self) -> None:
        for script in (self._claim, self._due, self._set_status):
            await self.redis.script_load(script.script)

    def pipeline(self) -> aioredis.client.Pipeline:
        return self.redis.pipeline(transaction=True)

    def append_events(self, pipe, events: Sequence[Event]) -> None:
        """Each event into its message's timeline, and all of them as one entry of the event stream."""
        if not events:
            return
        for event in events:
            if event.message is not None:
                pipe.rpush(keyspace.message_events(event.workspace, event.message.id), self._encode(event))
        pipe.xadd(keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: self._encode(list(events))})
