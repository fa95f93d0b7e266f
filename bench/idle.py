"""The idle cost of `mailers serve`: CPU per process (and per thread, with each thread's niceness) while
nothing is sent.

`python -m bench.idle [--settle 15] [--seconds 10] [--threads] [--send-rate 0]`

Starts `mailers serve` as bench/send.py does (its own Redis, AOF on), waits until `/readyz` answers and
`--settle` seconds more, then reads every process's and thread's CPU time from /proc at the start and
the end of `--seconds` and prints ms of CPU per second of wall time: per process (labelled as
bench/cpu.py labels them) with the niceness of its threads, and the total. `--threads` adds the threads
that spent anything, so one sees which of Ray's threads (core worker, gRPC, io) wake up, and at which
niceness they run. `--send-rate N` measures the same while `POST /v1/send` is offered at N req/s
(open loop, as bench/send.py's singles) over the window instead: where the CPU of a loaded serve goes,
and at which niceness; the load generator (this process) is left out of the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from pathlib import Path

import aiohttp

from bench import cpu
from bench.load import open_loop
from bench.scratch import scratch_dir
from bench.send import KEY, single_body, start_mailers, stop, wait_ready
from store.redis_server import RedisServer, free_port

TICK = os.sysconf("SC_CLK_TCK")


def _stat(path: Path) -> tuple[str, int, float] | None:
    """(thread name, niceness, CPU seconds) of a /proc/<pid>[/task/<tid>]/stat."""
    try:
        raw = path.read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw.rsplit(")", 1)[1].split()
    return name, int(fields[16]), (int(fields[11]) + int(fields[12])) / TICK


def descendants(roots: set[int]) -> set[int]:
    """`roots` and every process below them (Ray's raylet and GCS are children of `mailers serve`, its
    workers children of the raylet): other sessions' servers on the same machine are left out."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(
                    Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except OSError:
                continue
    found = set(roots)
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def threads_snapshot(roots: set[int]) -> dict[tuple[str, str, str], tuple[str, int, float]]:
    """(pid, label, tid) -> (thread name, niceness, CPU seconds) for every thread of the processes under
    `roots` (labelled as bench/cpu.py labels them)."""
    seen: dict[tuple[str, str, str], tuple[str, int, float]] = {}
    ours = descendants(roots)
    for pid, label in cpu.snapshot():
        if int(pid) not in ours:
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            stat = _stat(Path(f"/proc/{pid}/task/{tid}/stat"))
            if stat is not None:
                seen[(pid, label, tid)] = stat
    return seen


def report(
    before: dict[tuple[str, str, str], tuple[str, int, float]],
    after: dict[tuple[str, str, str], tuple[str, int, float]],
    seconds: float,
    *,
    threads: bool,
) -> list[str]:
    per_process: Counter[tuple[str, str]] = Counter()
    nices: dict[tuple[str, str], set[int]] = {}
    per_thread: list[tuple[float, str, str, str, int]] = []
    for (pid, label, tid), (name, nice, spent) in after.items():
        delta = spent - before.get((pid, label, tid), (name, nice, 0.0))[2]
        per_process[(pid, label)] += delta
        nices.setdefault((pid, label), set()).add(nice)
        if delta > 0:
            per_thread.append((delta, label, pid, name, nice))
    rows = ["| process | pid | threads' niceness | CPU ms/s |", "|---|---:|---|---:|"]
    for (pid, label), spent in sorted(per_process.items(), key=lambda item: -item[1]):
        niceness = ",".join(str(n) for n in sorted(nices[(pid, label)]))
        rows.append(f"| {label} | {pid} | {niceness} | {spent / seconds * 1000:.1f} |")
    total = sum(per_process.values())
    rows.append(f"| all ({len(per_process)} processes) | | | {total / seconds * 1000:.1f} |")
    if threads:
        rows += ["", "| process | pid | thread | nice | CPU ms/s |", "|---|---:|---|---:|---:|"]
        for delta, label, pid, name, nice in sorted(per_thread, reverse=True):
            rows.append(f"| {label} | {pid} | {name} | {nice} | {delta / seconds * 1000:.1f} |")
    return rows


async def run(args: argparse.Namespace) -> list[str]:
    data = str(scratch_dir("mailers-idle-"))
    redis = RedisServer(Path(data) / "redis", appendonly=True).start()
    port = free_port()
    mailers = start_mailers(port, redis.url, data)
    try:
        await wait_ready(f"http://127.0.0.1:{port}/readyz", mailers)
        await asyncio.sleep(args.settle)  # the actors' start-up work (migrations, first passes) is done
        roots = {mailers.pid} | ({redis.pid} if redis.pid else set())
        before, started = threads_snapshot(roots), time.monotonic()
        sent = ""
        if args.send_rate:
            headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
            async with aiohttp.ClientSession() as session:
                result = await open_loop(
                    session,
                    f"http://127.0.0.1:{port}/v1/send",
                    single_body,
                    headers,
                    rate=args.send_rate,
                    seconds=args.seconds,
                )
            sent = f", `/v1/send` offered at {args.send_rate}/s: {result.rate:.0f}/s answered"
            sent += f", {result.errors} errors"
        else:
            await asyncio.sleep(args.seconds)
        after, elapsed = threads_snapshot(roots), time.monotonic() - started
    finally:
        stop(mailers)
        redis.stop()
    load = os.getloadavg()
    return [
        f"{'Loaded' if args.send_rate else 'Idle'} `mailers serve`, {elapsed:.1f} s after {args.settle:.0f} s"
        f" of settling{sent} (load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}):",
        "",
        *report(before, after, elapsed, threads=args.threads),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settle", type=float, default=15)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--threads", action="store_true", help="also list the threads that spent CPU")
    parser.add_argument("--send-rate", type=int, default=0, help="offer POST /v1/send at this rate meanwhile")
    print("\n".join(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
