"""Webhook endpoints, their deliveries and dead letters in Redis.

An endpoint is one msgpack `WebhookRecord` (its signing secrets sealed with SecretBox, purpose
`webhook-secret`, the endpoint id as associated data) plus a per-workspace index and a version counter
the deliverer watches to refresh its cache. A delivery is a hash (`e` endpoint, `evt` event id, `typ`
event type, `msg` message id, `b` the exact JSON body, `c` event time ms, `s` status, `n` failures in
the current retry round, `nd` next attempt ms) with its attempts in a list beside it. The queue side
(fan-out, claims, outcomes) lives with the deliverer in `actors/webhooks/queue.py`; replays live here
because the API starts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import redis.asyncio as aioredis

from schemas.webhooks import (
    Delivery,
    DeliveryAttempt,
    WebhookRecord,
    attempt_decoder,
    webhook_record_decoder,
    webhook_record_encoder,
)
from security.secretbox import SecretBox
from store import keyspace, pages

SECRET_PURPOSE = "webhook-secret"
DELIVERY_RETENTION_SECONDS = 30 * 24 * 3600
REPLAY_CHUNK = 500

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


def secret_box(master_key: str, old_master_keys: Sequence[str] = ()) -> SecretBox:
    return SecretBox.from_master_key(master_key, SECRET_PURPOSE, old_master_keys)


def seal_secret(box: SecretBox, endpoint_id: str, secret: str) -> str:
    return box.seal(secret.encode(), endpoint_id.encode())


def signing_secrets(box: SecretBox, record: WebhookRecord, now: datetime) -> list[str]:
    """The secrets that sign a delivery now: the current one, plus the previous one while rotating."""
    secrets = [box.open(record.sealed_secret, record.id.encode()).decode()]
    if record.sealed_previous_secret and record.previous_secret_until and now < record.previous_secret_until:
        secrets.append(box.open(record.sealed_previous_secret, record.id.encode()).decode())
    return secrets


def ready_member(workspace: str, endpoint_id: str) -> str:
    return f"{workspace}|{endpoint_id}"


def ms_to_datetime(ms: int | str | bytes) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def decode_delivery(delivery_id: str, fields: dict[bytes, bytes], attempts: list[bytes]) -> Delivery:
    next_due = fields.get(b"nd") or b""
    status = fields[b"s"].decode()
    return Delivery(
        id=delivery_id,
        endpoint_id=fields[b"e"].decode(),
        event_id=fields[b"evt"].decode(),
        event_type=fields[b"typ"].decode(),
        message_id=fields[b"msg"].decode() or None,
        status=status,  # type: ignore[arg-type]
        created_at=ms_to_datetime(fields[b"c"]),
        next_attempt_at=ms_to_datetime(next_due) if next_due and status == "pending" else None,
        attempts=[attempt_decoder.decode(a) for a in attempts],
    )


class WebhookStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._replay = redis.register_script(_REPLAY)

    # --- endpoints -----------------------------------------------------------------------------
    async def create(self, record: WebhookRecord) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keyspace.webhook(record.workspace, record.id), webhook_record_encoder.encode(record))
            pages.index_add(pipe, keyspace.webhook_index(record.workspace), record.id)
            pipe.incr(keyspace.webhook_version(record.workspace))
            await pipe.execute()

    async def save(self, record: WebhookRecord, *, reset_health: bool = False) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keyspace.webhook(record.workspace, record.id), webhook_record_encoder.encode(record))
            pipe.incr(keyspace.webhook_version(record.workspace))
            if reset_health:
                pipe.delete(keyspace.webhook_failing(record.workspace, record.id))
            await pipe.execute()

    async def get(self, workspace: str, endpoint_id: str) -> WebhookRecord | None:
        raw = await self.redis.get(keyspace.webhook(workspace, endpoint_id))
        return None if raw is None else webhook_record_decoder.decode(raw)

    async def all(self, workspace: str) -> list[WebhookRecord]:
        ids = await self.redis.zrange(keyspace.webhook_index(workspace), 0, -1)
        raws = await self.redis.mget([keyspace.webhook(workspace, i.decode()) for i in ids]) if ids else []
        return [webhook_record_decoder.decode(r) for r in raws if r is not None]

    async def page(
        self, workspace: str, *, limit: int, after: str | None
    ) -> tuple[list[WebhookRecord], bool]:
        index = keyspace.webhook_index(workspace)
        ids, has_more = await pages.newest_first(self.redis, index, limit=limit, after=after)
        raws = await self.redis.mget([keyspace.webhook(workspace, i) for i in ids]) if ids else []
        return [webhook_record_decoder.decode(r) for r in raws if r is not None], has_more

    async def delete(self, workspace: str, endpoint_id: str) -> None:
        """Forget the endpoint and its queue; its delivery records expire with their retention."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(
                keyspace.webhook(workspace, endpoint_id),
                keyspace.webhook_due(workspace, endpoint_id),
                keyspace.webhook_dead(workspace, endpoint_id),
                keyspace.webhook_failing(workspace, endpoint_id),
                keyspace.webhook_deliveries(workspace, endpoint_id),
            )
            pipe.zrem(keyspace.webhook_index(workspace), endpoint_id)
            pipe.zrem(keyspace.WEBHOOK_READY, ready_member(workspace, endpoint_id))
            pipe.incr(keyspace.webhook_version(workspace))
            await pipe.execute()

    async def disable(
        self, workspace: str, endpoint_id: str, reason: str, now: datetime, *, announcement: bytes
    ) -> WebhookRecord | None:
        """Disable an enabled endpoint and append `announcement` (a msgpack list of events) to the event
        stream in the same transaction; optimistic against concurrent PATCHes. None if it was not enabled."""
        key = keyspace.webhook(workspace, endpoint_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    record = None if raw is None else webhook_record_decoder.decode(raw)
                    if record is None or not record.enabled:
                        return None
                    record.enabled, record.disabled_reason, record.disabled_at = False, reason, now
                    record.updated_at = now
                    pipe.multi()
                    pipe.set(key, webhook_record_encoder.encode(record))
                    pipe.incr(keyspace.webhook_version(workspace))
                    pipe.xadd(keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: announcement})
                    await pipe.execute()
                    return record
                except aioredis.WatchError:
                    continue

    # --- deliveries ----------------------------------------------------------------------------
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
        return [attempt_decoder.decode(r) for r in raws]

    async def replay(self, workspace: str, endpoint_id: str, delivery_id: str, now_ms: int) -> int:
        """1 if queued again, 0 if it is still pending, -1 if there is no such delivery."""
        keys = [
            keyspace.webhook_delivery(workspace, delivery_id),
            keyspace.webhook_due(workspace, endpoint_id),
            keyspace.WEBHOOK_READY,
            keyspace.webhook_dead(workspace, endpoint_id),
        ]
        args = [delivery_id, now_ms, ready_member(workspace, endpoint_id), DELIVERY_RETENTION_SECONDS]
        return int(await self._replay(keys=keys, args=args))

    async def replay_window(
        self, workspace: str, endpoint_id: str, start_ms: int, end_ms: int, now_ms: int
    ) -> int:
        """Replay every dead letter whose event happened in [start, end]; returns how many."""
        dead = keyspace.webhook_dead(workspace, endpoint_id)
        replayed = 0
        while True:
            ids = await self.redis.zrangebyscore(dead, start_ms, end_ms, start=0, num=REPLAY_CHUNK)
            if not ids:
                return replayed
            for delivery_id in ids:
                outcome = await self.replay(workspace, endpoint_id, delivery_id.decode(), now_ms)
                if outcome != 1:  # gone or already pending: drop the stale dead-letter entry
                    await self.redis.zrem(dead, delivery_id)
                replayed += outcome == 1
