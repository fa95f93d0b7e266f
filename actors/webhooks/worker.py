"""Deliver one endpoint's due deliveries, at most `max_in_flight_per_endpoint` at once, until none is due.

A worker only ever holds what it has claimed (its in-flight window); the backlog stays in Redis. Each
delivery is signed afresh per attempt (new timestamp, same `webhook-id` = the event id, same body).
A disabled endpoint's due deliveries are dead-lettered without an attempt (replayable after it is
enabled again); a deleted endpoint's are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import redis.asyncio as aioredis

from actors.webhooks.config import DelivererConfig
from actors.webhooks.outcomes import settle_attempt
from actors.webhooks.sender import AttemptOutcome, WebhookSender
from schemas.events import Event
from schemas.ids import new_id
from schemas.webhooks import WebhookRecord, webhook_record_decoder
from security.secretbox import SecretBoxError
from security.webhook_signing import sign_delivery
from store.webhook_queue import ClaimedDelivery, DeliveryQueue, Settlement
from store.webhooks import WebhookStore, secret_box, signing_secrets

log = logging.getLogger("mailers.webhooks")


class EndpointWorkers:
    """Shared by every endpoint's worker: the queue, the HTTP sender, the policies and the clock."""

    def __init__(
        self,
        redis: aioredis.Redis,
        queue: DeliveryQueue,
        sender: WebhookSender,
        config: DelivererConfig,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.redis, self.queue, self.sender, self.config = redis, queue, sender, config
        self.store = WebhookStore(redis)
        self.box = secret_box(config.secret_key, config.secret_keys_old)
        self.schedule, self.health = config.schedule, config.health
        self.clock = clock
        self.rng = rng or random.Random()
        self._encode_events = msgspec.msgpack.Encoder().encode
        self.counts = {"delivered": 0, "failed": 0, "dead": 0, "dropped": 0, "disabled": 0}

    async def drain(self, workspace: str, endpoint_id: str, stop: asyncio.Event) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                free = self.config.max_in_flight_per_endpoint - len(in_flight)
                if free > 0:
                    raw, claimed = await self.queue.claim(
                        workspace, endpoint_id, free, _ms(self.clock()), self.config.lease_ms
                    )
                    record = None if raw is None else webhook_record_decoder.decode(raw)
                    in_flight.update(asyncio.create_task(self.deliver(record, d)) for d in claimed)
                if not in_flight:
                    return
                done, _ = await asyncio.wait(
                    in_flight, timeout=self.config.poll_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                in_flight -= done
                for task in done:
                    if task.exception() is not None:
                        log.error("webhook delivery failed unexpectedly", exc_info=task.exception())
        finally:
            await self._finish(in_flight)

    async def _finish(self, in_flight: set[asyncio.Task[None]]) -> None:
        """On stop: let attempts under way end (their leases are released on restart if not)."""
        if in_flight:
            await asyncio.wait(in_flight, timeout=self.config.timeout_seconds)
            for task in in_flight:
                task.cancel()

    async def deliver(self, record: WebhookRecord | None, delivery: ClaimedDelivery) -> None:
        if record is None:
            self.counts["dropped"] += 1
            await self.queue.settle(delivery, Settlement(action="drop"), _ms(self.clock()))
            return
        if not record.enabled:
            self.counts["dead"] += 1
            settlement = Settlement(action="dead", failures=delivery.failures)
            await self.queue.settle(delivery, settlement, _ms(self.clock()))
            return
        started = self.clock()
        outcome = await self._attempt(record, delivery, started)
        now = self.clock()
        settlement = settle_attempt(
            outcome, delivery.failures, started=started, now=now, schedule=self.schedule, rng=self.rng
        )
        self._count(settlement)
        failing_since = await self.queue.settle(delivery, settlement, _ms(now))
        verdict = self.health.assess(
            outcome.status_code, None if failing_since is None else failing_since / 1000, now
        )
        if verdict.disable:
            await self.disable(record, verdict.reason or "disabled", now)

    async def _attempt(
        self, record: WebhookRecord, delivery: ClaimedDelivery, started: float
    ) -> AttemptOutcome:
        try:
            secrets = signing_secrets(self.box, record, datetime.fromtimestamp(started, UTC))
        except SecretBoxError:
            log.error("the secret of webhook %s cannot be opened (MAILERS_SECRET_KEY changed?)", record.id)
            return AttemptOutcome(
                status_code=None, latency_ms=0.0, error="the signing secret cannot be opened"
            )
        headers = sign_delivery(delivery.event_id, int(started), delivery.body, secrets)
        return await self.sender.post(record.url, delivery.body, headers)

    def _count(self, settlement: Settlement) -> None:
        if settlement.action == "delivered":
            self.counts["delivered"] += 1
        else:
            self.counts["failed"] += 1
            self.counts["dead"] += settlement.action == "dead"

    async def disable(self, record: WebhookRecord, reason: str, now: float) -> None:
        """Disable the endpoint and record `webhook.endpoint_disabled` (once, however many workers see it)."""
        at = datetime.fromtimestamp(now, UTC)
        event = Event(
            id=new_id("evt"),
            type="webhook.endpoint_disabled",
            created_at=at,
            workspace=record.workspace,
            data={"endpoint_id": record.id, "url": record.url, "reason": reason},
        )
        changed = await self.store.disable(
            record.workspace, record.id, reason, at, announcement=self._encode_events([event])
        )
        if changed is None:
            return
        self.counts["disabled"] += 1
        log.warning("webhook %s disabled: %s", record.id, reason)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)
