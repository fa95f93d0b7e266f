"""Campaigns (issue #13), each figure beside a baseline measured in the same run.

`python -m bench --phases campaigns` or `python -m bench.campaigns [--subscribers 1000000]
[--campaign-delivery 10000] [--bulk-requests 20] [--phases fanout,e2e] [--in-flight N] [--until-sent]
[--breakdown]` (or `--in-process N`: the runner body alone, CPU per recipient of the runner and of Redis,
see `in_process`):
- fan-out: a campaign over `--subscribers` subscribers to the sandbox server, from launch until every
  recipient is rendered (the template per subscriber) and durably queued (`n:done` = audience), in
  recipients/s; baseline: `/v1/send/bulk` of pre-rendered 1,000-message requests to the same server
  (`--bulk-requests 0`: none); with `--until-sent` also until the campaign is `sent`;
- peak RSS added during the fan-out (to `sent` with `--until-sent`) across every process of
  `mailers serve` (ingress, Ray, actors) and its Redis, and Redis `used_memory` added; `--breakdown`:
  Redis memory per message by key family (`MEMORY USAGE`) once every consumer has caught up;
- end to end into an aiosmtpd sink: a campaign of `--campaign-delivery` subscribers from launch to the
  last message recorded sent and to `sent`, beside a bare aiosmtplib client (16 connections) sending
  pre-rendered messages to the same sink and `/v1/send/bulk` of as many messages into the same sink (is
  a gap in the campaign part or in dispatch?), with the CPU of each of this run's processes.
Subscribers are loaded with the store's bulk upsert (what the API runs, without HTTP). The serve's
in-flight window (`MAILERS_CAMPAIGN_IN_FLIGHT`) is 10^8 unless `--in-flight` says otherwise (0: its
default, 1,000): the fan-out figure is defined up to "durably queued", so the dispatchers' pace must not
be what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bench import cpu
from bench.process_memory import RssSampler
from bench.scratch import scratch_dir
from bench.send import KEY, MAILERS, _wait_sent, bulk_body, stop, wait_idle, wait_ready
from bench.smtp import bare_client, start_sink, typical_message
from schemas.audience import ListRecord, SubscriberInput
from store import keyspace
from store.ledger import index_ranges
from store.redis_server import RedisServer, free_port
from store.replies import as_text
from store.subscribers import SubscriberStore

HEADERS = {"Authorization": f"Bearer {KEY}"}
WORKSPACE = "default"  # the bootstrap key's
BATCH = 10_000
TEMPLATE = {
    "name": "News",
    "subject": "News for {{ first_name }}",
    "html": "<p>Hello {{ first_name }},</p><p>Our December news, for {{ email }}.</p>",
    "variables": {"first_name": {"type": "string", "required": True}},
}


def template_of(links: int) -> dict:
    """The bench's template with `links` distinct tracked links in its body (`--links`: a newsletter has
    tens; 0, the default, is the template of every earlier pass)."""
    items = "".join(
        f'<p><a href="https://shop.example.com/p/{i}?utm=december">Item {i}</a></p>' for i in range(links)
    )
    return {**TEMPLATE, "html": str(TEMPLATE["html"]) + items}


def start_mailers(
    port: int, redis_url: str, data: Path, in_flight: int = 100_000_000, runners: int = 0
) -> subprocess.Popen:
    """`in_flight` 0 leaves `MAILERS_CAMPAIGN_IN_FLIGHT` at its default (1,000); `runners` 0 leaves
    `MAILERS_CAMPAIGN_RUNNERS` at its default (2)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILERS_")}
    env.update(
        MAILERS_PORT=str(port),
        MAILERS_REDIS_URL=redis_url,
        MAILERS_DATA_DIR=str(data),
        MAILERS_BOOTSTRAP_KEY=KEY,
        MAILERS_RATE_LIMIT_PER_SECOND="1000000",
        MAILERS_RATE_LIMIT_BURST="1000000",
        MAILERS_BODY_BYTES_PER_SECOND="1000000000",
        MAILERS_WORKER_CPU_PER_KEY="100",
        MAILERS_ALLOW_PRIVATE_TARGETS="true",
        MAILERS_PUBLIC_URL="https://mailers.bench",
    )
    if in_flight:
        env["MAILERS_CAMPAIGN_IN_FLIGHT"] = str(in_flight)
    if runners:
        env["MAILERS_CAMPAIGN_RUNNERS"] = str(runners)
    return subprocess.Popen([MAILERS, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def family(pid: int) -> list[int]:
    """`pid` and its descendants now (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found.add(child)
                frontier.append(child)
    return sorted(found)


async def post(session: aiohttp.ClientSession, url: str, body: dict, status: int = 201) -> dict:
    async with session.post(url, json=body, headers=HEADERS) as response:
        answer = await response.json()
        assert response.status == status, answer
        return answer


async def load_list(session, base: str, redis_url: str, count: int, prefix: str) -> str:
    made = await post(session, base + "/v1/lists", {"name": prefix})
    redis = aioredis.Redis.from_url(redis_url)
    store = SubscriberStore(redis)
    target = ListRecord(id=made["id"], workspace=WORKSPACE, name=prefix, created_ms=0, updated_ms=0)
    try:
        for start in range(0, count, BATCH):
            items = [
                SubscriberInput(email=f"{prefix}{i}@example.com", attributes={"first_name": f"F{i}"})
                for i in range(start, min(start + BATCH, count))
            ]
            await store.upsert(target, items, mode="upsert", now_ms=int(time.time() * 1000))
    finally:
        await redis.aclose()
    return made["id"]


async def launch(session, base: str, list_id: str, template_id: str, server_id: str) -> str:
    body = {
        "name": "bench",
        "from": "Acme <hello@acme.com>",
        "template": {"id": template_id},
        "audience": {"lists": [list_id]},
        "routing": {"server": server_id},
        "tracking": {"opens": True, "clicks": True},
    }
    made = await post(session, base + "/v1/campaigns", body)
    await post(session, f"{base}/v1/campaigns/{made['id']}/launch", {}, 200)
    return made["id"]


async def until_handed_over(redis_url: str, campaign_id: str, audience: int, within: float = 3600) -> float:
    redis = aioredis.Redis.from_url(redis_url)
    key = keyspace.campaign(WORKSPACE, campaign_id)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            done = await redis.hget(key, "n:done")
            if done is not None and int(done) >= audience:
                return time.perf_counter()
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    raise RuntimeError("the fan-out did not finish in time")


async def until_sent(session, base: str, campaign_id: str, within: float = 3600) -> float:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        async with session.get(f"{base}/v1/campaigns/{campaign_id}", headers=HEADERS) as response:
            if (await response.json())["status"] == "sent":
                return time.perf_counter()
        await asyncio.sleep(0.1)
    raise RuntimeError("the campaign did not finish in time")


async def bench(
    base: str, redis_url: str, serve_pid: int, redis_pid: int, args: argparse.Namespace
) -> list[str]:
    # `python -m bench --phases campaigns` passes its own arguments: these options take their defaults.
    phases = set(getattr(args, "campaign_phases", "fanout,e2e").split(","))
    args.in_flight = getattr(args, "in_flight", 100_000_000)
    args.until_sent = getattr(args, "until_sent", False)
    args.breakdown = getattr(args, "breakdown", False)
    args.links = getattr(args, "links", 0)
    window = args.in_flight or "default (1,000)"
    runners = getattr(args, "runners", 0) or "default (2)"
    rows = [
        f"load: `{os.getloadavg()[0]:.1f}` (1-minute average at the start); in-flight window {window}; "
        f"campaign runners {runners}; tracked links in the template {args.links}"
    ]
    async with aiohttp.ClientSession() as session:
        sandbox = await post(
            session, base + "/v1/sending-servers", {"name": "sandbox", "provider": "sandbox"}
        )
        template = await post(session, base + "/v1/templates", template_of(args.links))
        await asyncio.sleep(2.0)  # the dispatchers pick the new server up
        if "fanout" in phases:
            rows += await fanout(session, base, redis_url, serve_pid, redis_pid, args, sandbox, template)
        if "e2e" in phases:
            rows += await end_to_end(session, base, redis_url, args, template, serve_pid, redis_pid)
    rows.append(f"load: `{os.getloadavg()[0]:.1f}` (1-minute average at the end)")
    return rows


async def fanout(session, base, redis_url, serve_pid, redis_pid, args, sandbox, template) -> list[str]:
    rows = []
    mine = set(family(serve_pid)) | {redis_pid}
    if args.bulk_requests:  # baseline: bulk sends of pre-rendered messages to the same server
        bulk_before = cpu_of(mine)
        started = time.perf_counter()
        for i in range(args.bulk_requests):
            body = bulk_body(i, 1000, server=sandbox["id"])
            async with session.post(
                base + "/v1/send/bulk", data=body, headers={**HEADERS, "Content-Type": "application/json"}
            ) as response:
                assert response.status == 202, await response.text()
        bulk_elapsed = time.perf_counter() - started
        bulk_rate = args.bulk_requests * 1000 / bulk_elapsed
        # Durably queued is the figure: the CPU until the last 202, before the dispatchers catch up.
        bulk_cpu = cpu.spent(bulk_before, cpu_of(mine))
        await wait_idle(redis_url, within=600)
    loaded = time.perf_counter()
    list_id = await load_list(session, base, redis_url, args.subscribers, "fan")
    await wait_idle(redis_url, within=1800)  # the subscriber events are ingested before measuring
    rows.append(
        f"| loading {args.subscribers:,} subscribers (bulk upserts) and ingesting their events "
        f"| {time.perf_counter() - loaded:,.0f} s | | |"
    )
    pids = family(serve_pid)
    memory = aioredis.Redis.from_url(redis_url)
    used_before = (await memory.info("memory"))["used_memory"]
    mine = set(pids) | {redis_pid}
    async with RssSampler(pids) as rss, RssSampler([redis_pid]) as redis_rss:
        await memory.config_resetstat()
        fan_before = cpu_of(mine)
        started = time.perf_counter()
        campaign_id = await launch(session, base, list_id, template["id"], sandbox["id"])
        ended = await until_handed_over(redis_url, campaign_id, args.subscribers)
        fan_cpu = cpu.spent(fan_before, cpu_of(mine))
        fan_commands = await memory.info("commandstats")
        if args.until_sent:  # the whole campaign through the sandbox: the peak over every phase
            ended_sent = await until_sent(session, base, campaign_id)
    used_grew = (await memory.info("memory"))["used_memory"] - used_before
    rows.append(
        f"| Redis `used_memory` added, at the end | {used_grew / 2**20:,.0f} MB "
        f"({used_grew / args.subscribers:,.0f} B a recipient) | | |"
    )
    if args.breakdown:  # at rest: every consumer caught up, and a stream trim (every second) after that
        await wait_idle(redis_url, within=1800)
        archived_in = await until_archived(redis_url, within=600)
        rows.append(f"| the campaign's last bucket archived, after `sent` | {archived_in:,.1f} s | | |")
        await asyncio.sleep(2.0)
        rows += await memory_breakdown(redis_url)
        rows.append(
            f"| Redis `used_memory` added, at rest | "
            f"{((await memory.info('memory'))['used_memory'] - used_before) / 2**20:,.0f} MB | | |"
        )
    await memory.aclose()
    fan_rate = args.subscribers / (ended - started)
    baseline = (
        f"bulk `/v1/send/bulk` pre-rendered, same run: {bulk_rate:,.0f} msgs/s" if args.bulk_requests else ""
    )
    rows.append(
        f"| campaign fan-out, {args.subscribers:,} subscribers → rendered → durably queued (sandbox) | "
        f"{fan_rate:,.0f} recipients/s | {baseline} | ≥ 20,000/s |"
    )
    if args.until_sent:
        rows.append(
            f"| the same campaign launch → `sent` (sandbox) | "
            f"{args.subscribers / (ended_sent - started):,.0f} recipients/s | | |"
        )
    rows.append(
        f"| peak RSS added, `mailers serve` and its {len(pids) - 1} Ray/actor processes "
        f"| {rss.peak_growth_mb:,.0f} MB | at start {rss.start / 2**20:,.0f} MB | |"
    )
    rows.append(
        f"| peak RSS added to Redis | {redis_rss.peak_growth_mb:,.0f} MB "
        f"({redis_rss.peak_growth_mb * 2**20 / args.subscribers:,.0f} B a recipient) "
        f"| at start {redis_rss.start / 2**20:,.0f} MB | |"
    )
    rows.append(
        f"| peak RSS added, all processes (serve + Redis) | "
        f"{rss.peak_growth_mb + redis_rss.peak_growth_mb:,.0f} MB | | ≤ 300 MB for 1M |"
    )
    rows += [
        "",
        "Peak RSS added by each process of the serve (its own peak less its start; ≥ 1 MB):",
        "| process | MB |",
        "|---|---:|",
        *(
            f"| {name} | {grown:,.0f} |"
            for name, grown in rss.growth_by(cpu.label).most_common()
            if grown >= 1
        ),
    ]
    rows += [
        "",
        "CPU of this run's processes, the campaign's fan-out (launch → every recipient durably queued; the "
        "dispatchers, sending to the sandbox meanwhile, included):",
        *cpu.table(fan_cpu, args.subscribers, ended - started),
    ]
    if args.commands:
        rows += ["", *command_rows(fan_commands, args.subscribers)]
    if args.bulk_requests:
        rows += [
            "",
            "CPU of this run's processes, the bulk baseline (first request → last 202):",
            *cpu.table(bulk_cpu, args.bulk_requests * 1000, bulk_elapsed),
        ]
    rows.append("")
    await wait_idle(redis_url, within=3600)
    return rows


async def until_archived(redis_url: str, within: float) -> float:
    """Seconds until the archiver is done with every campaign (its set is empty): the quiet time
    (`MAILERS_CAMPAIGN_ARCHIVE_AFTER_SECONDS`) after the last message, then a pass (docs/campaigns.md)."""
    redis = aioredis.Redis.from_url(redis_url)
    started = time.perf_counter()
    try:
        while await redis.scard(keyspace.CAMPAIGNS_ARCHIVING):
            assert time.perf_counter() - started < within, "the archiver did not finish"
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()
    return time.perf_counter() - started


async def memory_breakdown(redis_url: str, sample: int = 200) -> list[str]:
    """Redis memory per message by key family (`MEMORY USAGE`: a sample of message hashes scaled up; the
    streams and indexes whole), divided by the messages in the index (run it with `--bulk-requests 0` for
    campaign messages only; the event stream also holds the subscribers')."""
    redis = aioredis.Redis.from_url(redis_url)
    try:
        families: dict[str, int] = {}

        def add(name: str, size: int | None) -> None:
            families[name] = families.get(name, 0) + int(size or 0)

        index, ranges = keyspace.message_index(WORKSPACE), keyspace.message_ranges(WORKSPACE)
        # a packed campaign's messages are one mark in the index and a count (store/ledger/index_ranges.py)
        counts = [int(c) for c in await redis.hvals(ranges)]
        count = int(await redis.zcard(index)) - len(counts) + sum(counts)
        ids, _ = await index_ranges.newest_first(redis, WORKSPACE, limit=sample, after=None)
        scale = count / max(1, len(ids))
        hashes, fields = 0, dict.fromkeys(("p", "ev", "m", "srv", "prv", "pmid", "s", "att"), 0)
        held = 0  # of the sample, messages with a hash of their own (the others are archived, or gone)
        for message_id in ids:
            key = keyspace.message(WORKSPACE, message_id)
            hashes += await redis.memory_usage(key, samples=0) or 0
            found = await redis.hgetall(key)
            held += bool(found)
            for name, value in found.items():
                fields[as_text(name)] = fields.get(as_text(name), 0) + len(value)
        add("message hashes", int(hashes * scale))
        for name, size in fields.items():  # p: the payload, ev: its timeline, m: its meta
            add(f"  of which `{name}` (bytes)", int(size * scale))
        add("messages with a hash of their own (keys)", int(held * scale))
        buckets = archived = 0  # the archive (store/ledger/archive.py): a bucket of 128 positions a key
        async for key in redis.scan_iter(match="m:{*}:arc:*", count=10_000):
            buckets += 1
            archived += await redis.memory_usage(key, samples=0) or 0
        add("archive buckets (keys)", buckets)
        add("archive buckets", archived)
        add("message index zset", await redis.memory_usage(index, samples=0))
        add("message index ranges", await redis.memory_usage(ranges, samples=0))
        add("m:events stream", await redis.memory_usage(keyspace.EVENT_STREAM, samples=0))
        async for key in redis.scan_iter(match="m:{*}:dispatch:*", count=1000):
            add("dispatch streams", await redis.memory_usage(key, samples=0))
        mappings = 0
        async for _ in redis.scan_iter(match="m:pmid:*", count=10_000):
            mappings += 1
        add("provider message id mappings (keys)", mappings)
        async for key in redis.scan_iter(match="m:{*}:cmp:*", count=10_000):
            add("campaign hash, snapshot, failures", await redis.memory_usage(key, samples=0))
    finally:
        await redis.aclose()
    return [
        f"| Redis, {name} | {size:,} {'keys' if 'keys' in name else 'B'} "
        f"({size / max(1, count):,.1f} per message, {count:,} messages) | | |"
        for name, size in families.items()
    ]


PROFILED = ("ray::Dispatcher", "ray::EventSink", "smtp sink")


def start_profilers(directory: str | None, pids: set[int], phase: str) -> list[subprocess.Popen]:
    """`--profile DIR`: py-spy (installed in the venv) records the dispatcher, the event sink and the SMTP
    sink during `phase`, as collapsed stacks (`DIR/<phase>-<process>.txt`, one line per stack and its
    sample count) for reading where a process's CPU goes."""
    if not directory:
        return []
    Path(directory).mkdir(parents=True, exist_ok=True)
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    started = []
    for pid, label in cpu_of(pids):
        if label in PROFILED:
            out = Path(directory) / f"{phase}-{label.replace('ray::', '').replace(' ', '-')}.txt"
            started.append(
                subprocess.Popen(
                    [py_spy, "record", "-r", "250", "-f", "raw", "-o", str(out), "--pid", pid],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    time.sleep(1.0)  # py-spy attaches
    return started


def stop_profilers(profilers: list[subprocess.Popen]) -> None:
    for process in profilers:
        process.send_signal(signal.SIGINT)
    for process in profilers:
        process.wait(timeout=60)


def cpu_of(pids: set[int]) -> dict[tuple[str, str], float]:
    """bench.cpu.snapshot restricted to this run's processes (other benchmarks share the machine); the
    serve's processes `bench.cpu` has no name for (the ingress's CPU worker processes, which run a heavy
    bulk request) count as "ingress workers"."""
    seen = {key: value for key, value in cpu.snapshot().items() if int(key[0]) in pids}
    named = {int(pid) for pid, _ in seen}
    for pid in pids - named:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seen[(str(pid), "ingress workers")] = (int(fields[11]) + int(fields[12])) / cpu.TICK
    return seen


async def campaign_timeline(session, base: str, campaign_id: str, started: float) -> str:
    """Where the end-to-end time went, from the campaign's messages (their `message.accepted` and
    `message.sent` times, read through the API) and its `launched_at` / `completed_at`; `started` is the
    wall clock (time.time()) before the campaign was created."""
    ids: list[str] = []
    cursor = None
    while True:
        url = f"{base}/v1/messages?campaign_id={campaign_id}&limit=100" + (
            f"&cursor={cursor}" if cursor else ""
        )
        async with session.get(url, headers=HEADERS) as response:
            page = await response.json()
        ids += [m["id"] for m in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    gate = asyncio.Semaphore(16)

    async def times(message_id: str) -> tuple[float, float]:
        async with gate, session.get(f"{base}/v1/messages/{message_id}", headers=HEADERS) as response:
            view = await response.json()
        at = {e["type"]: parse_time(e["created_at"]) for e in view["events"]}
        return at["message.accepted"], at["message.sent"]

    found = await asyncio.gather(*(times(i) for i in ids))
    async with session.get(f"{base}/v1/campaigns/{campaign_id}", headers=HEADERS) as response:
        campaign = await response.json()
    launched, completed = parse_time(campaign["launched_at"]), parse_time(campaign["completed_at"])
    accepted = sorted(a for a, _ in found)
    sent = sorted(s for _, s in found)
    ms = lambda a, b: f"{(b - a) * 1000:,.0f} ms"  # noqa: E731
    return (
        f"| where the time went ({len(ids):,} messages) | create → `launched_at` {ms(started, launched)}; "
        f"→ first queued {ms(launched, accepted[0])}; → first sent {ms(accepted[0], sent[0])}; "
        f"last queued at {ms(launched, accepted[-1])}; last sent at {ms(launched, sent[-1])}; "
        f"→ `completed_at` {ms(sent[-1], completed)} | | |"
    )


def parse_time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def end_to_end(session, base, redis_url, args, template, serve_pid: int, redis_pid: int) -> list[str]:
    """A campaign into an aiosmtpd sink, launch → every message recorded sent (dispatch drained) and →
    `sent`; beside it, same run, the same count by `/v1/send/bulk` into the same sink (is a gap in the
    campaign part or in dispatch?) and a bare aiosmtplib client."""
    count = args.campaign_delivery
    sink_port = free_port()
    sink = start_sink(sink_port)
    mine = {redis_pid, sink.pid}
    try:
        bare = await bare_client(sink_port, [typical_message() for _ in range(count)], 16)
        server = {
            "name": "sink",
            "provider": "smtp",
            "config": {"host": "127.0.0.1", "port": sink_port, "security": "none", "pool_size": 16},
        }
        smtp = await post(session, base + "/v1/sending-servers", server)
        await asyncio.sleep(2.0)
        e2e_list = await load_list(session, base, redis_url, count, "e2e")
        await wait_idle(redis_url, within=600)
        mine |= set(family(serve_pid))  # the serve with every actor process it has now
        profilers = start_profilers(getattr(args, "profile", None), mine, "campaign")
        before = cpu_of(mine)
        started = time.perf_counter()
        started_wall = time.time()
        campaign_id = await launch(session, base, e2e_list, template["id"], smtp["id"])
        await _wait_sent(redis_url, smtp["id"], count, within=3600)
        drained = time.perf_counter()
        ended = await until_sent(session, base, campaign_id)
        campaign_cpu = cpu.spent(before, cpu_of(mine))
        stop_profilers(profilers)
        timeline = await campaign_timeline(session, base, campaign_id, started_wall)
        await wait_idle(redis_url, within=600)
        before = cpu_of(mine)
        bulk_started = time.perf_counter()
        for i in range(0, count, 1000):
            body = bulk_body(10_000_000 + i, min(1000, count - i), server=smtp["id"])
            async with session.post(
                base + "/v1/send/bulk", data=body, headers={**HEADERS, "Content-Type": "application/json"}
            ) as response:
                assert response.status == 202, await response.text()
        await _wait_sent(redis_url, smtp["id"], 2 * count, within=3600)
        bulk_elapsed = time.perf_counter() - bulk_started
        bulk = count / bulk_elapsed
        bulk_cpu = cpu.spent(before, cpu_of(mine))
    finally:
        sink.terminate()
        sink.wait()
    ours = count / (ended - started)
    dispatched = count / (drained - started)
    return [
        f"| campaign end to end into aiosmtpd, {count:,} subscribers, launch → `sent` | "
        f"{ours:,.0f} msgs/s ({ours / bare:.0%} of bare) | bare aiosmtplib, 16 connections, "
        f"pre-rendered: {bare:,.0f} msgs/s | ≥ 50% |",
        f"| the same, launch → the last message recorded sent | {dispatched:,.0f} msgs/s "
        f"({dispatched / bare:.0%} of bare) | | |",
        timeline,
        f"| `/v1/send/bulk` end to end into the same sink, {count:,} messages | {bulk:,.0f} msgs/s "
        f"({bulk / bare:.0%} of bare) | | |",
        "",
        "CPU of this run's processes, the campaign (launch → `sent`):",
        *cpu.table(campaign_cpu, count, ended - started),
        "",
        "CPU of this run's processes, `/v1/send/bulk` into the same sink:",
        *cpu.table(bulk_cpu, count, bulk_elapsed),
        "",
    ]


async def seed_campaign(redis: aioredis.Redis, settings: Any, count: int, links: int) -> tuple[Any, Any]:
    """A list of `count` subscribers and a campaign to it (sandbox server, opens and clicks tracked) put
    in `sending` as the launch does, written to the stores directly: what the runner body takes up.
    Returns the campaign store and the campaign's record."""
    from datetime import UTC, datetime

    from schemas.campaigns import Audience, CampaignRecord, CampaignTemplate, CampaignTracking, record_encoder
    from schemas.ids import new_id
    from schemas.send import RoutingIn
    from schemas.templates import TemplateVersion, VariableSpec
    from store.campaigns import CampaignStore
    from store.servers import ServerStore, ensure_sandbox_server
    from store.templates import TemplateStore

    sandbox = await ensure_sandbox_server(ServerStore(redis), WORKSPACE)
    assert sandbox is not None
    now = datetime.now(UTC)
    spec = {name: VariableSpec(type="string", required=True) for name in TEMPLATE["variables"]}
    template = TemplateVersion(
        id=new_id("tpl"),
        workspace=WORKSPACE,
        version=1,
        name=str(TEMPLATE["name"]),
        subject=str(TEMPLATE["subject"]),
        html=str(template_of(links)["html"]),
        variables=spec,
        created_at=now,
        template_created_at=now,
    )
    await TemplateStore(redis).create(template)
    target = ListRecord(id=new_id("lst"), workspace=WORKSPACE, name="fan", created_ms=0, updated_ms=0)
    subscribers = SubscriberStore(redis)
    for start in range(0, count, BATCH):
        items = [
            SubscriberInput(email=f"fan{i}@example.com", attributes={"first_name": f"F{i}"})
            for i in range(start, min(start + BATCH, count))
        ]
        await subscribers.upsert(target, items, mode="upsert", now_ms=int(time.time() * 1000))
    record = CampaignRecord(
        id=new_id("cmp"),
        workspace=WORKSPACE,
        name="bench",
        from_="Acme <hello@acme.com>",
        template=CampaignTemplate(id=template.id, version=1),
        audience=Audience(lists=[target.id]),
        routing=RoutingIn(server=sandbox.id),
        tracking=CampaignTracking(opens=True, clicks=True),
        created_at=now,
        updated_at=now,
        eligible_lists=[target.id],
    )
    store = CampaignStore(redis)
    await store.create(record)
    fields: dict[str, bytes | str | int] = {
        "r": record_encoder.encode(record),
        "launch_ms": int(time.time() * 1000),
        "phase": "resolve",
        "src": 0,
        "cur": "",
    }
    await store.transition(WORKSPACE, record.id, ("draft",), "sending", fields=fields, active="add")
    return store, record


def bench_settings(data: Path, redis_url: str) -> Any:
    from schemas.settings import load_settings

    return load_settings(
        {},
        data_dir=str(data),
        redis_url=redis_url,
        secret_key="s" * 40,
        public_url="https://mailers.bench",
    )


async def in_process(args: argparse.Namespace) -> list[str]:
    """The fan-out of `--in-process N` subscribers by the runner body alone (no `mailers serve`, no Ray,
    no dispatchers): its own redis-server, the stores written directly, `CampaignRunner.step` until
    every recipient is handed over. Reports the CPU seconds per recipient of the runner's process and of
    Redis (INFO cpu) beside the wall rate: on a shared machine the CPU figures are what moves with the
    code, the wall rate with the load."""
    from actors.campaigns.body import CampaignRunner

    count = args.in_process
    data = scratch_dir("mailers-bench-fanout-")
    server = RedisServer(data / "redis", appendonly=True).start()
    redis = aioredis.Redis.from_url(server.url)
    try:
        settings = bench_settings(data, server.url)
        store, record = await seed_campaign(redis, settings, count, args.links)
        # As the runner actor's process does at start (CampaignRunnerActor: a frozen start-up heap, a large
        # young generation); without it this harness counted ~10% of collector time the actor never pays.
        from actors.priority import settle_garbage_collector

        settle_garbage_collector()
        # The runner's clock stands still: with no dispatcher here nothing is ever sent, and a moving clock
        # had its archiver read every queued bucket again each pass (0.25 s) — ~30 µs a recipient of the
        # runner's and Redis' CPU before round 15 that `mailers serve`, whose dispatchers send, does not pay.
        frozen = time.time()
        runner = CampaignRunner(redis, settings, in_flight=10**9, clock=lambda: frozen)
        await redis.config_resetstat()
        before = await redis.info("cpu")
        memory_before = (await redis.info("memory"))["used_memory"]
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        load = os.getloadavg()[0]
        started, cpu_started = time.perf_counter(), time.process_time()
        done = 0
        while done < count:
            if not await runner.step():
                break
            state = await store.get(WORKSPACE, record.id)
            done = state.number("n:done") if state else 0
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        after = await redis.info("cpu")
        commands = await redis.info("commandstats")
        redis_cpu = sum(after[k] - before[k] for k in ("used_cpu_sys", "used_cpu_user"))
        redis_grew = ((await redis.info("memory"))["used_memory"] - memory_before) / 2**20
        # ru_maxrss is in KiB on Linux: the runner's peak over the fan-out, above its peak before it.
        rss_grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    finally:
        await redis.aclose()
        server.stop()
    return [
        f"load: `{load:.1f}` at the start, `{os.getloadavg()[0]:.1f}` at the end; "
        f"tracked links in the template {args.links}",
        "| what | value |",
        "|---|---|",
        f"| runner body in-process, {count:,} subscribers handed over ({done:,}) | {count / wall:,.0f} "
        f"recipients/s wall |",
        f"| CPU per recipient, the runner's process | {cpu / count * 1e6:,.0f} µs |",
        f"| CPU per recipient, Redis | {redis_cpu / count * 1e6:,.0f} µs |",
        f"| peak RSS added, the runner's process | {rss_grew:,.0f} MB |",
        f"| Redis memory added (queued messages, their events, kept for the retention) "
        f"| {redis_grew:,.0f} MB |",
        "",
        *command_rows(commands, count),
    ]


def command_rows(commands: dict[str, Any], count: int) -> list[str]:
    """Redis' calls and own µs per recipient by command, from `INFO commandstats` (reset beforehand)."""
    return [
        "Redis commands during the fan-out (INFO commandstats; a script's own commands are counted both "
        "under it and under their names):",
        "| command | calls per recipient | µs per recipient |",
        "|---|---:|---:|",
        *(
            f"| {name.removeprefix('cmdstat_')} | {stat['calls'] / count:,.3f} "
            f"| {stat['usec'] / count:,.2f} |"
            for name, stat in sorted(commands.items(), key=lambda kv: -kv[1]["usec"])
            if stat["usec"] / count >= 0.05
        ),
    ]


async def run(args: argparse.Namespace) -> list[str]:
    data = scratch_dir("mailers-bench-campaigns-")
    redis = RedisServer(data / "redis", appendonly=True).start()
    port = free_port()
    mailers = start_mailers(
        port, redis.url, data, getattr(args, "in_flight", 100_000_000), getattr(args, "runners", 0)
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(base + "/readyz", mailers, within=300)
        assert redis.pid is not None
        rows = await bench(base, redis.url, mailers.pid, redis.pid, args)
    finally:
        stop(mailers)
        redis.stop()
    return ["| what | ours | baseline (same run) | target |", "|---|---|---|---|", *rows]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1_000_000, help="the fan-out campaign's audience")
    parser.add_argument("--campaign-delivery", dest="campaign_delivery", type=int, default=10_000)
    parser.add_argument("--bulk-requests", type=int, default=20, help="the fan-out's baseline; 0: none")
    parser.add_argument(
        "--phases", dest="campaign_phases", default="fanout,e2e", help="fanout, e2e or both (comma-separated)"
    )
    parser.add_argument(
        "--in-flight",
        dest="in_flight",
        type=int,
        default=100_000_000,
        help="MAILERS_CAMPAIGN_IN_FLIGHT of the serve; 0: its default (1,000)",
    )
    parser.add_argument(
        "--runners",
        type=int,
        default=0,
        help="MAILERS_CAMPAIGN_RUNNERS of the serve (runner actors sharing the campaign); 0: its default (2)",
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="Redis memory per message by key family after the fan-out"
    )
    parser.add_argument(
        "--commands",
        action="store_true",
        help="Redis' calls and µs per recipient by command during the fan-out (every client of Redis)",
    )
    parser.add_argument(
        "--until-sent",
        dest="until_sent",
        action="store_true",
        help="the fan-out campaign's memory is sampled until it is `sent`, not only handed over",
    )
    parser.add_argument(
        "--in-process",
        dest="in_process",
        type=int,
        default=0,
        help="only the runner body's fan-out of N subscribers, CPU per recipient (no serve, no Ray)",
    )
    parser.add_argument(
        "--links",
        type=int,
        default=0,
        help="distinct tracked links in the campaign template's body (0: none)",
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="e2e: py-spy the dispatcher, the event sink and the SMTP sink during the campaign into this dir",
    )
    args = parser.parse_args()
    print("\n".join(asyncio.run(in_process(args) if args.in_process else run(args))))


if __name__ == "__main__":
    main()
