"""Automations (issue #14), each figure beside a baseline measured in the same run.

`python -m bench --phases automations` (or `python -m bench.automations [--waiting 1000000]
[--wake 100000] [--rate 1000] [--api-rate 500] [--seconds 10]
[--phases memory,wake,runner,stream,api,latency] [--client lean|aiohttp|lean,aiohttp]`)

- memory: Redis `used_memory` per waiting run, `--waiting` runs of one automation written through the
  run store's start script in the state a wait step leaves them (status waiting, one history entry, a due
  entry at the wake-up). Target ≤ 300 B. Baseline: the record's own bytes and id.
- wake: `--wake` waiting runs all due at the same instant, driven by the runner body (claim, one step,
  commit) until every one has done its next step (an exit): runs/s. Target ≥ 10,000/s. Baseline: the
  same count of records read and rewritten by a bare pipelined HGET/HSET/ZREM from this process. The
  process's garbage collector is settled first, as the runner actor's shell does (`actors/priority.py`);
  the row also says the CPU the bench process and redis-server spent per run.
- runner: the runner body's CPU per started run (µs, its thread's CPU clock) while runs are started the
  way the api trigger's route starts them (`RunStore.start`, batches of 2 every 4 ms: 500 runs/s) for
  `--seconds`, for an automation starting with a wait and one starting with a send step (rendered and
  enqueued through `Outbound`; no dispatcher runs). Baseline: the same runner idle for as long.
- stream: the runner body's CPU per message event while `m:events` gets message events as bulk sending
  writes them (entries of 50 `message.sent`/`message.delivered` events, 5,000 events/s for `--seconds`),
  with a live event-triggered automation in the workspace (on `list.subscribed`: none of those events
  can trigger it). Baseline: the same runner idle for as long.
- api: `POST /v1/automations/:id/trigger` open-loop at 200 and `--api-rate` req/s for `--seconds`, beside
  the bare aiohttp handler (`bench/baseline_server.py`) and `POST /v1/send` at the same rate in the same
  run (`mailers serve`); the trigger of an automation starting with a wait, and at `--api-rate` also of one
  starting with a send step (its sends share the cores). Answers counted by status and problem code; each
  row with the CPU µs per request of each part of `mailers serve` (from /proc, its process tree only) and
  the load generator's own. Target p95 ≤ 10 ms at 500 req/s. The requests come from `--client`: `lean`
  (default) is bench/loadgen.py, an open-loop HTTP/1.1 generator in a process of its own (precomputed
  requests on a pool of keep-alive connections, no event loop, ~0.25 ms of CPU a request against aiohttp's
  client's ~1 ms), so its CPU and its lateness are not the bench process's event loop's; `aiohttp` is the
  earlier `_open_loop` (a task and aiohttp's client per request, in this process); `lean,aiohttp` runs
  every case with both, back to back, in one run. Both count latency from each request's scheduled start.
- latency: custom events (`POST /v1/events`) at `--rate` events/s firing an `event` trigger, in batches of
  `--event-batch` (50 every 50 ms at 1,000/s) and then one per request; latency is a run's `created_ms`
  (stamped by the runner when it starts the run) minus the event's acceptance (the ULID time of the id the
  ingress minted): one clock. Target p95 ≤ 100 ms. Beside it: the POST's own answer time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import msgspec
import redis.asyncio as aioredis

from actors.automations.body import AutomationRunner, automation_event
from actors.priority import settle_garbage_collector
from bench import cpu, loadgen
from bench.scratch import scratch_dir
from bench.send import KEY, single_body, start_baseline, start_mailers, stop, wait_ready
from schemas.audience import ListRecord, SubscriberInput
from schemas.automations import ApiTrigger as Api
from schemas.automations import (
    AutomationRecord,
    Definition,
    EventTrigger,
    ExitStep,
    HistoryEntry,
    RunRecord,
    SendStep,
    WaitStep,
)
from schemas.automations import TemplateRef as StepTemplate
from schemas.events import Event, EventMessage, event_msgpack_encoder
from schemas.ids import new_id
from schemas.send import RoutingIn
from schemas.settings import load_settings
from schemas.templates import TemplateVersion
from store import keyspace
from store.automation_runs import NewRun, RunStore, unpack
from store.automations import AutomationStore
from store.redis_server import RedisServer, free_port
from store.servers import ServerStore, ensure_sandbox_server
from store.subscribers import SubscriberStore
from store.templates import TemplateStore

HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
CHUNK = 5000


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


async def _automation(
    redis: aioredis.Redis, workspace: str, now: datetime, steps: list | None = None
) -> AutomationRecord:
    head = AutomationRecord(
        id=new_id("aut"),
        workspace=workspace,
        name="bench",
        status="active",
        version=1,
        created_at=now,
        updated_at=now,
    )
    steps = steps or [WaitStep(id="pause", seconds=3600), ExitStep(id="done")]
    definition = Definition(version=1, trigger=Api(), steps=list(steps), reentry="always", created_at=now)
    await AutomationStore(redis).create(head, definition, next_fire_ms=None)
    return head


async def _waiting(redis, workspace, head, subscriber_ids: list[str], wake_ms: int, now_ms: int) -> None:
    runs = RunStore(redis)
    for start in range(0, len(subscriber_ids), CHUNK):
        batch = []
        for sub in subscriber_ids[start : start + CHUNK]:
            record = RunRecord(
                subscriber=sub,
                version=1,
                status="w",
                at=1,
                created_ms=now_ms,
                history=[HistoryEntry("pause", now_ms, "waiting")],
            )
            event = automation_event("automation.triggered", workspace, now_ms, {"run_id": "-"})
            batch.append(NewRun(run_id=new_id("run"), record=record, due_ms=wake_ms, event=event))
        await runs.start(workspace, head.id, batch, after_exit=False)


async def memory(redis_url: str, count: int) -> list[str]:
    redis = aioredis.Redis.from_url(redis_url)
    now = datetime.now(UTC)
    head = await _automation(redis, "mem", now)
    subscriber_ids = [new_id("sub") for _ in range(count)]
    before = (await redis.info("memory"))["used_memory"]
    started = time.perf_counter()
    await _waiting(
        redis,
        "mem",
        head,
        subscriber_ids,
        int(now.timestamp() * 1000) + 3_600_000,
        int(now.timestamp() * 1000),
    )
    elapsed = time.perf_counter() - started
    stream = await redis.memory_usage(keyspace.EVENT_STREAM) or 0
    await redis.delete(keyspace.EVENT_STREAM)  # the triggered events: the event sink reads and trims them
    after = (await redis.info("memory"))["used_memory"]
    field, raw = await redis.hrandfield(keyspace.automation_runs("mem", head.id), 1, withvalues=True)
    await redis.flushdb()
    await redis.aclose()
    per = (after - before) / count
    return [
        f"| waiting runs, {count:,} written ({count / elapsed:,.0f}/s) | {per:,.0f} B per run "
        f"(target ≤ 300) | {per * 1e6 / 2**20:,.0f} MiB per million; their triggered events on the stream "
        f"until consumed: {stream / count:,.0f} B each | {_load()} |",
        f"| baseline: the record ({len(raw)} B) and its id ({len(field)} B) "
        f"| {len(raw) + len(field)} B | | |",
    ]


async def wake(redis_url: str, count: int, data: Path, redis_pid: int | None = None) -> list[str]:
    redis = aioredis.Redis.from_url(redis_url)
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    workspace = "wake"
    target = ListRecord(id="lst_wake", workspace=workspace, name="w", created_ms=0, updated_ms=0)
    subscribers = SubscriberStore(redis)
    for start in range(0, count, 10_000):
        items = [SubscriberInput(email=f"w{i}@example.com") for i in range(start, min(start + 10_000, count))]
        await subscribers.upsert(target, items, mode="upsert", now_ms=now_ms)
    ids = [k.decode() for k in await redis.hkeys(keyspace.subscribers(workspace))]
    head = await _automation(redis, workspace, now)
    await _waiting(redis, workspace, head, ids, now_ms + 1000, now_ms)
    await redis.delete(keyspace.EVENT_STREAM)
    settings = load_settings({}, redis_url=redis_url, data_dir=str(data), secret_key="s" * 40)
    runner = AutomationRunner(redis, settings, clock=lambda: now_ms / 1000 + 2, batch=1000)
    settle_garbage_collector()  # as the runner actor's shell does
    redis_cpu = _pid_cpu(redis_pid) if redis_pid else 0.0
    own_cpu = time.process_time()
    started = time.perf_counter()
    while await runner.drive():
        pass
    elapsed = time.perf_counter() - started
    own_cpu = time.process_time() - own_cpu
    redis_cpu = (_pid_cpu(redis_pid) - redis_cpu) if redis_pid else 0.0
    left = await redis.zcard(keyspace.automation_due(workspace, head.id))
    sample = await redis.hrandfield(keyspace.automation_runs(workspace, head.id), 1, withvalues=True)
    ended = unpack(sample[1])
    assert left == 0 and ended.status == "x", (left, ended)
    bare = await _bare_rewrite(redis, workspace, head.id, ids)
    await redis.flushdb()
    await redis.aclose()
    return [
        f"| wake-up: {count:,} waiting runs due at once, each to its next step (runner body, batches of "
        f"1,000) | {count / elapsed:,.0f} runs/s (target ≥ 10,000) | {elapsed:.1f} s; CPU per run: this "
        f"process {own_cpu / count * 1e6:.1f} µs, redis-server {redis_cpu / count * 1e6:.1f} µs "
        f"| {_load()} |",
        f"| baseline: bare pipelined HGET + HSET + ZREM of the same {count:,} runs "
        f"| {count / bare:,.0f} runs/s "
        f"| {bare:.1f} s | |",
    ]


async def _bare_rewrite(redis: aioredis.Redis, workspace: str, automation_id: str, ids: list[str]) -> float:
    key, due = keyspace.automation_runs(workspace, automation_id), "bench:due"
    run_ids = [k.decode() for k in await redis.hkeys(key)]
    await redis.zadd(due, {r: 0 for r in run_ids})
    started = time.perf_counter()
    for start in range(0, len(run_ids), 1000):
        chunk = run_ids[start : start + 1000]
        raws = await redis.hmget(key, chunk)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=dict(zip(chunk, raws, strict=True)))
            pipe.zrem(due, *chunk)
            await pipe.execute()
    return time.perf_counter() - started


async def server(
    args: argparse.Namespace, phases: set[str], redis_url: str, redis_pid: int, data: Path
) -> None:
    port, bare_port = free_port(), free_port()
    mailers = start_mailers(port, redis_url, str(data))
    bare = start_baseline(bare_port)
    base = f"http://127.0.0.1:{port}"

    def pids() -> set[int]:
        return descendants(mailers.pid) | descendants(bare.pid) | {redis_pid}

    try:
        await wait_ready(base + "/readyz", mailers)
        await wait_ready(f"http://127.0.0.1:{bare_port}/healthz", bare)
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(base, connector=connector, headers=HEADERS) as session:
            list_id = await _json(session, "POST", "/v1/lists", {"name": "bench"}, 201)
            people = [{"email": f"b{i}@example.com"} for i in range(2000)]
            await _json(
                session, "POST", f"/v1/lists/{list_id['id']}/subscribers", {"subscribers": people}, 200
            )
            if "api" in phases:
                await api_phase(session, args, f"http://127.0.0.1:{bare_port}", pids, redis_url, base)
            if "latency" in phases:
                await latency_phase(session, args, redis_url)
    finally:
        stop(bare)
        stop(mailers)


async def _json(session: aiohttp.ClientSession, method: str, path: str, body, status: int) -> dict:
    async with session.request(method, path, json=body) as response:
        assert response.status == status, await response.text()
        return await response.json()


async def _api_automation(session: aiohttp.ClientSession, first: str) -> str:
    """An active api-triggered automation whose first step is a wait, or a send (then a wait)."""
    steps: list[dict] = [{"id": "w", "type": "wait", "seconds": 86400}]
    if first == "send":
        template = await _json(
            session,
            "POST",
            "/v1/templates",
            {"name": "bench", "subject": "Hi", "html": "<p>Hi {{ email }}</p>", "text": "Hi"},
            201,
        )
        steps.insert(
            0,
            {"id": "s", "type": "send", "template": {"id": template["id"]}, "from": "Acme <a@acme.com>"},
        )
    automation = await _json(
        session,
        "POST",
        "/v1/automations",
        {"name": first, "status": "active", "reentry": "always", "trigger": {"type": "api"}, "steps": steps},
        201,
    )
    return f"/v1/automations/{automation['id']}/trigger"


def _trigger_body(i: int) -> bytes:
    return msgspec.json.encode({"email": f"b{i % 2000}@example.com", "data": {"n": i}})


async def api_phase(
    session: aiohttp.ClientSession,
    args: argparse.Namespace,
    bare: str,
    pids: Callable[[], set[int]],
    redis_url: str | None = None,
    base: str | None = None,
) -> list[str]:
    """Per rate: the bare aiohttp handler, `/v1/send`, and the trigger of an automation that starts with a
    wait (the accept path alone: the runner's first step is a cheap commit); at `--api-rate` also one that
    starts with a send step (its runs' sends share the two cores with the accepts). Each row says the
    CPU each part of `mailers serve` spent per request while it ran (from /proc), what Redis did per
    request (`INFO commandstats` before and after: calls, by command, and Redis' own µs), and the load
    generator's own CPU per request. At `--api-rate` the wait-first trigger runs a second time with an
    Idempotency-Key on every request (a new key each). `--client lean` (default) sends with
    bench/loadgen.py in a process of its own; `aiohttp` with `_open_loop` in this process; `lean,aiohttp`
    runs every case with both, back to back."""
    redis = aioredis.Redis.from_url(redis_url) if redis_url else None
    base = base or str(session._base_url)
    waits = await _api_automation(session, "wait")
    sends = await _api_automation(session, "send")
    clients = [c.strip() for c in getattr(args, "client", "lean").split(",") if c.strip()]
    rows = []
    sequence = 0  # request numbers never repeat across runs (bodies, Idempotency-Keys)
    for rate in sorted({200, args.api_rate}):
        cases: list[tuple[str, str, str, Callable[[int], bytes], bool]] = [
            ("bare aiohttp handler (baseline)", bare, "/v1/send", single_body, False),
            ("/v1/send (baseline)", base, "/v1/send", single_body, False),
            ("trigger, automation starting with a wait", base, waits, _trigger_body, False),
        ]
        if rate == args.api_rate:
            cases.append(("trigger, wait first, Idempotency-Key each", base, waits, _trigger_body, True))
            cases.append(("trigger, automation starting with a send", base, sends, _trigger_body, False))
        for name, url, path, make, keyed in cases:
            for client in clients:
                count = int(rate * args.seconds)
                # aiohttp's client: one session for the warm-up and the run (its connections stay open)
                session_of_case = (
                    aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=256), headers=HEADERS)
                    if client == "aiohttp"
                    else None
                )
                await asyncio.sleep(3)  # what the previous case left (its events, audit entries) settles
                await _client_run(client, session_of_case, url, path, make, rate, 2, sequence, keyed)  # warm
                sequence += int(rate * 2)
                watched = pids()
                before = _cpu(watched)
                stats_before = await redis.info("commandstats") if redis is not None else {}
                result = await _client_run(
                    client, session_of_case, url, path, make, rate, args.seconds, sequence, keyed
                )
                if session_of_case is not None:
                    await session_of_case.close()
                sequence += count
                used = cpu.spent(before, _cpu(watched))
                stats_after = await redis.info("commandstats") if redis is not None else {}
                refused = {k: v for k, v in result.codes.items() if k != "202"}
                where = ", ".join(
                    f"{label.removeprefix('ray::')} {seconds / count * 1e6:,.0f}"
                    for label, seconds in _grouped(used).most_common()
                    if seconds / count * 1e6 >= 5
                )
                rows.append(
                    f"| {name} at {rate} req/s, {client} client | p50 {_q(result.latencies, 50):.1f} ms "
                    f"| p95 {_q(result.latencies, 95):.1f} ms (target ≤ 10 at 500) | refused {refused or 0}; "
                    f"CPU µs/request: {where or '-'}; load generator {result.cpu / count * 1e6:,.0f}"
                    f"{result.note} | {_load()} |"
                )
                print(rows[-1], flush=True)
                if redis is not None:
                    print(
                        f"|  Redis, same run | {_redis_use(stats_before, stats_after, count)} | | | |",
                        flush=True,
                    )
    if redis is not None:
        await redis.aclose()
    return rows


class _ClientResult(msgspec.Struct):
    latencies: list[float]  # ms, of the 202 answers, from each request's scheduled start
    codes: Counter[str]
    cpu: float  # the load generator's CPU seconds over the run
    note: str = ""


async def _client_run(
    client: str,
    session: aiohttp.ClientSession | None,
    url: str,
    path: str,
    make: Callable[[int], bytes],
    rate: float,
    seconds: float,
    first: int,
    keyed: bool,
) -> _ClientResult:
    """Requests `first`... at `rate` for `seconds`, open loop, with the lean generator (its own process)
    or aiohttp's client on `session` (`_open_loop`, in this process: its CPU is this process's over the
    run)."""
    count = int(rate * seconds)
    prefix = new_id("req")
    if client == "aiohttp":
        assert session is not None
        spent = time.process_time()
        latencies, codes = await _open_loop(
            session, path, make, rate=rate, seconds=seconds, keyed=keyed, first=first
        )
        return _ClientResult(latencies, codes, time.process_time() - spent)
    if client != "lean":
        raise SystemExit(f"--client: lean or aiohttp, not {client!r}")
    target = urlsplit(url)
    host, port = target.hostname or "127.0.0.1", target.port or 80
    requests = [
        loadgen.build_request(
            "POST",
            path,
            host=f"{host}:{port}",
            headers=HEADERS | ({"Idempotency-Key": f"{prefix}-{i}"} if keyed else {}),
            body=make(i),
        )
        for i in range(first, first + count)
    ]
    outcome = await loadgen.generate(loadgen.Plan(host=host, port=port, rate=rate, requests=requests))
    lags = [ms for ms in outcome.send_lag_ms if ms == ms]
    note = (
        f" (sent > 1 ms late: {outcome.late}, send lag p99 {_q(lags, 99):.2f} ms; "
        f"{outcome.opened} connections, {outcome.chunked} chunked answers)"
    )
    return _ClientResult(
        outcome.latencies(range(202, 203)), Counter(outcome.codes), outcome.cpu_seconds, note
    )


def _redis_use(before: dict, after: dict, count: int) -> str:
    """Redis' calls and own µs per request between two `INFO commandstats` (every client of it: the
    ingress's, the runner's and the sinks')."""
    calls: Counter[str] = Counter()
    usec = 0.0
    for name, now in after.items():
        was = before.get(name, {"calls": 0, "usec": 0})
        calls[name.removeprefix("cmdstat_")] += now["calls"] - was["calls"]
        usec += now["usec"] - was["usec"]
    top = ", ".join(f"{c} {n / count:.2f}" for c, n in calls.most_common(6) if n)
    return f"{sum(calls.values()) / count:.2f} calls/request ({top}); {usec / count:.0f} µs/request"


def _cpu(pids: set[int]) -> dict[tuple[str, str], float]:
    return {k: v for k, v in cpu.snapshot().items() if int(k[0]) in pids}


def _grouped(used: Counter[str]) -> Counter[str]:
    """The ingress, redis-server, and Ray's processes as one (their split is in py-spy, not here)."""
    out: Counter[str] = Counter()
    for label, seconds in used.items():
        keep = label in ("ingress", "redis-server", "bare aiohttp") or label.startswith(
            ("ray::AutomationRunner", "ray::EventSink", "ray::AuditSink", "ray::Dispatcher")
        )
        out[label if keep else "ray: rest"] += seconds
    return out


def descendants(root: int) -> set[int]:
    """`root` and every process below it (mailers serve: its Ray; not other engineers' processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found


async def _open_loop(
    session: aiohttp.ClientSession,
    path: str,
    make,
    *,
    rate: float,
    seconds: float,
    keyed: bool = False,
    first: int = 0,
) -> tuple[list[float], Counter[str]]:
    """Open loop (latency from the scheduled start), counting answers by status and problem code;
    `keyed`: each request with an Idempotency-Key of its own."""
    latencies: list[float] = []
    prefix = new_id("req")
    codes: Counter[str] = Counter()
    started = time.perf_counter()

    async def one(i: int) -> None:
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            headers = {"Idempotency-Key": f"{prefix}-{i}"} if keyed else None
            async with session.post(path, data=make(first + i), headers=headers) as response:
                raw = await response.read()
                code = str(response.status)
                if response.status != 202:
                    try:
                        code += " " + str(msgspec.json.decode(raw).get("code"))
                    except (msgspec.DecodeError, AttributeError):
                        pass
        except aiohttp.ClientError as exc:
            code = type(exc).__name__
        codes[code] += 1
        if code == "202":
            latencies.append((time.perf_counter() - scheduled) * 1000)

    await asyncio.gather(*(one(i) for i in range(int(rate * seconds))))
    return latencies, codes


_ULID_DIGITS = str.maketrans("0123456789ABCDEFGHJKMNPQRSTVWXYZ", "0123456789abcdefghijklmnopqrstuv")


def id_ms(prefixed: str) -> int:
    """The ms a ULID-based id was minted at (an event's id: the moment the ingress accepted it)."""
    return int(prefixed.partition("_")[2][:10].translate(_ULID_DIGITS), 32)


async def latency_phase(
    session: aiohttp.ClientSession, args: argparse.Namespace, redis_url: str
) -> list[str]:
    """Event → run started at `--rate` events/s, as a client would send them: batches of `--event-batch`
    (e.g. 50 every 50 ms), then one event per request. Latency: the run's `created_ms` (stamped by the
    runner) minus the event's acceptance (its id's ULID time, minted by the ingress) — one clock."""
    rows = []
    for batch in sorted({args.event_batch, 1}, reverse=True):
        rows += await _event_latency(session, args, redis_url, batch)
        print("\n".join(rows[-2:]), flush=True)
    return rows


async def _event_latency(
    session: aiohttp.ClientSession, args: argparse.Namespace, redis_url: str, batch: int
) -> list[str]:
    name = f"bench.b{batch}"
    automation = await _json(
        session,
        "POST",
        "/v1/automations",
        {
            "name": name,
            "status": "active",
            "reentry": "always",
            "trigger": {"type": "event", "event": name},
            "steps": [{"id": "w", "type": "wait", "seconds": 86400}],
        },
        201,
    )
    await asyncio.sleep(1.5)  # the runner re-reads live automations every second
    accepted: set[str] = set()
    answers: list[float] = []
    refused: list[str] = []
    posts = int(args.rate * args.seconds / batch)
    interval = batch / args.rate
    started = time.perf_counter()

    async def one(i: int) -> None:
        scheduled = started + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        people = [f"b{(i * batch + j) % 2000}@example.com" for j in range(batch)]
        body: dict = (
            {"events": [{"name": name, "email": e, "properties": {"i": i}} for e in people]}
            if batch > 1
            else {"name": name, "email": people[0], "properties": {"i": i}}
        )
        try:
            async with session.post("/v1/events", json=body) as response:
                payload = await response.json()
                if response.status != 202:
                    refused.append(f"{response.status} {payload.get('code')}")
                    return
        except (aiohttp.ClientError, TimeoutError) as exc:  # an overloaded ingress: counted, not fatal
            refused.append(type(exc).__name__)
            return
        answers.append((time.perf_counter() - scheduled) * 1000)
        accepted.update(e["id"] for e in payload["data"])

    await asyncio.gather(*(one(i) for i in range(posts)))
    redis = aioredis.Redis.from_url(redis_url)
    key = keyspace.automation_runs("default", automation["id"])
    deadline = time.monotonic() + 60
    while await redis.hlen(key) < len(accepted) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    latencies: list[float] = []
    async for _, raw in redis.hscan_iter(key):
        record = unpack(raw)
        event_id = record.data.get("event_id")
        if event_id in accepted:
            latencies.append(record.created_ms - id_ms(event_id))
    await redis.aclose()
    shape = f"batches of {batch} every {interval * 1000:g} ms" if batch > 1 else "one event per request"
    return [
        f"| event → run started, {args.rate} events/s for {args.seconds:g} s, {shape} "
        f"({len(latencies):,} of {posts * batch:,} runs; {len(refused)} posts refused "
        f"{sorted(set(refused))[:3]}) | p50 {_q(latencies, 50):.0f} ms "
        f"| p95 {_q(latencies, 95):.0f} ms (target ≤ 100) | {_load()} |",
        f"| beside it: the POST /v1/events answer (client side, from its scheduled time) "
        f"| p50 {_q(answers, 50):.1f} ms | p95 {_q(answers, 95):.1f} ms | |",
    ]


def _pid_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _RunnerThread:
    """A runner body on its own event loop in a thread of this process, so that its CPU is its thread's
    CPU clock (what drives it, in the main thread, is not counted)."""

    def __init__(self, redis_url: str, data: Path) -> None:
        self.redis_url, self.data = redis_url, data
        self.stop: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        redis = aioredis.Redis.from_url(self.redis_url)
        settings = load_settings({}, redis_url=self.redis_url, data_dir=str(self.data), secret_key="s" * 40)
        runner = AutomationRunner(redis, settings)
        self.loop, self.stop = asyncio.get_running_loop(), asyncio.Event()
        self.ready.set()
        await runner.run(self.stop)
        await redis.aclose()

    def __enter__(self) -> _RunnerThread:
        self.thread.start()
        self.ready.wait()
        self.clock = time.pthread_getcpuclockid(self.thread.ident or 0)
        return self

    def cpu(self) -> float:
        return time.clock_gettime(self.clock)

    def __exit__(self, *_: object) -> None:
        assert self.loop is not None and self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


async def _idle_cpu(runner: _RunnerThread, seconds: float) -> float:
    before = runner.cpu()
    await asyncio.sleep(seconds)
    return runner.cpu() - before


async def runner_phase(redis_url: str, seconds: float, data: Path) -> list[str]:
    """The runner's CPU per started run (wait first; send first), beside the runner idle."""
    redis = aioredis.Redis.from_url(redis_url)
    workspace = "default"
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    sandbox = await ensure_sandbox_server(ServerStore(redis), workspace)
    assert sandbox is not None
    template = TemplateVersion(
        id=new_id("tpl"),
        workspace=workspace,
        version=1,
        name="bench",
        subject="Hi",
        html="<p>Hi {{ email }}</p>",
        text="Hi",
        created_at=now,
        template_created_at=now,
    )
    await TemplateStore(redis).create(template)
    target = ListRecord(id="lst_bench", workspace=workspace, name="b", created_ms=0, updated_ms=0)
    await SubscriberStore(redis).upsert(
        target,
        [SubscriberInput(email=f"r{i}@example.com") for i in range(2000)],
        mode="upsert",
        now_ms=now_ms,
    )
    subscriber_ids = [k.decode() for k in await redis.hkeys(keyspace.subscribers(workspace))]
    wait = WaitStep(id="w", seconds=86400)
    send = SendStep(
        id="s",
        template=StepTemplate(id=template.id, version=1),
        from_="Acme <a@acme.com>",
        routing=RoutingIn(server=sandbox.id),
    )
    settle_garbage_collector()
    rows = []
    with _RunnerThread(redis_url, data) as runner:
        await asyncio.sleep(1.5)  # its first passes (the consumer group, the sweep) are not counted
        idle = await _idle_cpu(runner, seconds)
        rows.append(
            f"| baseline: the runner idle for {seconds:g} s | {idle * 1e3:,.1f} ms of CPU "
            f"({idle / seconds * 1e6:,.0f} µs a second) | | {_load()} |"
        )
        for name, steps in (("wait", [wait]), ("send", [send, wait])):
            head = await _automation(redis, workspace, now, steps)
            count = int(500 * seconds)
            before = runner.cpu()
            started = time.perf_counter()
            runs = RunStore(redis)
            for i in range(0, count, 2):
                at = started + i / 500
                if (delay := at - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                batch = []
                for j in (i, i + 1):
                    ms = int(time.time() * 1000)
                    sub = subscriber_ids[j % len(subscriber_ids)]
                    record = RunRecord(subscriber=sub, version=1, status="r", at=0, created_ms=ms)
                    event = automation_event(
                        "automation.triggered",
                        workspace,
                        ms,
                        {"automation_id": head.id, "run_id": "-", "subscriber": sub, "trigger": "api"},
                    )
                    batch.append(NewRun(run_id=new_id("run"), record=record, due_ms=ms, event=event))
                await runs.start(workspace, head.id, batch, after_exit=False)
            due = keyspace.automation_due(workspace, head.id)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # every run at its day-long wait: none due or leased
                if not await redis.zcount(due, "-inf", int(time.time() * 1000) + 3_600_000):
                    break
                await asyncio.sleep(0.05)
            spent = runner.cpu() - before - idle * (time.perf_counter() - started) / seconds
            rows.append(
                f"| runner CPU per started run, automation starting with a {name} (500 runs/s, "
                f"{count:,} runs) | {spent / count * 1e6:,.0f} µs (the idle baseline taken out) "
                f"| {time.perf_counter() - started:.1f} s | {_load()} |"
            )
    await redis.flushdb()
    await redis.aclose()
    return rows


async def stream_phase(redis_url: str, seconds: float, data: Path) -> list[str]:
    """The runner's CPU per message event of a bulk send it cannot be triggered by."""
    redis = aioredis.Redis.from_url(redis_url)
    workspace = "default"
    now = datetime.now(UTC)
    head = AutomationRecord(
        id=new_id("aut"),
        workspace=workspace,
        name="welcome",
        status="active",
        version=1,
        created_at=now,
        updated_at=now,
    )
    definition = Definition(
        version=1,
        trigger=EventTrigger(event="list.subscribed"),
        steps=[WaitStep(id="w", seconds=60)],
        reentry="always",
        created_at=now,
    )
    await AutomationStore(redis).create(head, definition, next_fire_ms=None)
    settle_garbage_collector()
    rows = []
    rate, per_entry = 5000, 50
    with _RunnerThread(redis_url, data) as runner:
        await asyncio.sleep(1.5)
        idle = await _idle_cpu(runner, seconds)
        rows.append(
            f"| baseline: the runner idle for {seconds:g} s (a live event trigger) | {idle * 1e3:,.1f} ms "
            f"of CPU | | {_load()} |"
        )
        entries = int(rate * seconds / per_entry)
        before = runner.cpu()
        started = time.perf_counter()
        for n in range(entries):
            at = started + n * per_entry / rate
            if (delay := at - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            stamp = datetime.now(UTC)
            events = [
                Event(
                    id=new_id("evt"),
                    type="message.sent" if k % 2 else "message.delivered",
                    created_at=stamp,
                    workspace=workspace,
                    message=EventMessage(
                        id=new_id("msg"),
                        to=f"fan{n * per_entry + k}@example.com",
                        from_="Acme <hello@acme.com>",
                        provider="sandbox",
                        server="srv_x",
                        campaign_id="cmp_bench",
                    ),
                    data={"provider_message_id": "x" * 24},
                )
                for k in range(per_entry)
            ]
            await redis.xadd(
                keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: event_msgpack_encoder.encode(events)}
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the runner's group has read and acked every entry
            groups = await redis.xinfo_groups(keyspace.EVENT_STREAM)
            mine = [g for g in groups if g["name"] in (b"automations", "automations")]
            if mine and not mine[0]["pending"] and mine[0].get("lag") in (0, None):
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        spent = runner.cpu() - before - idle * elapsed / seconds
        count = entries * per_entry
        rows.append(
            f"| runner CPU per message event of a bulk send ({count:,} events, {rate:,}/s in entries of "
            f"{per_entry}) | {spent / count * 1e6:,.2f} µs (the idle baseline taken out) | {elapsed:.1f} s "
            f"| {_load()} |"
        )
    await redis.flushdb()
    await redis.aclose()
    return rows


def _q(values: list[float], p: int) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else values[0]


async def run(args: argparse.Namespace) -> None:
    phases = set(args.phases.split(","))
    data = scratch_dir("mailers-bench-automations-")
    redis = RedisServer(data / "redis", appendonly=False).start()
    print("| what | figure | | | load |\n|---|---|---|---|---|", flush=True)
    try:
        if "memory" in phases:
            print("\n".join(await memory(redis.url, args.waiting)), flush=True)
        if "wake" in phases:
            print("\n".join(await wake(redis.url, args.wake, data, redis.pid)), flush=True)
        if "runner" in phases:
            print("\n".join(await runner_phase(redis.url, args.seconds, data)), flush=True)
        if "stream" in phases:
            print("\n".join(await stream_phase(redis.url, args.seconds, data)), flush=True)
        if phases & {"api", "latency"}:
            assert redis.pid is not None
            await server(args, phases, redis.url, redis.pid, data)
    finally:
        redis.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--waiting", type=int, default=1_000_000)
    parser.add_argument("--wake", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--api-rate", type=int, default=500)
    parser.add_argument("--event-batch", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--phases", default="memory,wake,runner,stream,api,latency")
    parser.add_argument(
        "--client",
        default="lean",
        help="the api phase's load generator: lean (bench/loadgen.py, its own process), aiohttp (this "
        "process), or lean,aiohttp (both, back to back per case)",
    )
    args = parser.parse_args(argv)
    if not set(args.client.split(",")) <= {"lean", "aiohttp"}:
        parser.error("--client: lean, aiohttp, or lean,aiohttp")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
