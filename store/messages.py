"""Messages in Redis: the atomic enqueue, state and timeline (listing: store/message_list.py).

One Lua script enqueues a whole batch (every concurrent request of the ingress at once): for each
message it checks the per-message idempotency key, writes the message hash (with its first events) and the
index,
then either XADDs the id to its server's dispatch stream or schedules it, and finally appends every
event of the batch to the event stream as one entry. Either all of that happens or none of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import redis.asyncio as aioredis

from schemas.events import Event
from schemas.messages import OutboundMessage
from store import keyspace
from store.lua import LUA_ARRAY, lua_string

# The batch crosses as ONE msgpack argument (store/lua.py): an array of per-message arrays.
# A message's first events (those of its acceptance) live in its hash (field `ev`, a msgpack array);
# later ones are RPUSHed to its timeline list. One key less per message: ~25% of this script's time.
# Key names are built here from the workspace and ids exactly as store/keyspace.py builds them
# (message, message_events, message_index, dispatch_stream). A message may carry its request's audit
# entry, appended to KEYS[3] here: the send path's audit entry costs no round trip of its own.
_ENQUEUE = (
    LUA_ARRAY
    + """
local retention = ARGV[1]
local batch = cmsgpack.unpack(ARGV[2])
local results, events = {}, {}
for m, row in ipairs(batch) do
  local id, ws, item, status, payload, meta, server, score, evs, audit = unpack(row)
  local base = 'm:{' .. ws .. '}:'
  local hkey = base .. 'msg:' .. id
  local prior = false
  if item ~= '' then
    prior = redis.call('GET', item)
    if not prior then redis.call('SET', item, id, 'EX', retention) end
  end
  if prior then
    results[m] = prior
  else
    redis.call('HSET', hkey, 's', status, 'p', payload, 'm', meta, 'srv', server, 'ev', msgpack_array(evs))
    redis.call('ZADD', base .. 'messages', 0, id)
    for _, blob in ipairs(evs) do events[#events+1] = blob end
    if score ~= '' then
      redis.call('ZADD', KEYS[2], score, hkey)
    elseif status == 'queued' then
      redis.call('XADD', base .. 'dispatch:' .. server, '*', 'id', id)
    end
    results[m] = ''
  end
  if audit ~= '' then
    redis.call('XADD', KEYS[3], '*', 'e', audit)
  end
end
if #events > 0 then
  redis.call('XADD', KEYS[1], '*', 'b', msgpack_array(events))
end
return results
"""
)


class MessageMeta(msgspec.Struct, kw_only=True, omit_defaults=True):
    created_ms: int
    candidates: list[str] = []
    send_at_ms: int | None = None
    purpose: str | None = None
    track_opens: bool = False
    track_clicks: bool = False
    unsubscribe: bool = False
    links: list[str] = []


class NewMessage(msgspec.Struct, kw_only=True):
    message: OutboundMessage
    meta: MessageMeta
    status: str  # queued | scheduled | suppressed
    server: str
    events: list[Event]
    item_key: str | None = None  # full Redis key of the per-message idempotency record
    audit: bytes | None = None  # the request's audit entry (msgpack), appended in the same script


_encode = msgspec.msgpack.Encoder().encode
_decode_meta = msgspec.msgpack.Decoder(MessageMeta).decode
_decode_message = msgspec.msgpack.Decoder(OutboundMessage).decode
_decode_event = msgspec.msgpack.Decoder(Event).decode
_decode_events = msgspec.msgpack.Decoder(list[Event]).decode


class MessageStore:
    def __init__(self, redis: aioredis.Redis, *, item_retention_seconds: int = 24 * 3600) -> None:
        self.redis = redis
        self.item_retention_seconds = item_retention_seconds
        self._enqueue = redis.register_script(_ENQUEUE)

    async def enqueue(self, batch: Sequence[NewMessage]) -> list[str | None]:
        """Write every message atomically. Per message: None if new, else the id a prior send got."""
        rows = _encode([_row(new) for new in batch])
        keys = [keyspace.EVENT_STREAM, keyspace.SCHEDULE, keyspace.AUDIT_STREAM]
        results = await self._enqueue(keys=keys, args=[self.item_retention_seconds, rows])
        return [r.decode() if r else None for r in results]

    async def get(self, workspace: str, message_id: str) -> StoredMessage | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keyspace.message(workspace, message_id))
            pipe.lrange(keyspace.message_events(workspace, message_id), 0, -1)
            fields, events = await pipe.execute()
        if not fields:
            return None
        return StoredMessage.from_redis(fields, events)

    async def get_many(self, workspace: str, ids: Sequence[str]) -> list[StoredMessage | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.hgetall(keyspace.message(workspace, message_id))
            rows = await pipe.execute()
        return [StoredMessage.from_redis(row, None) if row else None for row in rows]


class StoredMessage(msgspec.Struct, kw_only=True):
    message: OutboundMessage
    meta: MessageMeta
    status: str
    server: str | None
    provider: str | None
    provider_message_id: str | None
    attempts: int
    events: list[Event]

    @classmethod
    def from_redis(cls, fields: dict[bytes, bytes], events: list[bytes] | None) -> StoredMessage:
        """`events`: the timeline list's entries, or None when the timeline is not wanted (listing)."""
        text = {k.decode(): v for k, v in fields.items()}
        timeline = (
            []
            if events is None
            else _decode_events(text.get("ev", b"\x90")) + [_decode_event(e) for e in events]
        )
        return cls(
            message=_decode_message(text["p"]),
            meta=_decode_meta(text["m"]),
            status=text["s"].decode(),
            server=text["srv"].decode() or None if "srv" in text else None,
            provider=text["prv"].decode() if "prv" in text else None,
            provider_message_id=text["pmid"].decode() if "pmid" in text else None,
            attempts=int(text.get("att", b"0")),
            events=timeline,
        )

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.meta.created_ms / 1000, UTC)


def _row(new: NewMessage) -> tuple:
    message = new.message
    scheduled = new.status == "scheduled" and new.meta.send_at_ms is not None
    return (
        message.id,
        message.workspace,
        new.item_key or "",
        new.status,
        lua_string(_encode(message)),
        lua_string(_encode(new.meta)),
        new.server,
        str(new.meta.send_at_ms) if scheduled else "",
        [lua_string(_encode(e)) for e in new.events],
        lua_string(new.audit or b""),
    )


_CANCEL = """
if redis.call('HGET', KEYS[1], 's') ~= 'scheduled' then
  return redis.call('HGET', KEYS[1], 's') or ''
end
redis.call('ZREM', KEYS[3], KEYS[1])
redis.call('HSET', KEYS[1], 's', 'canceled')
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[4], '*', 'b', string.char(0x91) .. ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 'ok'
"""


async def cancel_scheduled(
    redis: aioredis.Redis, workspace: str, message_id: str, event: Event, retention_seconds: int
) -> str:
    """Cancel if still scheduled; returns 'ok', or the status that prevented it ('' if missing)."""
    keys = [
        keyspace.message(workspace, message_id),
        keyspace.message_events(workspace, message_id),
        keyspace.SCHEDULE,
        keyspace.EVENT_STREAM,
    ]
    result = await redis.eval(_CANCEL, len(keys), *keys, _encode(event), retention_seconds)
    return result.decode()
