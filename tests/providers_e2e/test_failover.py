"""Failover from a throttled Resend server to SendGrid loses nothing and sends nothing twice.

Resend (priority 1) answers its own 429 `rate_limit_exceeded` to every send: its simulator allows
one request per 120 s (longer than the test may run) and that one request is spent before the bulk,
so each 429 asks for a ~120 s wait. That is within the retry policy's cap, but longer than
`FAILOVER_AFTER_SECONDS`: not worth holding a message when another server can take it now
(`actors/dispatch/outcomes.py`), so every message moves on to SendGrid (priority 2) at once.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.pipeline.conftest import wait_for

from .helpers import message, message_view, simulated_server, timeline

COUNT = 200
RESEND_WINDOW_SECONDS = 120


async def spend_the_only_request(client, base_url: str) -> None:
    """A request with a valid key takes the rate-limit token even when its body is refused (422)."""
    headers = {"Authorization": "Bearer sim-key"}
    async with client.session.post(f"{base_url}/emails", json={}, headers=headers) as response:
        assert response.status == 422
    async with client.session.post(f"{base_url}/emails", json={}, headers=headers) as response:
        assert response.status == 429 and int(response.headers["retry-after"]) > RESEND_WINDOW_SECONDS - 10


async def test_a_throttled_resend_fails_over_to_sendgrid_losing_nothing(
    client, admin, aiohttp_server
) -> None:
    resend = await simulated_server(
        "resend", client, admin, aiohttp_server, priority=1, rate_limit=1 / RESEND_WINDOW_SECONDS
    )
    sendgrid = await simulated_server(
        "sendgrid", client, admin, aiohttp_server, priority=2, webhook_events=("delivered",)
    )
    await spend_the_only_request(client, resend.base_url)

    recipients = [f"user{i}@example.com" for i in range(COUNT)]
    bulk = {"messages": [message(to) for to in recipients]}
    response = await client.post("/v1/send/bulk", json=bulk, headers=admin)
    assert response.status == 202, await response.text()
    answer = await response.json()
    assert answer["accepted"] == COUNT
    ids = [item["id"] for item in answer["data"]]

    await wait_for(lambda: sum(len(m.to) for m in sendgrid.state.messages) >= COUNT, within=60)

    async def all_delivered() -> list[dict] | None:
        views = []
        for start in range(0, COUNT, 25):  # a few at a time: each read holds an app Redis connection
            views += await asyncio.gather(*(message_view(client, admin, i) for i in ids[start : start + 25]))
        # Delivered and its send recorded (`message.sent`, with the provider, in one script): a delivery
        # webhook can move the status on before the dispatcher records the provider's answer.
        done = all(v["status"] == "delivered" and "message.sent" in timeline(v) for v in views)
        return views if done else None

    views = await wait_for(all_delivered, within=30, every=0.25)
    at_sendgrid = Counter(to for m in sendgrid.state.messages for to in m.to)
    assert at_sendgrid == Counter(recipients)  # every one, exactly once
    assert resend.state.messages == [] and resend.state.throttled >= 2
    assert {(v["server"], v["provider"]) for v in views} == {(sendgrid.server["id"], "sendgrid")}
    moved = views[0]["events"]
    assert moved[1]["type"] == "message.deferred" and moved[1]["data"]["failover_to"] == sendgrid.server["id"]
    for view in views:
        assert sorted(timeline(view)) == [
            "message.accepted",
            "message.deferred",
            "message.delivered",
            "message.sent",
        ]
