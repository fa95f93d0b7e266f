"""Figures that used to be asserted inside tests, where a loaded machine made them flaky; here each is
printed beside a baseline measured in the same run (`python -m bench --phases micro`, no servers needed
except a Redis the phase starts itself).

- tracking: `Tracking.prepare` of a ~2 KB newsletter with 10 links (opens, clicks, unsubscribe), per
  message, against msgspec-encoding the same message (a cost every message pays anyway);
- provider timeout: how long a send to a provider that never answers takes to come back `Transient`
  with `timeout_seconds=0.2`, against the configured 0.2 s;
- event sink latency: how long a lone stream entry waits for company before its batch closes with
  `max_latency=1.0`, and how long an idle pass takes with `max_latency=0.2`, against those settings;
- enqueue of a 9 MB message (issue #11): the longest event-loop stall while it is enqueued through the
  asyncio ledger on the loop, and through store/ledger/blocking.py from an I/O thread (what heavy
  requests use), against the same loop with nothing to do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
from aiohttp import web

from bench.scratch import scratch_dir
from schemas.ids import new_id
from schemas.messages import Address, OutboundMessage

ROUNDS = 200


def _per_call(work: Callable[[], object], rounds: int = ROUNDS) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        work()
    return (time.perf_counter() - started) / rounds


def _newsletter() -> OutboundMessage:
    body = "".join(
        f'<p><a href="https://shop.example.com/p/{i}?utm=mail&amp;c=spring">Item {i}</a> '
        f"{'words ' * 20}</p>\n"
        for i in range(10)
    )
    return OutboundMessage(
        id=new_id("msg"),
        workspace="acme",
        from_=Address("hello@acme.com", "Acme"),
        to=[Address("reader@tracking.example")],
        subject="News",
        html=f"<html><body>{body}</body></html>",
        text="Hi Reader",
    )


def tracking_rows() -> list[str]:
    from actors.outbound.tracking import tracking_for
    from schemas.settings import load_settings

    tracking = tracking_for(load_settings({}, secret_key="k" * 40, public_url="https://mail.acme.test/"))
    message = _newsletter()
    encode = msgspec.json.Encoder().encode
    ours = _per_call(lambda: tracking.prepare(message, track_opens=True, track_clicks=True, unsubscribe=True))
    bare = _per_call(lambda: encode(message))
    return [f"| tracking: prepare a 2 KB, 10-link message | {ours * 1e3:.3f} ms | {bare * 1e3:.3f} ms |"]


async def provider_timeout_rows() -> list[str]:
    from providers import resend
    from providers.base import Transient
    from providers.egress import Egress, provider_session
    from store.redis_server import free_port

    release = asyncio.Event()

    async def stall(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"id": "late"})

    app = web.Application()
    app.router.add_post("/emails", stall)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        local = Egress(allow_private_targets=True)  # the stalling server is on loopback
        async with provider_session(local) as http:
            config = resend.Config(api_key="k", base_url=f"http://127.0.0.1:{port}", timeout_seconds=0.2)
            adapter = resend.Adapter(config, http=http, egress=local)
            started = time.perf_counter()
            [outcome] = await adapter.send_batch([_newsletter()])
            elapsed = time.perf_counter() - started
            release.set()
    finally:
        await runner.cleanup()
    assert isinstance(outcome, Transient) and "timed out" in outcome.reason.lower(), outcome
    return [f"| provider that never answers: back as Transient | {elapsed:.3f} s | 0.200 s (the timeout) |"]


async def sink_latency_rows() -> list[str]:
    import redis.asyncio as aioredis

    from actors.event_sink.body import EventSinkLoop
    from analytics.store import open_store
    from schemas.events import Event, EventMessage
    from store import keyspace
    from store.redis_server import RedisServer

    data = scratch_dir("mailers-bench-micro-")
    server = RedisServer(data / "redis", appendonly=False).start()
    redis = aioredis.Redis.from_url(server.url)
    store = open_store(f"duckdb://{data / 'analytics.duckdb'}")
    try:
        await store.migrate()
        now = datetime.now(UTC)
        event = Event(
            id=new_id("evt"),
            workspace="acme",
            type="message.sent",
            created_at=now,
            message=EventMessage(id=new_id("msg"), to="a@example.com", from_="hello@acme.com"),
        )
        await redis.xadd(keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: msgspec.msgpack.encode([event])})
        lone = EventSinkLoop(redis, store, consumer="c1", max_latency=1.0)
        started = time.perf_counter()
        assert await lone.step() == 1
        waited = time.perf_counter() - started
        idle = EventSinkLoop(redis, store, consumer="c2", max_latency=0.2)
        started = time.perf_counter()
        assert await idle.step() == 0
        idled = time.perf_counter() - started
    finally:
        await store.close()
        await redis.aclose()
        server.stop()
    return [
        f"| event sink: a lone entry's batch closes | {waited:.3f} s | 1.000 s (max_latency) |",
        f"| event sink: an idle pass returns | {idled:.3f} s | 0.200 s (max_latency) |",
    ]


async def enqueue_stall_rows(rounds: int = 5) -> list[str]:
    import redis.asyncio as aioredis

    from bench.loop_stalls import LoopStalls
    from store.ledger.blocking import BlockingLedger
    from store.messages import MessageMeta, MessageStore, NewMessage
    from store.redis_server import RedisServer

    data = scratch_dir("mailers-bench-micro-")
    server = RedisServer(data / "redis", appendonly=False).start()
    redis = aioredis.Redis.from_url(server.url)
    ledger, blocking = MessageStore(redis), BlockingLedger(server.url, item_retention_seconds=3600)

    def new() -> NewMessage:
        message = msgspec.structs.replace(_newsletter(), id=new_id("msg"), text="y" * (9 * 1024 * 1024))
        meta = MessageMeta(created_ms=int(time.time() * 1000))
        return NewMessage(message=message, meta=meta, status="queued", server="srv_x", events=[])

    async def longest(enqueue) -> tuple[float, float]:
        stalls = []
        for _ in range(rounds):
            batch = [new()]
            async with LoopStalls() as watch:
                await enqueue(batch)
                await asyncio.sleep(0.02)  # the ticker sees the loop after the enqueue too
            stalls.append((watch.longest_busy_ms, watch.longest_ms))
        return max(s[0] for s in stalls), max(s[1] for s in stalls)

    try:
        idle = await longest(lambda batch: asyncio.sleep(0.05))
        on_loop = await longest(ledger.enqueue)
        loop = asyncio.get_running_loop()
        off_loop = await longest(lambda batch: loop.run_in_executor(None, blocking.enqueue, batch))
    finally:
        blocking.close()
        await redis.aclose()
        server.stop()
    baseline = f"{idle[0]:.1f} ({idle[1]:.1f}) (idle loop)"
    return [
        f"| enqueue of a 9 MB message, asyncio ledger on the loop: longest loop stall, ms running (in all), "
        f"worst of {rounds} | {on_loop[0]:.1f} ({on_loop[1]:.1f}) | {baseline} |",
        f"| enqueue of a 9 MB message, BlockingLedger from an I/O thread: the same | {off_loop[0]:.1f} "
        f"({off_loop[1]:.1f}) | {baseline} |",
    ]


async def micro() -> list[str]:
    rows = ["| what | measured | baseline |", "|---|---:|---:|"]
    rows += tracking_rows()
    rows += await provider_timeout_rows()
    rows += await sink_latency_rows()
    rows += await enqueue_stall_rows()
    return rows
