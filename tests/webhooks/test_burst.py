"""The deliverer's body in burst mode: no Ray, no sleeps; an injected clock decides when a retry is due."""

from __future__ import annotations

import random
import time

import redis.asyncio as aioredis

from actors.webhooks.body import WebhookDeliveryLoop
from actors.webhooks.config import DelivererConfig
from tests.conftest import make_settings
from tests.webhooks.conftest import LOOPBACK, create_endpoint, emit, event


async def test_a_failed_delivery_is_retried_when_the_clock_says_so(
    api, writer, redis, redis_url, receivers, tmp_path
):
    receiver = await receivers(lambda _id, attempt: 500 if attempt == 1 else 200)
    await create_endpoint(api, writer, receiver.url())
    now = [time.time()]
    config = DelivererConfig.from_settings(make_settings(tmp_path, redis_url, **LOOPBACK), block_ms=10)
    client = aioredis.Redis.from_url(redis_url)
    body = WebhookDeliveryLoop(client, config, clock=lambda: now[0], rng=random.Random(7))
    try:
        await body.start()  # joins the group at the stream's end: what is emitted next is delivered
        sent = event("message.sent", message_id="msg_1")
        await emit(redis, [sent])
        assert await body.run_until_idle() > 0
        assert [r.status for r in receiver.received] == [500]
        assert await body.run_until_idle() == 0  # the retry is ≈ 5 s away on the injected clock
        now[0] += 5.0 * 1.2 + 0.1  # past the first delay and its largest jitter
        assert await body.run_until_idle() > 0
        assert [r.status for r in receiver.received] == [500, 200]
        assert {r.webhook_id for r in receiver.received} == {sent.id}
        assert body.counts["delivered"] == 1 and body.counts["failed"] == 1 and body.fanned_out == 1
    finally:
        await body.close()
        await client.aclose()
