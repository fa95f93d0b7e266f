"""Analytics store: ingest throughput from the Redis event stream and query latency, DuckDB and chDB.

`python -m bench.analytics [--events 1000000] [--backends duckdb,chdb] [--runs 50] [--load stream|direct]`
`python -m bench.analytics --store duckdb:///path/bench.duckdb` (queries only, on a store loaded before)
`--duckdb-memory-mb 128`: DuckDB within the event sink's memory limit (`MAILERS_DUCKDB_MEMORY_MB`)

Synthetic traffic: `--events` events over 30 days in 50 workspaces, message lifecycles (sent,
delivered or bounced, opens, clicks, the odd complaint and unsubscribe), produced in time order as
the dispatchers would, 1,000 events per stream entry. `stream` loading fills a real redis-server first
(untimed), then times EventSinkLoop.run draining it into each backend (5,000-event batches); `direct`
times `store.insert` of 5,000-event batches (used above 2M events, where the stream would need
gigabytes of Redis memory). Then each query runs `--runs` times against random workspaces, and the
report gives p50/p95/p99 in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import redis.asyncio as aioredis

from actors.event_sink.body import EventSinkLoop
from analytics.errors import StoreUnavailable
from analytics.queries import CampaignReportQuery, EventsQuery, SummaryQuery
from analytics.store import AnalyticsStore, open_store
from schemas.events import Event, EventMessage
from store import keyspace
from store.redis_server import RedisServer

END = datetime(2026, 4, 1, tzinfo=UTC)
DAYS, WORKSPACES, PER_ENTRY, BATCH = 30, 50, 1000, 5000
PROVIDERS = ["amazon-ses", "mailgun", "sendgrid", "resend", "postmark", "smtp"]
DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "example.com", "acme.org", "proton.me"]
TAGS = [[], ["welcome"], ["receipt"], ["newsletter", "weekly"], ["promo"]]


def lifecycle(rng: random.Random, message: EventMessage) -> list[tuple[str, dict]]:
    steps: list[tuple[str, dict]] = [("message.sent", {})]
    roll = rng.random()
    if roll < 0.04:
        return [
            *steps,
            ("message.bounced", {"bounce": {"type": rng.choice(["hard", "soft"]), "code": "550"}}),
        ]
    steps.append(("message.delivered", {}))
    if rng.random() < 0.35:
        steps += [("message.opened", {})] * rng.randint(1, 3)
        if rng.random() < 0.25:
            steps.append(("message.clicked", {"url": f"https://acme.com/p/{rng.randrange(20)}"}))
    if rng.random() < 0.002:
        steps.append(("message.complained", {}))
    if rng.random() < 0.003:
        steps.append(("subscriber.unsubscribed", {}))
    return steps


def synthetic(total: int, *, seed: int = 1, batch: int = BATCH) -> Iterator[list[Event]]:
    """`total` events in batches, each batch a later slice of the 30 days (shuffled inside the slice)."""
    rng = random.Random(seed)
    start, span = END - timedelta(days=DAYS), timedelta(days=DAYS) / max(1, total // batch)
    made = serial = 0
    while made < total:
        slice_start = start + span * (made // batch)
        events: list[Event] = []
        while len(events) < min(batch, total - made):
            serial += 1
            workspace = f"ws{rng.randrange(WORKSPACES):02d}"
            message = EventMessage(
                id=f"msg_{serial:026d}",
                to=f"u{rng.randrange(50_000)}@{rng.choice(DOMAINS)}",
                from_="hello@acme.com",
                provider=rng.choice(PROVIDERS),
                server=f"srv_{rng.randrange(4)}",
                tags=rng.choice(TAGS),
                campaign_id=f"cmp_{rng.randrange(5)}" if rng.random() < 0.5 else None,
            )
            for type_, data in lifecycle(rng, message):
                events.append(
                    Event(
                        id=f"evt_{len(events) + made:026d}",
                        type=type_,
                        workspace=workspace,
                        message=message,
                        data=data,
                        created_at=slice_start + span * rng.random(),
                    )
                )
        events = events[: total - made]
        made += len(events)
        yield events


async def fill_stream(redis: aioredis.Redis, total: int) -> None:
    encode = msgspec.msgpack.Encoder().encode
    for events in synthetic(total, batch=PER_ENTRY * 20):
        async with redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(events), PER_ENTRY):
                pipe.xadd(
                    keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: encode(events[start : start + PER_ENTRY])}
                )
            await pipe.execute()


async def ingest_stream(redis: aioredis.Redis, store: AnalyticsStore, total: int) -> float:
    sink = EventSinkLoop(
        redis,
        store,
        group=f"bench-{store.backend}-{time.time_ns()}",
        consumer="bench",
        batch_size=BATCH,
        max_latency=0.25,
    )
    stop = asyncio.Event()
    started = time.perf_counter()
    running = asyncio.create_task(sink.run(stop))
    while sink.stats.events < total:  # noqa: ASYNC110 - polling the sink's counter is the measurement
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    stop.set()
    await running
    return total / elapsed


async def ingest_direct(store: AnalyticsStore, total: int) -> float:
    """Batches as the sink inserts them, a failed one retried as the sink does (a DuckDB limit that ran
    out doubles, analytics/duckdb_backend.py); the retries' time counts."""
    elapsed = 0.0
    for events in synthetic(total):
        started = time.perf_counter()
        for attempt in range(5):
            try:
                await store.insert(events)
                break
            except StoreUnavailable as failed:
                print(f"insert failed (attempt {attempt + 1}), retried: {str(failed).splitlines()[0]}")
        else:
            raise RuntimeError("a batch failed five times")
        elapsed += time.perf_counter() - started
    return total / elapsed


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


async def timed(runs: int, call: Callable[[str], Awaitable[object]]) -> tuple[float, float, float]:
    rng, samples = random.Random(2), []
    for _ in range(runs):
        workspace = f"ws{rng.randrange(WORKSPACES):02d}"
        started = time.perf_counter()
        await call(workspace)
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)


def query_set(store: AnalyticsStore) -> dict[str, Callable[[str], Awaitable[object]]]:
    month = {"from_": END - timedelta(days=DAYS), "to": END}

    async def deep_page(ws: str) -> object:
        first = await store.events_page(ws, EventsQuery(limit=50, **month), now=END)
        return await store.events_page(ws, EventsQuery(limit=50, cursor=first.next_cursor, **month), now=END)

    return {
        "summary 30 d by day": lambda ws: store.summary(ws, SummaryQuery(**month), now=END),
        "summary 30 d by day, group_by provider": lambda ws: store.summary(
            ws, SummaryQuery(group_by="provider", **month), now=END
        ),
        "summary 24 h by hour, group_by tag": lambda ws: store.summary(
            ws, SummaryQuery(interval="hour", group_by="tag", from_=END - timedelta(days=1), to=END), now=END
        ),
        "events page (50, newest)": lambda ws: store.events_page(ws, EventsQuery(limit=50, **month), now=END),
        "events page (50, type=message.clicked)": lambda ws: store.events_page(
            ws, EventsQuery(limit=50, type="message.clicked", **month), now=END
        ),
        "events page 1 + page 2 via cursor": deep_page,
        "campaign report (whole history)": lambda ws: store.campaign_report(
            ws, "cmp_1", CampaignReportQuery(), now=END
        ),
    }


async def bench_backend(
    backend: str, args: argparse.Namespace, work: Path, redis: aioredis.Redis | None
) -> None:
    url = (
        f"duckdb://{work / 'bench.duckdb'}"
        if backend == "duckdb"
        else f"chdb://{work / 'chdb'}?database=bench"
    )
    store = open_store(url, duckdb_memory_mb=args.duckdb_memory_mb)
    await store.migrate()
    rate = await (
        ingest_stream(redis, store, args.events) if redis is not None else ingest_direct(store, args.events)
    )
    print(
        f"\n### {backend}: {args.events:,} events, "
        f"ingest {'from the Redis stream' if redis else 'by direct insert'}: "
        f"{rate:,.0f} events/s\n"
    )
    memory = getattr(store, "memory", None)
    if memory is not None:
        print(f"DuckDB's memory after the load: {await memory()}\n")
    await bench_queries(store, args.runs)
    await store.close()


async def bench_queries(store: AnalyticsStore, runs: int) -> None:
    print("| query | p50 ms | p95 ms | p99 ms |\n|---|---:|---:|---:|")
    for name, call in query_set(store).items():
        await call("ws00")  # warm the caches once
        p50, p95, p99 = await timed(runs, call)
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {p99:.1f} |", flush=True)


async def run(args: argparse.Namespace) -> None:
    if args.store:
        store = open_store(args.store, duckdb_memory_mb=args.duckdb_memory_mb)
        print(f"### queries only, on {args.store}\n")
        await bench_queries(store, args.runs)
        await store.close()
        return
    with tempfile.TemporaryDirectory(prefix="bench-analytics-", dir=args.data_dir) as tmp:
        work = Path(tmp)
        server = redis = None
        if args.load == "stream":
            server = RedisServer(work / "redis", appendonly=False).start()
            redis = aioredis.Redis.from_url(server.url)
            started = time.perf_counter()
            await fill_stream(redis, args.events)
            print(
                f"stream filled with {args.events:,} events "
                f"in {time.perf_counter() - started:.1f} s (untimed)"
            )
        try:
            for backend in args.backends.split(","):
                await bench_backend(backend, args, work, redis)
        finally:
            if redis is not None:
                await redis.aclose()
            if server is not None:
                server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--backends", default="duckdb,chdb")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument(
        "--load",
        choices=["stream", "direct"],
        default=None,
        help="default: stream up to 2M events, direct above",
    )
    parser.add_argument(
        "--store",
        default=None,
        help="skip loading: time the queries on an existing store built by this benchmark (a URL)",
    )
    parser.add_argument(
        "--data-dir", default=None, help="where the temporary databases go (default: system temp)"
    )
    parser.add_argument(
        "--duckdb-memory-mb",
        type=int,
        default=0,
        help="the DuckDB file's memory limit, as MAILERS_DUCKDB_MEMORY_MB (0: DuckDB's default)",
    )
    args = parser.parse_args()
    args.load = args.load or ("stream" if args.events <= 2_000_000 else "direct")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
