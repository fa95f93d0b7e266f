"""What one campaign recipient costs in CPU, stage by stage, each stage run alone in one process: the
floor under the fan-out rate of a 2-core machine (issue #13's target: 20,000 recipients/s, a budget of
2 cores / 20,000 = 100 µs of CPU a recipient for everything the machine does meanwhile).

One redis-server (AOF on, as `mailers serve` runs it) and this process; no Ray, no `mailers serve`, no
other process competing. The stages, one after the other, over the same campaign of `--subscribers`:

1. render and queue: `CampaignRunner.step` until every recipient is rendered, tracked and durably
   queued (what `bench.campaigns --in-process` measures);
2. send: a `DispatchFleet` sends every queued message to the sandbox server (claim, the suppression
   check, send, record the outcome, the `message.sent` event); the check calls a `SuppressionShardBody`
   in this process, where `mailers serve` crosses Ray to its shard actors;
3. count and settle: the runner counts the messages' events into the campaign's counters, settles it
   `sent` and archives its messages (its clock moved past the archive's quiet time);
4. store the events: `EventSinkLoop` reads every event of the stream (`message.accepted`,
   `message.sent`, a recipient) into the analytics store (a DuckDB file with the sink's memory limit
   and checkpoint threshold), in the sink's batches.

For each, the CPU of this process and of Redis (INFO cpu) per recipient, and the sum: on a 2-core
machine nothing can fan out faster than 2 / sum. Each stage alone, so these are floors: run together
(`bench.campaigns`), the processes compete for caches and cores and each costs more.

`python -m bench.fanout_budget [--subscribers 50000] [--links 0]`. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from bench.campaigns import WORKSPACE, bench_settings, seed_campaign
from bench.scratch import scratch_dir
from store import keyspace
from store.redis_server import RedisServer

TARGET_RATE = 20_000
CORES = 2


class Stage:
    """One stage's CPU: this process's (time.process_time) and Redis's (INFO cpu), and its wall time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cpu = self.redis_cpu = self.wall = 0.0

    async def measure(self, redis: aioredis.Redis, body: Callable[[], Awaitable[Any]]) -> None:
        before = await redis_cpu(redis)
        started, cpu_started = time.perf_counter(), time.process_time()
        await body()
        self.wall = time.perf_counter() - started
        self.cpu = time.process_time() - cpu_started
        self.redis_cpu = await redis_cpu(redis) - before


async def redis_cpu(redis: aioredis.Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def dispatch_drained(redis: aioredis.Redis, server_id: str) -> bool:
    """Every entry of the server's dispatch stream read by the group and acknowledged (the outcome script
    acks in the same call that records it)."""
    stream = keyspace.dispatch_stream(WORKSPACE, server_id)
    try:
        groups = await redis.xinfo_groups(stream)
    except aioredis.ResponseError:
        return False
    return bool(groups) and all(g["pending"] == 0 and (g.get("lag") or 0) == 0 for g in groups)


async def main(args: argparse.Namespace) -> list[str]:
    from actors.campaigns.body import CampaignRunner
    from actors.dispatch.body import DispatchFleet
    from actors.event_sink.body import EventSinkLoop
    from actors.priority import settle_garbage_collector
    from actors.suppression.body import SuppressionShardBody
    from analytics.store import open_store

    count = args.subscribers
    data = scratch_dir("mailers-bench-budget-")
    server = RedisServer(data / "redis", appendonly=True).start()
    redis = aioredis.Redis.from_url(server.url)
    load = os.getloadavg()[0]
    stages = [
        Stage(n) for n in ("render and queue", "send (sandbox)", "count and settle", "store the events")
    ]
    try:
        settings = bench_settings(data, server.url)
        store, record = await seed_campaign(redis, settings, count, args.links)
        server_id = record.routing.server
        # The subscribers' own events (created, list joined) are not the campaign's: stored first, unmeasured.
        sink_store = open_store(
            settings.analytics_url, settings.data_dir, duckdb_memory_mb=settings.duckdb_memory_mb
        )
        await sink_store.migrate()
        sink = EventSinkLoop(redis, sink_store)
        await sink.run_until_idle()
        settle_garbage_collector()  # as every actor's process does at start
        now = [time.time()]
        runner = CampaignRunner(redis, settings, in_flight=10**9, clock=lambda: now[0])

        async def queued() -> bool:
            state = await store.get(WORKSPACE, record.id)
            return bool(state) and state.number("n:done") >= count

        async def render_and_queue() -> None:
            while not await queued():
                if not await runner.step():
                    raise RuntimeError("the runner stopped before every recipient was queued")

        shard = SuppressionShardBody(redis)

        async def send() -> None:
            fleet = DispatchFleet(redis, settings, suppressions=shard.check)
            await fleet.sync()
            try:
                await until(lambda: dispatch_drained(redis, server_id), 3600, "the dispatch to drain")
            finally:
                await fleet.stop_all()

        async def count_and_settle() -> None:
            now[0] += settings.campaign_archive_after_seconds + 60  # every message quiet: archived
            while await runner.step():
                pass
            state = await store.get(WORKSPACE, record.id)
            if state is None or state.status != "sent":
                raise RuntimeError(f"the campaign did not settle: {state and state.status}")

        await stages[0].measure(redis, render_and_queue)
        await stages[1].measure(redis, send)
        await stages[2].measure(redis, count_and_settle)
        before_sink = sink.stats.events
        await stages[3].measure(redis, sink.run_until_idle)
        stored = sink.stats.events - before_sink
        await sink_store.close()
        await shard.close()
    finally:
        await redis.aclose()
        server.stop()
    budget = CORES / TARGET_RATE * 1e6
    total = sum(s.cpu + s.redis_cpu for s in stages) / count * 1e6
    rows = [
        f"load: `{load:.1f}` at the start, `{os.getloadavg()[0]:.1f}` at the end; {count:,} subscribers; "
        f"tracked links in the template {args.links}" + f"; events the sink stored in stage 4: {stored:,}",
        "",
        "| stage (alone) | this process, µs a recipient | Redis, µs a recipient | both | wall |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in stages:
        mine, theirs = s.cpu / count * 1e6, s.redis_cpu / count * 1e6
        rows.append(f"| {s.name} | {mine:,.0f} | {theirs:,.0f} | {mine + theirs:,.0f} | {s.wall:,.1f} s |")
    rows += [
        f"| **all stages** | | | **{total:,.0f}** | |",
        "",
        f"At {total:,.0f} µs of CPU a recipient, {CORES} cores fan out at most "
        f"{CORES / total * 1e6:,.0f} recipients/s with every stage keeping up; "
        f"{TARGET_RATE:,}/s needs ≤ {budget:,.0f} µs ({total / budget:.1f}x this).",
    ]
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=50_000)
    parser.add_argument("--links", type=int, default=0, help="distinct tracked links in the template's body")
    print("\n".join(asyncio.run(main(parser.parse_args()))))
