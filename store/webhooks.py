"""Webhook endpoints in Redis.

An endpoint is one msgpack `WebhookRecord` (its signing secrets sealed with SecretBox, purpose
`webhook-secret`, the endpoint id as associated data) plus a per-workspace index and a version counter
the deliverer watches to refresh its cache. Deliveries, dead letters and replays belong to the delivery
queue (`store/webhook_queue.py`, the one owner of those keys); the methods below that the API calls for
them delegate to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import redis.asyncio as aioredis

from schemas.webhooks import (
    Delivery,
    DeliveryAttempt,
    WebhookRecord,
    webhook_record_decoder,
    webhook_record_encoder,
)
from security.secretbox import SecretBox
from store import keyspace, pages, webhook_queue
from store.replies import as_bytes, members

SECRET_PURPOSE = "webhook-secret"


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


class WebhookStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.queue = webhook_queue.DeliveryQueue(redis)

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
                webhook_queue.reset_health(pipe, record.workspace, record.id)
            await pipe.execute()

    async def get(self, workspace: str, endpoint_id: str) -> WebhookRecord | None:
        raw = await self.redis.get(keyspace.webhook(workspace, endpoint_id))
        return None if raw is None else webhook_record_decoder.decode(as_bytes(raw))

    async def all(self, workspace: str) -> list[WebhookRecord]:
        ids = members(await self.redis.zrange(keyspace.webhook_index(workspace), 0, -1))
        raws = await self.redis.mget([keyspace.webhook(workspace, i.decode()) for i in ids]) if ids else []
        return [webhook_record_decoder.decode(as_bytes(r)) for r in raws if r is not None]

    async def page(
        self, workspace: str, *, limit: int, after: str | None
    ) -> tuple[list[WebhookRecord], bool]:
        index = keyspace.webhook_index(workspace)
        ids, has_more = await pages.newest_first(self.redis, index, limit=limit, after=after)
        raws = await self.redis.mget([keyspace.webhook(workspace, i) for i in ids]) if ids else []
        return [webhook_record_decoder.decode(as_bytes(r)) for r in raws if r is not None], has_more

    async def delete(self, workspace: str, endpoint_id: str) -> None:
        """Forget the endpoint and its queue; its delivery records expire with their retention."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keyspace.webhook(workspace, endpoint_id))
            webhook_queue.forget_endpoint(pipe, workspace, endpoint_id)
            pipe.zrem(keyspace.webhook_index(workspace), endpoint_id)
            pipe.incr(keyspace.webhook_version(workspace))
            await pipe.execute()

    async def disable(
        self, workspace: str, endpoint_id: str, reason: str, now: datetime, *, announcement: bytes
    ) -> WebhookRecord | None:
        """Disable an enabled endpoint and append `announcement` (a msgpack list of events) to the event
        stream in the same transaction; optimistic against concurrent PATCHes. None if it was not enabled."""
        key = keyspace.webhook(workspace, endpoint_id)

        async def disable_once(pipe: aioredis.client.Pipeline) -> WebhookRecord | None:
            raw = await pipe.get(key)
            record = None if raw is None else webhook_record_decoder.decode(as_bytes(raw))
            if record is None or not record.enabled:
                return None
            record.enabled, record.disabled_reason, record.disabled_at = False, reason, now
            record.updated_at = now
            pipe.multi()
            pipe.set(key, webhook_record_encoder.encode(record))
            pipe.incr(keyspace.webhook_version(workspace))
            pipe.xadd(keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: announcement})
            return record

        return await self.redis.transaction(disable_once, key, value_from_callable=True)

    # --- deliveries: the queue's, here because the API reaches them through the endpoint store ------
    async def deliveries(self, workspace: str, delivery_ids: list[str]) -> list[Delivery | None]:
        return await self.queue.deliveries(workspace, delivery_ids)

    async def delivery_page(
        self, workspace: str, endpoint_id: str, *, limit: int, after: str | None
    ) -> tuple[list[Delivery], bool]:
        return await self.queue.delivery_page(workspace, endpoint_id, limit=limit, after=after)

    async def attempts(self, workspace: str, delivery_id: str) -> list[DeliveryAttempt]:
        return await self.queue.attempts(workspace, delivery_id)

    async def replay(self, workspace: str, endpoint_id: str, delivery_id: str, now_ms: int) -> int:
        """1 if queued again, 0 if it is still pending, -1 if there is no such delivery."""
        return await self.queue.replay(workspace, endpoint_id, delivery_id, now_ms)

    async def replay_window(
        self, workspace: str, endpoint_id: str, start_ms: int, end_ms: int, now_ms: int
    ) -> int:
        """Replay every dead letter whose event happened in [start, end]; returns how many."""
        return await self.queue.replay_window(workspace, endpoint_id, start_ms, end_ms, now_ms)
