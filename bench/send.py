"""The send path under load, each figure beside a baseline measured in the same run.

`python -m bench [--seconds 10] [--rates 250,500] [--bulk-requests 20] [--delivery 10000]
[--phases singles,bulk,attack,delivery,micro,templates,campaign_report]`

- single sends: latency p50/p95/p99 at fixed offered rates (open loop), and the sustained rate at 64
  connections (closed loop) — Mailers' `/v1/send` (auth, rate limit, validation, suppression shard call,
  routing, the coalesced Lua enqueue) against a bare aiohttp + msgspec handler that only decodes and
  answers 202;
- bulk: 1,000-message requests, latency percentiles and messages accepted per second;
- delivery: messages per second from the API into a local aiosmtpd sink through the whole pipeline
  (dispatcher actor, SMTP adapter), against a bare aiosmtplib client sending pre-rendered bytes;
- attack (bench/attack.py): a normal client's p50/p95/p99 at 20 sends a second, alone and while an
  attacker with its own key sends the worst bodies we can construct at full speed;
- micro (bench/micro.py): costs and waits that tests used to assert on the clock;
- templates (bench/templates.py): the cached template render per recipient, beside python-liquid;
- campaign_report (bench/campaign_report.py): the campaign report of a 1M-recipient campaign with 10M
  events on chDB, beside a hand-written totals query (not in the default phases: the data takes minutes).
Everything runs on this machine: Redis (AOF on), a local Ray started by `mailers serve`, the servers in
their own processes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import msgspec

from bench import attack, campaign_report, cpu, templates
from bench.load import Result, closed_loop, open_loop
from bench.micro import micro
from bench.scratch import scratch_dir
from bench.smtp import bare_client, start_sink, typical_message
from store.redis_server import RedisServer, free_port

KEY = "mk_bench_" + "k" * 32
MAILERS = str(Path(sys.executable).parent / "mailers")


def single_body(i: int) -> bytes:
    return msgspec.json.encode(
        {
            "from": "Acme <hello@acme.com>",
            "to": f"user{i}@example.com",
            "subject": "Welcome",
            "html": "<p>Hi</p>",
            "text": "Hi",
        }
    )


def bulk_body(i: int, size: int = 1000, server: str | None = None) -> bytes:
    item = {"from": "Acme <hello@acme.com>", "subject": "Welcome", "html": "<p>Hi</p>", "text": "Hi"}
    if server:
        item["routing"] = {"server": server}
    return msgspec.json.encode({"messages": [{**item, "to": f"u{i}-{j}@example.com"} for j in range(size)]})


async def wait_ready(url: str, process: subprocess.Popen, within: float = 120) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{url} exited with {process.returncode}")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError(f"{url} not ready")


def start_mailers(port: int, redis_url: str, data_dir: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILERS_")}
    env.update(
        MAILERS_PORT=str(port),
        MAILERS_REDIS_URL=redis_url,
        MAILERS_DATA_DIR=data_dir,
        MAILERS_BOOTSTRAP_KEY=KEY,
        # A high-volume sender's limits, as an operator raises them for one: the per-key request rate,
        # body bytes and worker CPU budgets would otherwise be what is measured.
        MAILERS_RATE_LIMIT_PER_SECOND="1000000",
        MAILERS_RATE_LIMIT_BURST="1000000",
        MAILERS_BODY_BYTES_PER_SECOND="1000000000",
        MAILERS_WORKER_CPU_PER_KEY="100",
        MAILERS_ALLOW_PRIVATE_TARGETS="true",  # the delivery phase's SMTP sink listens on 127.0.0.1
    )
    return subprocess.Popen([MAILERS, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_baseline(port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.baseline_server", str(port)])


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def row(name: str, result: Result) -> str:
    return (
        f"| {name} | {result.rate:,.0f} | {result.percentile(50):.1f} | {result.percentile(95):.1f} | "
        f"{result.percentile(99):.1f} | {result.errors} |"
    )


async def singles(
    base: str, baseline: str, rates: list[int], seconds: float, redis_url: str
) -> tuple[list[str], list[str]]:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    rows, spent = [], []
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        for target, name in ((baseline, "bare aiohttp+msgspec"), (base, "Mailers /v1/send")):
            await closed_loop(
                session, target + "/v1/send", single_body, headers, concurrency=16, seconds=2
            )  # warm
            for rate in rates:
                await wait_idle(redis_url)
                result = await open_loop(
                    session, target + "/v1/send", single_body, headers, rate=rate, seconds=seconds
                )
                rows.append(row(f"{name} @ {rate}/s offered", result))
            await wait_idle(redis_url)
            before = cpu.snapshot()
            result = await closed_loop(
                session, target + "/v1/send", single_body, headers, concurrency=64, seconds=seconds
            )
            rows.append(row(f"{name}, 64 connections (max)", result))
            if target == base:
                spent = cpu.table(cpu.spent(before, cpu.snapshot()), len(result.latencies), result.seconds)
    return rows, spent


async def bulks(base: str, requests: int, redis_url: str) -> tuple[list[str], list[str]]:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    bodies = [bulk_body(i) for i in range(requests)]
    latencies = []
    async with aiohttp.ClientSession() as session:
        before = cpu.snapshot()
        started = time.perf_counter()
        for body in bodies:
            begin = time.perf_counter()
            async with session.post(base + "/v1/send/bulk", data=body, headers=headers) as response:
                await response.read()
                assert response.status == 202, response.status
            latencies.append(time.perf_counter() - begin)
        elapsed = time.perf_counter() - started
        spent = cpu.table(cpu.spent(before, cpu.snapshot()), requests * 1000, elapsed)
    result = Result(latencies, 0, elapsed)
    rows = [
        f"| bulk of 1,000, sequential | {requests * 1000 / elapsed:,.0f} msgs/s | "
        f"{result.percentile(50):.1f} | "
        f"{result.percentile(95):.1f} | {result.percentile(99):.1f} | 0 |"
    ]
    await wait_idle(redis_url)
    return rows + [await _concurrent_bulks(base, headers, bodies, clients=4)], spent


async def _concurrent_bulks(base: str, headers: dict, bodies: list[bytes], *, clients: int) -> str:
    latencies: list[float] = []
    pending = list(bodies)
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            while pending:
                body = pending.pop()
                begin = time.perf_counter()
                async with session.post(base + "/v1/send/bulk", data=body, headers=headers) as response:
                    await response.read()
                    assert response.status == 202, response.status
                latencies.append(time.perf_counter() - begin)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    result = Result(latencies, 0, elapsed)
    return (
        f"| bulk of 1,000, {clients} clients at once | {len(bodies) * 1000 / elapsed:,.0f} msgs/s | "
        f"{result.percentile(50):.1f} | {result.percentile(95):.1f} | {result.percentile(99):.1f} | 0 |"
    )


async def delivery(base: str, redis_url: str, count: int) -> tuple[list[str], list[str]]:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    sink_port = free_port()
    sink = start_sink(sink_port)
    try:
        await asyncio.sleep(1.0)
        messages = [typical_message() for _ in range(count)]
        bare = await bare_client(sink_port, messages, 16)
        async with aiohttp.ClientSession() as session:
            server = {
                "name": "bench-sink",
                "provider": "smtp",
                "priority": 1,
                "config": {"host": "127.0.0.1", "port": sink_port, "security": "none", "pool_size": 16},
            }
            async with session.post(base + "/v1/sending-servers", json=server, headers=headers) as response:
                server_id = (await response.json())["id"]
            await asyncio.sleep(2.0)  # the dispatcher picks the new server up within a second
            await wait_idle(redis_url)
            before = cpu.snapshot()
            started = time.perf_counter()
            for i in range(0, count, 1000):
                body = bulk_body(10_000 + i, min(1000, count - i), server=server_id)
                async with session.post(base + "/v1/send/bulk", data=body, headers=headers) as response:
                    await response.read()
            ids_done = await _wait_sent(redis_url, server_id, count)
            elapsed = time.perf_counter() - started
            spent = cpu.spent(before, cpu.snapshot())
    finally:
        sink.terminate()
        sink.wait()
    ours = ids_done / elapsed
    return (
        [
            "| delivery into aiosmtpd: bare aiosmtplib (16 conns, pre-rendered) | "
            f"{bare:,.0f} msgs/s | | | | |",
            "| delivery into aiosmtpd: Mailers end to end | "
            f"{ours:,.0f} msgs/s ({ours / bare:.0%} of bare) | | | | |",
        ],
        cpu.table(spent, count, elapsed),
    )


async def attack_rows(base: str) -> list[str]:
    """Issue #11's row: the normal client alone, then with the attacker (its own key), in one run; each
    beside the server's event-loop lag over the same seconds (`mailers_event_loop_lag_seconds`)."""
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession() as session:
        body = {"name": "attacker", "scopes": ["send"]}
        async with session.post(base + "/v1/api-keys", json=body, headers=headers) as response:
            attacker = f"Bearer {(await response.json())['secret']}"
    before = await loop_lag(base)
    alone = await attack.normal_client(base, headers)
    between = await loop_lag(base)
    attacked, answers = await attack.attacked(base, headers, attacker)
    after = await loop_lag(base)
    name = f"normal /v1/send @ {attack.NORMAL_RATE:.0f}/s"
    return [
        f"| {name}, alone | {len(alone)} requests | " + _percentiles(alone) + " | 0 |",
        f"| {name}, attacker at full speed ({answers}) | {len(attacked)} requests | "
        + _percentiles(attacked)
        + " | 0 |",
        _lag_row("ingress loop lag, alone", before, between),
        _lag_row("ingress loop lag, attacker at full speed", between, after),
    ]


async def loop_lag(base: str) -> dict[float, float]:
    """The server's loop-lag histogram: upper bound (s) -> cumulative count."""
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/metrics") as response:
            text = await response.text()
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("mailers_event_loop_lag_seconds_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def _lag_row(name: str, start: dict[float, float], end: dict[float, float]) -> str:
    counts = {bound: end[bound] - start.get(bound, 0.0) for bound in end}
    ticks = counts[float("inf")]

    def over(seconds: float) -> int:
        return int(ticks - counts[seconds])

    lower = max((b for b in counts if counts[b] < ticks), default=0.0)  # the longest lag was above this
    upper = min(b for b in counts if counts[b] == ticks)
    return (
        f"| {name} (5 ms ticks) | {ticks:.0f} ticks | over 10 ms: {over(0.01)} | over 20 ms: {over(0.02)} | "
        f"over 50 ms: {over(0.05)} | longest in ({lower * 1000:g}, {upper * 1000:g}] ms |"
    )


def _percentiles(latencies: list[float]) -> str:
    return " | ".join(f"{attack.percentile(latencies, p):.1f}" for p in (50, 95, 99))


async def _wait_sent(redis_url: str, server_id: str, count: int, within: float = 300) -> int:
    """Done when the server's dispatch group has read every entry and none is pending (all recorded)."""
    import redis.asyncio as aioredis

    from store import keyspace

    client = aioredis.Redis.from_url(redis_url)
    stream = keyspace.dispatch_stream("default", server_id)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            groups = await client.xinfo_groups(stream)
            group = next((g for g in groups if g["name"] == keyspace.DISPATCH_GROUP.encode()), None)
            if group and group["entries-read"] and group["entries-read"] >= count and group["pending"] == 0:
                return count
            await asyncio.sleep(0.1)
        return int(group["entries-read"] or 0) - int(group["pending"]) if group else 0
    finally:
        await client.aclose()


async def wait_idle(redis_url: str, within: float = 180) -> None:
    """Until every dispatch stream's, the event stream's and the audit stream's consumer groups have
    caught up and the chained audit entries are stored, so one phase's backlog (dispatch, event ingest,
    webhooks, audit) does not run during the next phase's measurement."""
    import redis.asyncio as aioredis

    from store import keyspace

    client = aioredis.Redis.from_url(redis_url)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            streams = [k async for k in client.scan_iter(match="m:{*}:dispatch:*")]
            streams += [k for k in (keyspace.EVENT_STREAM, keyspace.AUDIT_STREAM) if await client.exists(k)]
            busy = bool(await client.xlen(keyspace.AUDIT_CHAINED))
            for stream in streams:
                for group in await client.xinfo_groups(stream):
                    busy = busy or bool(group.get("lag")) or bool(group["pending"])
            if not busy:
                return
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


async def run(args: argparse.Namespace) -> None:
    phases = set(args.phases.split(","))
    if "micro" in phases:
        print("\n".join(await micro()) + "\n")
        phases.discard("micro")
    if "templates" in phases:
        print("\n".join(templates.report()) + "\n")
        phases.discard("templates")
    if "campaign_report" in phases:
        print("\n".join(await campaign_report.run(1_000_000, 20, None)) + "\n")
        phases.discard("campaign_report")
    if "campaigns" in phases:  # its own server and Redis (a large in-flight window, 1M subscribers)
        from bench import campaigns  # it uses this module's helpers: imported here, not at the top

        print("\n".join(await campaigns.run(args)) + "\n")
        phases.discard("campaigns")
    if phases:
        await run_server_phases(args, phases)


async def run_server_phases(args: argparse.Namespace, phases: set[str]) -> None:
    data = str(scratch_dir("mailers-bench-"))
    redis = RedisServer(Path(data) / "redis", appendonly=True).start()
    port, baseline_port = free_port(), free_port()
    mailers = start_mailers(port, redis.url, data)
    baseline = start_baseline(baseline_port)
    base, bare = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{baseline_port}"
    try:
        await wait_ready(base + "/readyz", mailers)
        await wait_ready(bare + "/healthz", baseline)
        rows, breakdowns = [], {}
        if "singles" in phases:
            single_rows, breakdowns["/v1/send, 64 connections"] = await singles(
                base, bare, [int(r) for r in args.rates.split(",")], args.seconds, redis.url
            )
            rows += single_rows
        if "bulk" in phases:
            await wait_idle(redis.url)
            bulk_rows, breakdowns["bulk of 1,000, sequential"] = await bulks(
                base, args.bulk_requests, redis.url
            )
            rows += bulk_rows
        if "attack" in phases:
            await wait_idle(redis.url)
            rows += await attack_rows(base)
        if "delivery" in phases:
            await wait_idle(redis.url)
            delivery_rows, breakdowns["delivery end to end"] = await delivery(base, redis.url, args.delivery)
            rows += delivery_rows
    finally:
        stop(mailers)
        stop(baseline)
        redis.stop()
    print("| what | throughput | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    for phase, breakdown in breakdowns.items():
        print(f"\nCPU during {phase}:\n")
        print("\n".join(breakdown))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rates", default="250,500")
    parser.add_argument("--bulk-requests", type=int, default=20)
    parser.add_argument("--delivery", type=int, default=10000)
    parser.add_argument(
        "--subscribers", type=int, default=1_000_000, help="campaigns: the fan-out's audience"
    )
    parser.add_argument("--campaign-delivery", dest="campaign_delivery", type=int, default=10_000)
    parser.add_argument(
        "--phases",
        default="singles,bulk,attack,delivery,templates",
        help="which of singles,bulk,attack,delivery,micro,templates,campaign_report,campaigns to run (micro: "
        "figures moved out of the tests; attack: a normal client's latency alone and beside an attacker, "
        "issue #11; templates: the cached template render, issue #12; campaign_report: the report on 10M "
        "events, issue #13; campaigns: fan-out, RSS and end to end, issue #13)",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
