"""The real WebhookDeliverer Ray actor: started by `ensure_webhook_deliverer`, killed mid-retry, resumed."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict

import ray

from actors.webhooks.client import ensure_webhook_deliverer
from tests.conftest import make_settings
from tests.webhooks.conftest import LOOPBACK, WORKSPACE, create_endpoint, emit, event
from tests.webhooks.test_delivery import verify_both


async def test_killing_the_actor_mid_retry_loses_nothing(
    app_client, make_key, redis, redis_url, tmp_path, receivers
):
    receiver = await receivers(lambda _id, attempt: 500 if attempt <= 2 else 200)
    api = await app_client(**LOOPBACK)
    writer = await make_key(["write:webhooks"], workspace=WORKSPACE)
    endpoint = await create_endpoint(api, writer, receiver.url())
    settings = make_settings(tmp_path, redis_url, webhook_retry_scale=0.01, **LOOPBACK)
    name = f"webhook-deliverer-{uuid.uuid4().hex[:8]}"
    handle = await ensure_webhook_deliverer(settings, redis_url, name=name, poll_seconds=0.02, block_ms=50)
    try:
        assert await handle.ping.remote()
        sent = [
            event(kind, message_id=f"msg_{m}")
            for kind in ("message.sent", "message.delivered")
            for m in range(3)
        ]
        await emit(redis, sent[:3])
        await emit(redis, sent[3:])
        # First attempts fail; the second retry is ≈ 3 s away: kill while deliveries wait in Redis.
        await receiver.wait_for(lambda r: len({x.webhook_id for x in r.received}) >= 3, within=20)
        for _ in range(200):  # and all six are pending deliveries in Redis (fan-out lingers between batches)
            if (await handle.counts.remote())["fanned_out"] == len(sent):
                break
            await asyncio.sleep(0.05)
        ray.kill(handle, no_restart=False)
        await receiver.wait_for(lambda r: r.delivered_ids() == {e.id for e in sent}, within=60)
        counts = await handle.counts.remote()
        # A new instance: it fanned nothing out (that was done before the kill) yet finished deliveries.
        assert counts["fanned_out"] == 0 and counts["delivered"] >= 1
    finally:
        # Stopped before the kill: a killed actor's process outlives its name by a few ms (more under
        # load, and this one runs at background priority), and a deliverer still reading `webhooks` then
        # would take the next test's entries in this worker's Redis.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(handle.stop.remote(), 30)
        ray.kill(handle, no_restart=True)
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for got in receiver.received:
        verify_both(got, endpoint["secret"])
        assert got.event["id"] == got.webhook_id
        bodies[got.webhook_id].add(got.body)
    assert all(len(b) == 1 for b in bodies.values())  # a duplicate is byte-identical, same webhook-id
    for m in range(3):
        order = [e.id for e in sent if e.message.id == f"msg_{m}"]
        delivered = [r.webhook_id for r in receiver.delivered() if r.event["message"]["id"] == f"msg_{m}"]
        assert list(dict.fromkeys(delivered)) == order
        first_delivery = next(
            i for i, r in enumerate(receiver.received) if r.webhook_id == order[0] and r.status == 200
        )
        first_attempt_of_next = next(i for i, r in enumerate(receiver.received) if r.webhook_id == order[1])
        assert first_delivery < first_attempt_of_next
