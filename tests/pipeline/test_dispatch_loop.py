"""The dispatch loop against a real aiosmtpd sink and real Redis."""

from __future__ import annotations

import asyncio
import time

import msgspec

from actors.dispatch.scheduler import run_scheduler
from store import keyspace
from store.event_entries import entry_events
from store.messages import MessageStore
from tests.smtp.sink import SmtpSink

from .helpers import enqueue, loop_for, message, new_message, run_until, smtp_runtime


async def test_queued_messages_arrive_once_with_events(redis):
    with SmtpSink() as sink:
        msgs = [message(f"user{i}@example.com") for i in range(30)]
        assert await enqueue(redis, [new_message(m, ["srv_a"]) for m in msgs]) == [None] * 30
        loop = loop_for(redis, smtp_runtime("srv_a", sink.port))
        await run_until(lambda: len(sink.deliveries) == 30, [loop])
        assert sorted(d.rcpt_tos[0] for d in sink.deliveries) == sorted(m.to[0].email for m in msgs)
        stored = await MessageStore(redis).get("acme", msgs[0].id)
        assert stored.status == "sent" and stored.provider == "smtp" and stored.attempts == 1
        # finished: it leaves Redis after the retention (the analytics store keeps it)
        assert 0 < await redis.ttl(keyspace.message("acme", msgs[0].id)) <= loop.retention_seconds
        # its timeline is in the hash (`ev`): no key of its own
        assert not await redis.exists(keyspace.message_events("acme", msgs[0].id))
        # SMTP sends no event webhooks: the provider's id is kept on the message, with no mapping key
        assert stored.provider_message_id
        assert [key async for key in redis.scan_iter(match=keyspace.provider_message("*", "*"))] == []
        assert [e.type for e in stored.events] == ["message.accepted", "message.sent"]
        assert await redis.xpending(keyspace.dispatch_stream("acme", "srv_a"), keyspace.DISPATCH_GROUP) == {
            "pending": 0,
            "min": None,
            "max": None,
            "consumers": [],
        }
        entries = await redis.xrange(keyspace.EVENT_STREAM)
        types = [e.type for _, f in entries for e in entry_events(f)]
        assert types.count("message.accepted") == 30 and types.count("message.sent") == 30


async def test_per_item_keys_deduplicate_at_enqueue(redis):
    first, again = message(), message()
    key = keyspace.send_item("acme", "item", "k1")
    assert await enqueue(redis, [new_message(first, ["srv_a"], item_key=key)]) == [None]
    assert await enqueue(redis, [new_message(again, ["srv_a"], item_key=key)]) == [first.id]
    assert await MessageStore(redis).get("acme", again.id) is None


async def test_per_second_quota_is_never_exceeded(redis):
    with SmtpSink() as sink:
        msgs = [message(f"q{i}@example.com") for i in range(20)]
        await enqueue(redis, [new_message(m, ["srv_q"]) for m in msgs])
        loop = loop_for(redis, smtp_runtime("srv_q", sink.port, per_second=5))
        arrivals: list[float] = []
        original = sink.handler.handle_DATA

        async def stamp(*args):
            arrivals.append(time.monotonic())
            return await original(*args)

        sink.handler.handle_DATA = stamp
        await run_until(lambda: len(sink.deliveries) == 20, [loop], within=30, scheduler=run_scheduler(redis))
        arrivals.sort()
        worst = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
        assert worst <= 5, f"{worst} messages within one second"


async def test_failover_from_a_server_that_answers_451(redis):
    with SmtpSink() as primary, SmtpSink() as secondary:

        async def always_451(*args):
            return "451 4.3.0 Try again later"

        primary.handler.handle_RCPT = always_451
        msgs = [message(f"f{i}@example.com") for i in range(10)]
        await enqueue(redis, [new_message(m, ["srv_p", "srv_s"]) for m in msgs])
        loops = [
            loop_for(redis, smtp_runtime("srv_p", primary.port)),
            loop_for(redis, smtp_runtime("srv_s", secondary.port)),
        ]
        await run_until(lambda: len(secondary.deliveries) == 10, loops, scheduler=run_scheduler(redis))
        assert primary.deliveries == []
        assert sorted(d.rcpt_tos[0] for d in secondary.deliveries) == sorted(m.to[0].email for m in msgs)
        stored = await MessageStore(redis).get("acme", msgs[0].id)
        # 451 asks for 120 s, beyond the retry cap: fail over at once rather than wait.
        assert stored.status == "sent" and stored.server == "srv_s" and stored.attempts == 2
        deferred = [e for e in stored.events if e.type == "message.deferred"]
        assert len(deferred) == 1 and deferred[0].data["failover_to"] == "srv_s"


async def test_a_550_bounces_the_message(redis):
    with SmtpSink() as sink:
        msg = message("unknown1@example.com")
        await enqueue(redis, [new_message(msg, ["srv_b"])])
        suppressed: list[tuple[str, list[str]]] = []
        loop = loop_for(
            redis, smtp_runtime("srv_b", sink.port), on_suppress=lambda ws, e: suppressed.append((ws, e))
        )
        store = MessageStore(redis)

        async def bounced() -> bool:
            return (await store.get("acme", msg.id)).status == "bounced"

        flag = {"done": False}

        async def watch():
            while not await bounced():
                await asyncio.sleep(0.02)
            flag["done"] = True

        watcher = asyncio.create_task(watch())
        await run_until(lambda: flag["done"], [loop])
        await watcher
        stored = await store.get("acme", msg.id)
        bounce = next(e for e in stored.events if e.type == "message.bounced")
        assert bounce.data["bounce"]["type"] == "hard" and bounce.data["bounce"]["code"].startswith("550")
        assert suppressed == [("acme", ["unknown1@example.com"])]
        assert msgspec.to_builtins(sink.deliveries) == []


async def test_a_recipient_domain_limit_holds_while_other_domains_flow(redis):
    with SmtpSink() as sink:
        slow = [message(f"g{i}@gmail.example") for i in range(8)]
        fast = [message(f"o{i}@other.example") for i in range(8)]
        await enqueue(redis, [new_message(m, ["srv_d"]) for m in slow + fast])
        arrivals: dict[str, list[float]] = {"gmail.example": [], "other.example": []}
        original = sink.handler.handle_DATA

        async def stamp(server, session, envelope):
            arrivals[envelope.rcpt_tos[0].rpartition("@")[2]].append(time.monotonic())
            return await original(server, session, envelope)

        sink.handler.handle_DATA = stamp
        runtime = smtp_runtime("srv_d", sink.port, domain_limits={"gmail.example": {"per_second": 2}})
        started = time.monotonic()
        await run_until(
            lambda: len(sink.deliveries) == 16,
            [loop_for(redis, runtime)],
            within=30,
            scheduler=run_scheduler(redis),
        )
        gmail = sorted(arrivals["gmail.example"])
        worst = max(sum(1 for t in gmail if s <= t < s + 1.0) for s in gmail)
        assert worst <= 2, f"{worst} gmail.example messages within one second"
        assert gmail[-1] - started >= 3.0  # 8 messages at 2/s take at least 3 s
        assert max(arrivals["other.example"]) - started < 2.0  # the other domain was not held back


async def test_message_indexes_drop_ids_older_than_the_retention(redis):
    from actors.dispatch.scheduler import trim_message_indexes
    from schemas.ids import id_at
    from store.workspaces import WorkspaceStore

    await WorkspaceStore(redis).create("acme")
    now_ms = int(time.time() * 1000)
    old = [id_at("msg", now_ms - 40 * 86_400_000 + i) for i in range(3)]
    recent = [message().id for _ in range(2)]
    await redis.zadd(keyspace.message_index("acme"), dict.fromkeys(old + recent, 0))
    assert await trim_message_indexes(redis, now_ms - 30 * 86_400_000) == 3
    kept = [i.decode() for i in await redis.zrange(keyspace.message_index("acme"), 0, -1)]
    assert kept == sorted(recent)


def _slow_data(sink, seconds: float) -> dict[str, int]:
    """Make the sink take `seconds` per DATA; returns a live {"now", "most"} count of DATAs in progress."""
    seen = {"now": 0, "most": 0}
    original = sink.handler.handle_DATA

    async def slow(*args):
        seen["now"] += 1
        seen["most"] = max(seen["most"], seen["now"])
        try:
            await asyncio.sleep(seconds)
            return await original(*args)
        finally:
            seen["now"] -= 1

    sink.handler.handle_DATA = slow
    return seen


async def test_the_next_batch_is_sent_while_the_last_is_in_flight(redis):
    """Batches of two, four lanes: only a loop that reads and claims the next batch while the last one's
    chunks are still being sent ever has more than two messages at the provider at once."""
    with SmtpSink() as sink:
        seen = _slow_data(sink, 0.2)
        msgs = [message(f"p{i}@example.com") for i in range(12)]
        await enqueue(redis, [new_message(m, ["srv_p"]) for m in msgs])
        runtime = smtp_runtime("srv_p", sink.port)
        runtime.chunk_size, runtime.parallel_chunks = 1, 4
        loop = loop_for(redis, runtime, batch_size=2)
        await run_until(lambda: len(sink.deliveries) == 12, [loop])
        assert seen["most"] == 4
        assert sorted(d.rcpt_tos[0] for d in sink.deliveries) == sorted(m.to[0].email for m in msgs)


async def test_a_slow_send_is_not_reclaimed_by_its_own_loop(redis):
    """Entries idle past `reclaim_idle_ms` are taken back by XAUTOCLAIM, which also offers the loop its
    own entries still in flight: those must not be claimed and sent a second time."""
    with SmtpSink() as sink:
        _slow_data(sink, 0.3)
        msgs = [message(f"s{i}@example.com") for i in range(8)]
        await enqueue(redis, [new_message(m, ["srv_s"]) for m in msgs])
        runtime = smtp_runtime("srv_s", sink.port)
        runtime.chunk_size, runtime.parallel_chunks = 1, 4
        loop = loop_for(redis, runtime, batch_size=4, reclaim_idle_ms=50, block_ms=20)
        await run_until(lambda: len(sink.deliveries) >= 8, [loop])
        # No sleep for "nothing else was sent": a re-read entry would be sent ~50 ms after its claim,
        # while the originals (0.3 s each) are still in flight, and run_until stops the loop only after
        # its in-flight chunks have finished and been recorded.
        assert sorted(d.rcpt_tos[0] for d in sink.deliveries) == sorted(m.to[0].email for m in msgs)
