"""Messages in Redis: the atomic enqueue, state, timeline and listing.

One Lua script enqueues a whole batch (every concurrent request of the ingress at once): for each
message it checks the per-message idempotency key, writes the message hash, the timeline and the index,
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

# Key names are built here from the workspace and ids exactly as store/keyspace.py builds them
# (message, message_events, message_index, dispatch_stream), sparing ~4 arguments per message. A
# message may carry its request's audit entry (field AUDIT_FIELD = b"e"), appended to KEYS[3] here:
# the send path's audit entry costs no round trip of its own.
_ENQUEUE = """
local i, n, results, events = 3, tonumber(ARGV[1]), {}, {}
local retention = ARGV[2]
for m = 1, n do
  local id, ws, item, status = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3]
  local payload, meta, server, score = ARGV[i+4], ARGV[i+5], ARGV[i+6], ARGV[i+7]
  local nev = tonumber(ARGV[i+8])
  local audit = ARGV[i+9+nev]
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
    redis.call('HSET', hkey, 's', status, 'p', payload, 'm', meta, 'srv', server, 'att', 0)
    redis.call('ZADD', base .. 'messages', 0, id)
    for e = 1, nev do
      local blob = ARGV[i+8+e]
      redis.call('RPUSH', hkey .. ':ev', blob)
      events[#events+1] = blob
    end
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
  i = i + 10 + nev
end
if #events > 0 then
  local count = #events
  redis.call('XADD', KEYS[1], '*', 'b', string.char(0xdd, 0, math.floor(count / 65536) % 256,
    math.floor(count / 256) % 256, count % 256) .. table.concat(events))
end
return results
"""


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
    audit: bytes | None = None   # the request's audit entry (msgpack), appended in the same script


_encode = msgspec.msgpack.Encoder().encode
_decode_meta = msgspec.msgpack.Decoder(MessageMeta).decode
_decode_message = msgspec.msgpack.Decoder(OutboundMessage).decode
_decode_event = msgspec.msgpack.Decoder(Event).decode


class MessageStore:
    def __init__(self, redis: aioredis.Redis, *, item_retention_seconds: int = 24 * 3600) -> None:
        self.redis = redis
        self.item_retention_seconds = item_retention_seconds
        self._enqueue = redis.register_script(_ENQUEUE)

    async def enqueue(self, batch: Sequence[NewMessage]) -> list[str | None]:
        """Write every message atomically. Per message: None if new, else the id a prior send got."""
        args: list[object] = [len(batch), self.item_retention_seconds]
        for new in batch:
            args.extend(_arguments(new))
        keys = [keyspace.EVENT_STREAM, keyspace.SCHEDULE, keyspace.AUDIT_STREAM]
        results = await self._enqueue(keys=keys, args=args)
        return [r.decode() if r else None for r in results]

    async def get(self, workspace: str, message_id: str) -> StoredMessage | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keyspace.message(workspace, message_id))
            pipe.lrange(keyspace.message_events(workspace, message_id), 0, -1)
            fields, events = await pipe.execute()
        if not fields:
            return None
        return StoredMessage.from_redis(fields, events)

    async def page_ids(self, workspace: str, *, limit: int, after: str | None) -> tuple[list[str], bool]:
        from store import pages

        return await pages.newest_first(self.redis, keyspace.message_index(workspace), limit=limit, after=after)

    async def get_many(self, workspace: str, ids: Sequence[str]) -> list[StoredMessage | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.hgetall(keyspace.message(workspace, message_id))
            rows = await pipe.execute()
        return [StoredMessage.from_redis(row, []) if row else None for row in rows]


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
    def from_redis(cls, fields: dict[bytes, bytes], events: list[bytes]) -> StoredMessage:
        text = {k.decode(): v for k, v in fields.items()}
        return cls(
            message=_decode_message(text["p"]),
            meta=_decode_meta(text["m"]),
            status=text["s"].decode(),
            server=text["srv"].decode() or None if "srv" in text else None,
            provider=text["prv"].decode() if "prv" in text else None,
            provider_message_id=text["pmid"].decode() if "pmid" in text else None,
            attempts=int(text.get("att", b"0")),
            events=[_decode_event(e) for e in events],
        )

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.meta.created_ms / 1000, UTC)


def _arguments(new: NewMessage) -> list[object]:
    message = new.message
    scheduled = new.status == "scheduled" and new.meta.send_at_ms is not None
    return [
        message.id, message.workspace, new.item_key or "", new.status, _encode(message), _encode(new.meta),
        new.server, str(new.meta.send_at_ms) if scheduled else "", len(new.events),
        *(_encode(e) for e in new.events), new.audit or b"",
    ]


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


async def cancel_scheduled(redis: aioredis.Redis, workspace: str, message_id: str, event: Event,
                           retention_seconds: int) -> str:
    """Cancel if still scheduled; returns 'ok', or the status that prevented it ('' if missing)."""
    keys = [keyspace.message(workspace, message_id), keyspace.message_events(workspace, message_id),
            keyspace.SCHEDULE, keyspace.EVENT_STREAM]
    result = await redis.eval(_CANCEL, len(keys), *keys, _encode(event), retention_seconds)
    return result.decode()
