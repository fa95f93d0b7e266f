"""Per-endpoint webhook delivery queues in Redis: the one owner of the delivery keys.

A delivery is a hash (`e` endpoint, `evt` event id, `typ` event type, `msg` message id, `b` the exact
JSON body, `c` event time ms, `s` status, `n` failures in the current retry round, `nd` next attempt ms)
with its attempts in a list beside it; around it live the endpoint's `due` zset, the message lanes, the
delivery index, the dead letters, the failing-since marker, `WEBHOOK_READY` and the in-flight sets.
The deliverer (actors/webhooks/) records, claims and settles; the API reads and replays; the endpoint
records (store/webhooks.py) queue `forget_endpoint` / `reset_health` into their own MULTI.

Every change is one Lua script, so a crash leaves each delivery either before or after a step:
- `record`: new deliveries (deduplicated by their deterministic id) join their message's lane; a lane
  head goes into the endpoint's `due` zset. The stream entries are acked in the same script, so an
  entry is acked only once all its deliveries are durable. Index entries past retention are trimmed.
- `claim`: due deliveries get a lease (their due time moves to now + lease) and are noted in this
  deliverer's in-flight set; after a crash `release_in_flight` makes them due again at once.
- `settle`: an outcome (delivered, retry at t, dead, drop) is recorded with its attempt; a finished
  lane head hands the lane to the next event of the message;
- `replay`: a finished (delivered or dead) delivery goes back to the front of its endpoint's queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import get_args

import msgspec
import redis.asyncio as aioredis
from redis.typing import EncodableT
from ulid import ULID

from schemas.webhooks import Delivery, DeliveryAttempt, DeliveryStatus, attempt_decoder
from store import keyspace, pages
from store.replies import as_bytes, as_text, members

DELIVERY_RETENTION_SECONDS = 30 * 24 * 3600
RECORD_CHUNK = 500
REPLAY_CHUNK = 500

_RECORD = """
local stream, ready = KEYS[1], KEYS[2]
local group, ttl, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local expired = ARGV[4 + n]
local created, a = 0, 5 + n
for k = 3, #KEYS, 4 do
  local rec, lane, due, idx = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local id, msg, at, member = ARGV[a], ARGV[a + 4], ARGV[a + 7], ARGV[a + 8]
  if redis.call('HSETNX', rec, 's', 'pending') == 1 then
    redis.call('HSET', rec, 'e', ARGV[a + 1], 'evt', ARGV[a + 2], 'typ', ARGV[a + 3], 'msg', msg,
               'b', ARGV[a + 5], 'c', ARGV[a + 6], 'n', 0, 'nd', '')
    redis.call('EXPIRE', rec, ttl)
    redis.call('ZADD', idx, 0, id)
    redis.call('ZREMRANGEBYLEX', idx, '-', expired)
    local head = true
    if msg ~= '' then
      head = redis.call('RPUSH', lane, id) == 1
      redis.call('EXPIRE', lane, ttl)
    end
    if head then
      redis.call('HSET', rec, 'nd', at)
      redis.call('ZADD', due, at, id)
      redis.call('ZADD', ready, 'LT', at, member)
    end
    created = created + 1
  end
  a = a + 9
end
for i = 1, n do redis.call('XACK', stream, group, ARGV[3 + i]) end
return created
"""

_CLAIM = """
local due, ready, endpoint, inflight = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, lease, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local member, prefix = ARGV[4], ARGV[5]
local ids = {}
if n > 0 then ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, n) end
for _, id in ipairs(ids) do
  redis.call('ZADD', due, now + lease, id)
  redis.call('SADD', inflight, prefix .. id)
end
local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
if first[1] then redis.call('ZADD', ready, first[2], member) else redis.call('ZREM', ready, member) end
return {redis.call('GET', endpoint), ids}
"""

_SETTLE = """
local rec, att, due, ready, inflight, lane, dead, failing = unpack(KEYS)
local id, action, nxt, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local flight, now, ttl = ARGV[5], ARGV[6], ARGV[7]
local attempt, n, health, has_lane, rec_prefix = ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local dead_before = ARGV[13]
redis.call('SREM', inflight, flight)
local since = false
if health == 'ok' then redis.call('DEL', failing)
elseif health == 'fail' then
  redis.call('SET', failing, now, 'NX')
  since = redis.call('GET', failing)
end
if redis.call('EXISTS', rec) == 0 then action = 'drop' end
if action == 'drop' then
  redis.call('ZREM', due, id)
  redis.call('DEL', rec, att)
else
  if attempt ~= '' then
    redis.call('RPUSH', att, attempt)
    redis.call('EXPIRE', att, ttl)
  end
  if action == 'retry' then
    redis.call('HSET', rec, 'n', n, 'nd', nxt)
    redis.call('ZADD', due, nxt, id)
    redis.call('ZADD', ready, 'LT', nxt, member)
  else
    redis.call('HSET', rec, 's', action, 'n', n, 'nd', '')
    redis.call('ZREM', due, id)
    if action == 'dead' then
      redis.call('ZADD', dead, redis.call('HGET', rec, 'c'), id)
      redis.call('ZREMRANGEBYSCORE', dead, '-inf', dead_before)
    end
  end
  redis.call('EXPIRE', rec, ttl)
end
if action ~= 'retry' and has_lane == '1' and redis.call('LINDEX', lane, 0) == id then
  redis.call('LPOP', lane)
  local head = redis.call('LINDEX', lane, 0)
  if head then
    redis.call('HSET', rec_prefix .. head, 'nd', now)
    redis.call('ZADD', due, now, head)
    redis.call('ZADD', ready, 'LT', now, member)
  end
end
return since
"""


# Put a finished (delivered or dead) delivery back at the front of its endpoint's queue. Replays skip
# the message lane: they are a manual act, after the lane has moved on.
_REPLAY = """
local rec, due, ready, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, now, member, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local state = redis.call('HGET', rec, 's')
if not state then return -1 end
if state == 'pending' then return 0 end
redis.call('HSET', rec, 's', 'pending', 'n', 0, 'nd', now)
redis.call('EXPIRE', rec, ttl)
redis.call('ZADD', due, now, id)
redis.call('ZADD', ready, 'LT', now, member)
redis.call('ZREM', dead, id)
return 1
"""


def ready_member(workspace: str, endpoint_id: str) -> str:
    return f"{workspace}|{endpoint_id}"


def _endpoint_of(member: bytes) -> tuple[str, str]:
    """(workspace, endpoint id) of a `ready_member`."""
    workspace, endpoint_id = member.decode().split("|")
    return workspace, endpoint_id


# Each delivery status by its text, so the record's `s` field reads back as a `DeliveryStatus`.
_DELIVERY_STATUS: dict[str, DeliveryStatus] = {status: status for status in get_args(DeliveryStatus)}


def ms_to_datetime(ms: int | str | bytes) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def decode_delivery(delivery_id: str, fields: dict[bytes, bytes], attempts: list[bytes]) -> Delivery:
    next_due = fields.get(b"nd") or b""
    status = _DELIVERY_STATUS[fields[b"s"].decode()]
    return Delivery(
        id=delivery_id,
        endpoint_id=fields[b"e"].decode(),
        event_id=fields[b"evt"].decode(),
        event_type=fields[b"typ"].decode(),
        message_id=fields[b"msg"].decode() or None,
        status=status,
        created_at=ms_to_datetime(fields[b"c"]),
        next_attempt_at=ms_to_datetime(next_due) if next_due and status == "pending" else None,
        attempts=[attempt_decoder.decode(a) for a in attempts],
    )


def forget_endpoint(pipe: aioredis.client.Pipeline, workspace: str, endpoint_id: str) -> None:
    """Queue the removal of an endpoint's queue into the caller's MULTI; its delivery records expire with
    their retention."""
    pipe.delete(
        keyspace.webhook_due(workspace, endpoint_id),
        keyspace.webhook_dead(workspace, endpoint_id),
        keyspace.webhook_failing(workspace, endpoint_id),
        keyspace.webhook_deliveries(workspace, endpoint_id),
    )
    pipe.zrem(keyspace.WEBHOOK_READY, ready_member(workspace, endpoint_id))


def reset_health(pipe: aioredis.client.Pipeline, workspace: str, endpoint_id: str) -> None:
    """Queue forgetting when the endpoint started failing (re-enabled by hand) into the caller's MULTI."""
    pipe.delete(keyspace.webhook_failing(workspace, endpoint_id))


def expired_before(now_ms: int) -> str:
    """The smallest delivery id still within retention: index entries below it point at expired records."""
    cutoff = max(0, now_ms - DELIVERY_RETENTION_SECONDS * 1000)
    return f"dlv_{ULID.from_bytes(cutoff.to_bytes(6, 'big') + bytes(10))}"


class NewDelivery(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    workspace: str
    endpoint_id: str
    event_id: str
    event_type: str
    message_id: str | None
    body: bytes
    created_ms: int


class ClaimedDelivery(msgspec.Struct, kw_only=True):
    id: str
    workspace: str
    endpoint_id: str
    event_id: str
    message_id: str | None
    body: bytes
    failures: int


class Settlement(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one claimed delivery. `action`: delivered | retry | dead | drop."""

    action: str
    next_ms: int | None = None
    attempt: bytes = b""
    failures: int = 0
    health: str = "none"  # ok | fail | none (no HTTP attempt was made)


class DeliveryQueue:
    """`consumer` names the deliverer whose leases this queue tracks; the API's queue has none."""

    def __init__(self, redis: aioredis.Redis, *, consumer: str = "") -> None:
        self.redis = redis
        self.consumer = consumer
        self.in_flight_key = keyspace.webhook_in_flight(consumer)
        self._record = redis.register_script(_RECORD)
        self._claim = redis.register_script(_CLAIM)
        self._settle = redis.register_script(_SETTLE)
        self._replay = redis.register_script(_REPLAY)

    async def record(self, deliveries: Sequence[NewDelivery], entry_ids: Sequence[bytes], now_ms: int) -> int:
        """Make the deliveries durable and pending, then ack the stream entries they came from."""
        created = 0
        chunks = [deliveries[i : i + RECORD_CHUNK] for i in range(0, len(deliveries), RECORD_CHUNK)] or [[]]
        for index, chunk in enumerate(chunks):
            acks = entry_ids if index == len(chunks) - 1 else []
            keys: list[str] = [keyspace.EVENT_STREAM, keyspace.WEBHOOK_READY]
            args: list[EncodableT] = [
                keyspace.WEBHOOK_GROUP,
                DELIVERY_RETENTION_SECONDS,
                len(acks),
                *acks,
                "(" + expired_before(now_ms),
            ]
            for d in chunk:
                lane = keyspace.webhook_lane(d.workspace, d.endpoint_id, d.message_id or "-")
                keys += [
                    keyspace.webhook_delivery(d.workspace, d.id),
                    lane,
                    keyspace.webhook_due(d.workspace, d.endpoint_id),
                    keyspace.webhook_deliveries(d.workspace, d.endpoint_id),
                ]
                args += [
                    d.id,
                    d.endpoint_id,
                    d.event_id,
                    d.event_type,
                    d.message_id or "",
                    d.body,
                    d.created_ms,
                    now_ms,
                    ready_member(d.workspace, d.endpoint_id),
                ]
            created += int(await self._record(keys=keys, args=args))
        return created

    async def claim(
        self, workspace: str, endpoint_id: str, limit: int, now_ms: int, lease_ms: int
    ) -> tuple[bytes | None, list[ClaimedDelivery]]:
        """The endpoint's record and up to `limit` due deliveries, leased to this deliverer."""
        member = ready_member(workspace, endpoint_id)
        keys = [
            keyspace.webhook_due(workspace, endpoint_id),
            keyspace.WEBHOOK_READY,
            keyspace.webhook(workspace, endpoint_id),
            self.in_flight_key,
        ]
        endpoint, ids = await self._claim(keys=keys, args=[now_ms, lease_ms, limit, member, member + "|"])
        if not ids:
            return endpoint, []
        async with self.redis.pipeline(transaction=False) as pipe:
            for delivery_id in ids:
                pipe.hmget(keyspace.webhook_delivery(workspace, delivery_id.decode()), "evt", "msg", "b", "n")
            rows = await pipe.execute()
        return endpoint, [
            ClaimedDelivery(
                id=i.decode(),
                workspace=workspace,
                endpoint_id=endpoint_id,
                event_id=(evt or b"").decode(),
                message_id=(msg or b"").decode() or None,
                body=body or b"",
                failures=int(n or 0),
            )
            for i, (evt, msg, body, n) in zip(ids, rows, strict=True)
        ]

    async def settle(self, delivery: ClaimedDelivery, outcome: Settlement, now_ms: int) -> int | None:
        """Record the outcome; returns when the endpoint started failing (ms), if it is failing."""
        ws, endpoint_id = delivery.workspace, delivery.endpoint_id
        member = ready_member(ws, endpoint_id)
        keys = [
            keyspace.webhook_delivery(ws, delivery.id),
            keyspace.webhook_attempts(ws, delivery.id),
            keyspace.webhook_due(ws, endpoint_id),
            keyspace.WEBHOOK_READY,
            self.in_flight_key,
            keyspace.webhook_lane(ws, endpoint_id, delivery.message_id or "-"),
            keyspace.webhook_dead(ws, endpoint_id),
            keyspace.webhook_failing(ws, endpoint_id),
        ]
        args = [
            delivery.id,
            outcome.action,
            outcome.next_ms or "",
            member,
            f"{member}|{delivery.id}",
            now_ms,
            DELIVERY_RETENTION_SECONDS,
            outcome.attempt,
            outcome.failures,
            outcome.health,
            "1" if delivery.message_id else "0",
            keyspace.webhook_delivery(ws, ""),
            f"({now_ms - DELIVERY_RETENTION_SECONDS * 1000}",
        ]
        since = await self._settle(keys=keys, args=args)
        return None if since is None else int(since)

    async def release_in_flight(self, now_ms: int) -> int:
        """After a restart: deliveries this deliverer had leased are due again at once."""
        members = await self.redis.smembers(self.in_flight_key)
        async with self.redis.pipeline(transaction=True) as pipe:
            for raw in members:
                ws, endpoint_id, delivery_id = as_text(raw).split("|")
                pipe.zadd(keyspace.webhook_due(ws, endpoint_id), {delivery_id: now_ms}, xx=True)
                pipe.zadd(keyspace.WEBHOOK_READY, {ready_member(ws, endpoint_id): now_ms}, lt=True)
            pipe.delete(self.in_flight_key)
            await pipe.execute()
        return len(members)

    async def ready_endpoints(self, now_ms: int, limit: int) -> list[tuple[str, str]]:
        ready = await self.redis.zrangebyscore(keyspace.WEBHOOK_READY, "-inf", now_ms, start=0, num=limit)
        return [_endpoint_of(member) for member in members(ready)]

    async def next_ready_ms(self) -> int | None:
        first = await self.redis.zrange(keyspace.WEBHOOK_READY, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    # --- what the API reads and replays ---------------------------------------------------------
    async def deliveries(self, workspace: str, delivery_ids: list[str]) -> list[Delivery | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for delivery_id in delivery_ids:
                pipe.hgetall(keyspace.webhook_delivery(workspace, delivery_id))
                pipe.lrange(keyspace.webhook_attempts(workspace, delivery_id), 0, -1)
            rows = await pipe.execute()
        return [
            decode_delivery(delivery_id, fields, attempts) if fields else None
            for delivery_id, fields, attempts in zip(delivery_ids, rows[0::2], rows[1::2], strict=True)
        ]

    async def delivery_page(
        self, workspace: str, endpoint_id: str, *, limit: int, after: str | None
    ) -> tuple[list[Delivery], bool]:
        index = keyspace.webhook_deliveries(workspace, endpoint_id)
        ids, has_more = await pages.newest_first(self.redis, index, limit=limit, after=after)
        return [d for d in await self.deliveries(workspace, ids) if d is not None], has_more

    async def attempts(self, workspace: str, delivery_id: str) -> list[DeliveryAttempt]:
        raws = await self.redis.lrange(keyspace.webhook_attempts(workspace, delivery_id), 0, -1)
        return [attempt_decoder.decode(as_bytes(r)) for r in raws]

    async def replay(self, workspace: str, endpoint_id: str, delivery_id: str, now_ms: int) -> int:
        """1 if queued again, 0 if it is still pending, -1 if there is no such delivery."""
        keys = [
            keyspace.webhook_delivery(workspace, delivery_id),
            keyspace.webhook_due(workspace, endpoint_id),
            keyspace.WEBHOOK_READY,
            keyspace.webhook_dead(workspace, endpoint_id),
        ]
        args: list[EncodableT] = [
            delivery_id,
            now_ms,
            ready_member(workspace, endpoint_id),
            DELIVERY_RETENTION_SECONDS,
        ]
        return int(await self._replay(keys=keys, args=args))

    async def replay_window(
        self, workspace: str, endpoint_id: str, start_ms: int, end_ms: int, now_ms: int
    ) -> int:
        """Replay every dead letter whose event happened in [start, end]; returns how many."""
        dead = keyspace.webhook_dead(workspace, endpoint_id)
        replayed = 0
        while True:
            ids = members(await self.redis.zrangebyscore(dead, start_ms, end_ms, start=0, num=REPLAY_CHUNK))
            if not ids:
                return replayed
            for delivery_id in ids:
                outcome = await self.replay(workspace, endpoint_id, delivery_id.decode(), now_ms)
                if outcome != 1:  # gone or already pending: drop the stale dead-letter entry
                    await self.redis.zrem(dead, delivery_id)
                replayed += outcome == 1
