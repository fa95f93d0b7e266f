"""Subscribers, bulk upserts and CSV imports (issue #12), each figure beside a baseline of the same run.

`python -m bench.audience [--subscribers 1000000] [--bulk-requests 20] [--csv-rows 1000000]
[--phases memory,bulk,csv]`

- memory: Redis `used_memory` per subscriber after loading `--subscribers` through the store's bulk
  upsert path (`SubscriberStore.upsert`, batches of 10,000, one list): the same read → plan → script the
  API runs, without HTTP. Baseline: the payload itself (msgpack record + address + id bytes).
- bulk: `POST /v1/lists/{id}/subscribers` with 10,000 new subscribers per request, sequential, p50/p95
  (target p95 ≤ 500 ms), beside a bare pipelined HSET of the same records from this process; then each
  request's time in order, and the handler's phases (its `Server-Timing` header) of the three slowest
  requests and the median one.
- csv: a `--csv-rows` file streamed to `POST /v1/lists/{id}/imports`, timed until the import runner
  completes it: rows/s (target ≥ 50,000) and the peak RSS growth of the ingress + import-runner processes
  (target ≤ 300 MB), beside parsing the same file with the csv module alone; then until the event sink
  has stored the import's events (its CPU per row until then, and the end-to-end rate).
`mailers serve` (with its local Ray and the import runner) and Redis run on this machine. The phases
start once the server's processes are quiet after `/readyz` (its actors still import and migrate for a
while after it answers), and say how long that took.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import statistics
import subprocess
import time
from pathlib import Path

import aiohttp
import msgspec
import redis.asyncio as aioredis

from bench.process_memory import CpuMeter, RssSampler, cpu_seconds, descendants_named
from bench.scratch import scratch_dir
from bench.send import KEY, MAILERS, stop, wait_ready
from schemas.audience import ListRecord, SubscriberInput, SubscriberRecord
from store import keyspace
from store.redis_server import RedisServer, free_port
from store.subscribers import SubscriberStore

BATCH = 10_000
HEADERS = {"Authorization": f"Bearer {KEY}"}
JSON = {"Content-Type": "application/json"}


def person(i: int) -> dict:
    return {"email": f"user{i}@example.com", "name": f"User {i}", "attributes": {"plan": "pro", "n": i}}


async def memory(redis_url: str, count: int) -> list[str]:
    redis = aioredis.Redis.from_url(redis_url)
    store, target = (
        SubscriberStore(redis),
        ListRecord(id="lst_mem", workspace="mem", name="m", created_ms=0, updated_ms=0),
    )
    before = (await redis.info("memory"))["used_memory"]
    started = time.perf_counter()
    for start in range(0, count, BATCH):
        items = [
            SubscriberInput(email=p["email"], name=p["name"], attributes=p["attributes"])
            for p in map(person, range(start, min(start + BATCH, count)))
        ]
        await store.upsert(target, items, mode="upsert", now_ms=int(time.time() * 1000))
    elapsed = time.perf_counter() - started
    after = (await redis.info("memory"))["used_memory"]
    # The loader's events wait on m:events until the event sink reads and trims them; at rest a
    # subscriber costs what remains without them.
    stream = await redis.memory_usage(keyspace.EVENT_STREAM) or 0
    await redis.delete(keyspace.EVENT_STREAM)
    at_rest = (await redis.info("memory"))["used_memory"]
    sample = await redis.hrandfield(keyspace.subscribers("mem"), 1, withvalues=True)
    record = msgspec.msgpack.decode(sample[1], type=SubscriberRecord)
    payload = len(sample[1]) + len(record.email) + len(record.id)
    await redis.flushdb()
    await redis.aclose()
    per, rest = (after - before) / count, (at_rest - before) / count
    return [
        f"| memory per subscriber, {count:,} loaded (store bulk path, {count / elapsed:,.0f}/s), "
        f"their events still on the stream ({stream / count:,.0f} B each) "
        f"| {per:,.0f} B | {per * 1e6 / 2**20:,.0f} MiB per million |",
        f"| memory per subscriber at rest (the events consumed) | {rest:,.0f} B "
        f"| {rest * 1e6 / 2**20:,.0f} MiB per million |",
        f"| baseline: the payload (record {len(sample[1])} B + address + id) | {payload:,} B | |",
    ]


async def slow_commands(redis_url: str) -> str:
    """Redis commands over 10 ms since `slowlog_from` reset the log: name → count and longest (a long
    script blocks every other client too)."""
    redis = aioredis.Redis.from_url(redis_url)
    try:
        found: dict[str, list[float]] = {}
        for entry in await redis.slowlog_get(1000):
            words = entry["command"].split(b" ") if isinstance(entry["command"], bytes) else [b"?"]
            name = words[0].decode(errors="replace").upper()
            if name == "EVALSHA" and len(words) > 1:
                name += " " + words[1][:8].decode(errors="replace")
            found.setdefault(name, []).append(entry["duration"] / 1000)
        return ", ".join(f"{n} ×{len(d)} (max {max(d):,.0f} ms)" for n, d in sorted(found.items())) or "none"
    finally:
        await redis.aclose()


async def slowlog_from(redis_url: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    await redis.config_set("slowlog-log-slower-than", 10_000)
    await redis.config_set("slowlog-max-len", 1000)
    await redis.slowlog_reset()
    await redis.aclose()


async def bulk(base: str, redis_url: str, requests: int, serve_pid: int, redis_pid: int) -> list[str]:
    await slowlog_from(redis_url)
    async with aiohttp.ClientSession(base, headers=HEADERS) as session:
        list_id = await new_list(session, "bulk")
        ours: list[float] = []
        phases: list[str] = []
        bodies = [
            msgspec.json.encode({"subscribers": [person(r * BATCH + j) for j in range(BATCH)]})
            for r in range(requests)
        ]
        with CpuMeter({"ingress": [serve_pid], "Redis": [redis_pid]}) as cpu:
            for body in bodies:
                started = time.perf_counter()
                post = session.post(f"/v1/lists/{list_id}/subscribers", data=body, headers=JSON)
                async with post as response:
                    assert response.status == 200, await response.text()
                    await response.read()
                    phases.append(response.headers.get("Server-Timing", ""))
                ours.append((time.perf_counter() - started) * 1000)
    slow = await slow_commands(redis_url)
    bare = await bare_hset(redis_url, requests)
    used = cpu.describe(requests, "request", scale=1e3, suffix="ms")
    return [
        f"| bulk upsert 10,000/request via HTTP ({requests} requests) | {_p(ours)} |",
        f"| CPU of those requests (what the machine's load does not inflate) | {used} | |",
        f"| baseline: pipelined HSET of the same 10,000 records | {_p(bare)} |",
        f"| … Redis commands over 10 ms meanwhile (SLOWLOG, any client) | {slow} | |",
        f"| … each request in order (ms) | {', '.join(f'{t:,.0f}' for t in ours)} | |",
        *[
            f"| … request {i + 1} ({ours[i]:,.0f} ms): the handler's phases (Server-Timing) | {phases[i]} | |"
            for i in sorted(sorted(range(len(ours)), key=ours.__getitem__)[-3:] + [_median_index(ours)])
        ],
    ]


async def bare_hset(redis_url: str, requests: int) -> list[float]:
    redis, times = aioredis.Redis.from_url(redis_url), []
    encode = msgspec.msgpack.Encoder().encode
    for r in range(requests):
        started = time.perf_counter()
        records = {f"sub_{r}_{j}": encode(person(r * BATCH + j)) for j in range(BATCH)}
        emails = {person(r * BATCH + j)["email"]: f"sub_{r}_{j}" for j in range(BATCH)}
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hset("bench:subs", mapping=records)
            pipe.hset("bench:subs:email", mapping=emails)
            await pipe.execute()
        times.append((time.perf_counter() - started) * 1000)
    await redis.delete("bench:subs", "bench:subs:email")
    await redis.aclose()
    return times


async def csv_import(
    base: str, serve_pid: int, redis_pid: int, rows: int, data: Path, redis_url: str
) -> list[str]:
    path = data / "people.csv"
    with path.open("w") as out:
        out.write("email,name,plan\n")
        for i in range(rows):
            out.write(f"csv{i}@example.com,Person {i},pro\n")
    started = time.perf_counter()
    parsed = sum(1 for _ in csv.reader(path.open(newline=""))) - 1
    bare = parsed / (time.perf_counter() - started)
    runners = descendants_named(serve_pid, "ImportRunnerActor")  # not another engineer's
    watched = [serve_pid, *runners]
    groups = {
        "ingress": [serve_pid],
        "import runner": runners,
        "event sink": descendants_named(serve_pid, "EventSink"),
        "Redis": [redis_pid],
    }
    async with aiohttp.ClientSession(base, headers=HEADERS) as session, RssSampler(watched) as rss:
        list_id = await new_list(session, "csv")
        started = time.perf_counter()
        with CpuMeter(groups) as cpu:
            state = await upload_and_follow(session, list_id, path)
        elapsed = time.perf_counter() - started
        # The import is complete when its rows are in Redis; its events reach the analytics store when
        # the event sink has read them all. Its CPU until then belongs to the import too.
        with CpuMeter({"event sink": groups["event sink"]}) as drain:
            lag = await analytics_drained(redis_url)
        total = time.perf_counter() - started
    assert state["status"] == "completed" and state["created"] == rows, state
    return [
        f"| CSV import of {rows:,} rows via HTTP + runner | {rows / elapsed:,.0f} rows/s "
        f"| peak RSS growth {rss.peak_growth_mb:,.0f} MB ({len(watched)} processes) |",
        f"| CPU of the import (what the machine's load does not inflate) | {cpu.describe(rows, 'row')} | |",
        f"| … the event sink until it had stored the import's events ({lag:,.1f} s after completion: "
        f"{rows / total:,.0f} rows/s end to end) | {drain.describe(rows, 'row')} more | |",
        f"| baseline: csv.reader over the same file | {bare:,.0f} rows/s | |",
    ]


async def analytics_drained(redis_url: str) -> float:
    """Seconds until the event sink's group has read and acknowledged every entry of the stream."""
    redis, started = aioredis.Redis.from_url(redis_url), time.perf_counter()
    try:
        while True:
            groups = {g["name"]: g for g in await redis.xinfo_groups(keyspace.EVENT_STREAM)}
            group = groups.get(b"analytics") or groups.get("analytics")
            if group is not None and not group["lag"] and not group["pending"]:
                return time.perf_counter() - started
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()


async def upload_and_follow(session: aiohttp.ClientSession, list_id: str, path: Path) -> dict:
    async def chunks():
        with path.open("rb") as source:
            while chunk := source.read(256 * 1024):
                yield chunk

    headers = {"Content-Type": "text/csv"}
    async with session.post(f"/v1/lists/{list_id}/imports", data=chunks(), headers=headers) as response:
        assert response.status == 202, await response.text()
        import_id = (await response.json())["id"]
    while True:
        async with session.get(f"/v1/lists/{list_id}/imports/{import_id}") as response:
            state = await response.json()
        if state["status"] != "running":
            return state
        await asyncio.sleep(0.2)


async def new_list(session: aiohttp.ClientSession, name: str) -> str:
    async with session.post("/v1/lists", json={"name": name}) as response:
        assert response.status == 201, await response.text()
        return (await response.json())["id"]


def _median_index(values: list[float]) -> int:
    return sorted(range(len(values)), key=values.__getitem__)[len(values) // 2]


def _p(values: list[float]) -> str:
    q = statistics.quantiles(values, n=20) if len(values) > 1 else values * 19
    return f"p50 {statistics.median(values):,.0f} ms | p95 {q[18]:,.0f} ms"


async def run(args: argparse.Namespace) -> None:
    phases = set(args.phases.split(","))
    data = scratch_dir("mailers-bench-audience-")
    redis = RedisServer(data / "redis", appendonly=False).start()
    print("| what | figure | |\n|---|---|---|", flush=True)
    try:
        if "memory" in phases:
            print("\n".join(await memory(redis.url, args.subscribers)), flush=True)
        if phases & {"bulk", "csv"}:
            await server_phases(args, phases, redis.url, data, redis.pid or 0)
    finally:
        redis.stop()


async def server_phases(
    args: argparse.Namespace, phases: set[str], redis_url: str, data: Path, redis_pid: int
) -> None:
    port = free_port()
    mailers = start_mailers(port, redis_url, data)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base + "/readyz", mailers)
        print(await settled(mailers.pid), flush=True)
        if "bulk" in phases:
            print(
                "\n".join(await bulk(base, redis_url, args.bulk_requests, mailers.pid, redis_pid)), flush=True
            )
        if "csv" in phases:
            figures = await csv_import(base, mailers.pid, redis_pid, args.csv_rows, data, redis_url)
            print("\n".join(figures), flush=True)
    finally:
        stop(mailers)


async def settled(serve_pid: int, *, quiet: float = 0.5, longest: float = 60.0) -> str:
    """Wait until `mailers serve` and every process under it (its Ray workers) use less than `quiet` of
    a core over a second (its actors poll: never zero), at most `longest` seconds: `/readyz` answers
    while the actors are still starting (imports, migrations), and requests sent then queue behind
    that work on 2 cores."""
    started, used, busy = time.perf_counter(), 0.0, 0.0
    tree = [serve_pid, *descendants_named(serve_pid, "")]
    before = sum(cpu_seconds(p) for p in tree)
    while time.perf_counter() - started < longest:
        await asyncio.sleep(1.0)
        tree = [serve_pid, *descendants_named(serve_pid, "")]
        now = sum(cpu_seconds(p) for p in tree)
        busy, before = now - before, now
        used += busy
        if busy < quiet:
            break
    waited = time.perf_counter() - started
    return (
        f"| server start-up after /readyz (until its processes used < {quiet} of a core) "
        f"| {waited:,.0f} s, {used:,.1f} CPU-s, last second {busy:,.2f} | |"
    )


def start_mailers(port: int, redis_url: str, data: Path) -> subprocess.Popen:
    """`mailers serve` as bench/send.py starts it, with body caps out of the way of a file of any size."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILERS_")}
    env.update(
        MAILERS_PORT=str(port),
        MAILERS_REDIS_URL=redis_url,
        MAILERS_DATA_DIR=str(data),
        MAILERS_BOOTSTRAP_KEY=KEY,
        MAILERS_RATE_LIMIT_PER_SECOND="1000000",
        MAILERS_RATE_LIMIT_BURST="1000000",
        MAILERS_MAX_BODY_BYTES=str(2**31),
        MAILERS_BODY_BYTES_PER_SECOND=str(2**31),
        # a million rows (35 MB) take longer than the default 30 s to arrive while the machine is loaded
        MAILERS_BODY_READ_TIMEOUT_SECONDS="3600",
    )
    return subprocess.Popen([MAILERS, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--bulk-requests", type=int, default=20)
    parser.add_argument("--csv-rows", type=int, default=1_000_000)
    parser.add_argument("--phases", default="memory,bulk,csv")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
