"""Finding: "Tracking hits append without limit: one open link hit 100,000 times grows the timeline, the
stream, analytics and webhook deliveries. Deduplicate repeated opens/clicks per message (and link) in a
short window, cap the stored timeline, and rate-limit the public routes per client address."""

from __future__ import annotations

from actors.outbound.tracking import tracking_for
from ingress.context import SERVICES
from tests.tracking.helpers import HUMAN, clicks_in, outbound, store_sent, streamed, timeline, tokens_in

HITS = 40


async def tracked(client, redis):
    message, links = tracking_for(client.server.app[SERVICES].settings).prepare(
        outbound(), track_opens=True, track_clicks=True, unsubscribe=True
    )
    await store_sent(redis, message, links)
    return message


async def kinds(redis, message) -> tuple[list[str], list[str]]:
    return [e.type for e in await timeline(redis, message)], [e.type for e in await streamed(redis)]


async def test_tracking_hits_append_without_limit_repeated_opens_are_recorded_once(app_client, redis):
    client = await app_client(public_url="http://127.0.0.1")
    message = await tracked(client, redis)
    [token] = tokens_in(message.html, "o")
    for _ in range(HITS):
        response = await client.get(f"/t/o/{token}", headers={"User-Agent": HUMAN})
        assert response.status == 200 and response.content_type == "image/gif"
    assert await kinds(redis, message) == (
        ["message.accepted", "message.opened"],
        ["message.accepted", "message.opened"],
    )


async def test_tracking_hits_append_without_limit_repeated_clicks_are_recorded_once_per_link(
    app_client, redis
):
    client = await app_client(public_url="http://127.0.0.1")
    message = await tracked(client, redis)
    first, second = clicks_in(message.html)[:2]
    for token in [first, second] * (HITS // 2):
        response = await client.get(f"/t/c/{token}", allow_redirects=False)
        assert response.status == 302
    timeline_kinds, stream_kinds = await kinds(redis, message)
    assert timeline_kinds == stream_kinds == ["message.accepted", "message.clicked", "message.clicked"]
    urls = [e.data["url"] for e in await timeline(redis, message) if e.type == "message.clicked"]
    assert len(set(urls)) == 2


async def test_tracking_hits_append_without_limit_the_timeline_is_capped(app_client, redis):
    client = await app_client(
        public_url="http://127.0.0.1", tracking_dedup_seconds=0, tracking_max_events_per_message=3
    )
    message = await tracked(client, redis)
    [token] = tokens_in(message.html, "o")
    for _ in range(HITS):
        assert (await client.get(f"/t/o/{token}")).status == 200  # still answered when not recorded
    timeline_kinds, stream_kinds = await kinds(redis, message)
    assert timeline_kinds == stream_kinds == ["message.accepted"] + ["message.opened"] * 3


async def test_tracking_hits_append_without_limit_public_routes_are_rate_limited_per_address(
    app_client, redis
):
    client = await app_client(
        public_url="http://127.0.0.1",
        trust_forwarded_for=True,
        public_rate_limit_per_second=0.001,
        public_rate_limit_burst=5,
    )
    message = await tracked(client, redis)
    [token] = tokens_in(message.html, "o")
    attacker = {"X-Forwarded-For": "203.0.113.7"}
    answers = [(await client.get(f"/t/o/{token}", headers=attacker)).status for _ in range(8)]
    assert answers == [200] * 5 + [429] * 3
    refused = await client.get("/healthz", headers=attacker)
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Policy"].startswith('"per-address";q=5')
    assert (await client.get(f"/t/o/{token}", headers={"X-Forwarded-For": "198.51.100.2"})).status == 200
    assert (await kinds(redis, message))[0] == ["message.accepted", "message.opened"]
