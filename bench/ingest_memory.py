"""What the event sink's DuckDB holds in memory while a campaign's events go in, per WAL checkpoint
threshold and memory limit: the peak RSS the ingest added (from the start, and from the 60,000th event,
as a sink that has stored events before), the RSS at the end, the CPU per event, and DuckDB's own
account of its memory (`duckdb_memory()`) at the end.

Rows written since the last checkpoint live in memory (with their part of the primary-key index) until
the WAL reaches the threshold; the checkpoint that writes them out needs memory of its own, and the
blocks it wrote stay cached up to the memory limit. Each setting runs in a process of its own (a clean
RSS), one after the other, on the same events as `bench.ingest_growth` (accepted, sent and delivered a
recipient, 3,000-event batches).

`python -m bench.ingest_memory [--events 3000000] [--thresholds 64MB,32MB/128MiB]`. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from analytics.duckdb_backend import DuckDBStore
from bench.ingest_growth import batches
from bench.process_memory import rss_bytes
from bench.scratch import scratch_dir

WARM_BATCHES = 20  # the second peak is counted from here: 60,000 events, the store's caches warm


def rss_mb() -> float:
    return rss_bytes(os.getpid()) / 2**20


async def one(events: int, setting: str, warm: int = WARM_BATCHES) -> dict[str, object]:
    threshold, _, limit = setting.partition("/")
    store = DuckDBStore(
        scratch_dir("bench-ingest-memory-") / "events.duckdb",
        checkpoint_threshold=threshold,
        memory_limit_mib=int(limit.removesuffix("MiB")) if limit else 0,
    )
    await store.migrate()
    start = peak = rss_mb()
    started = time.process_time()
    for number, batch in enumerate(batches(events, 3000), 1):
        await store.insert(batch)
        if number == warm:  # what a sink that has stored events already adds
            warm_start = warm_peak = rss_mb()
        elif number > warm:
            warm_peak = max(warm_peak, rss_mb())
        peak = max(peak, rss_mb())
    cpu = time.process_time() - started
    tags = store._db.execute(
        "SELECT tag, memory_usage_bytes // 1048576 FROM duckdb_memory() WHERE memory_usage_bytes >= 1048576"
    ).fetchall()
    end = rss_mb()
    await store.close()
    return {
        "peak": peak - start,
        "warm_peak": warm_peak - warm_start,
        "end": end - start,
        "cpu_us": cpu / events * 1e6,
        "tags": ", ".join(f"{tag} {mb} MB" for tag, mb in tags),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument(
        "--thresholds",
        default="64MB,256MB",
        help="DuckDB checkpoint_threshold values, each optionally /memory limit in MiB (64MB/128MiB)",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child: this threshold only, JSON out
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(one(args.events, args.one))))
        return
    load = os.getloadavg()[0]
    print(f"load: `{load:.1f}` at the start; {args.events:,} events in 3,000-event batches, one process each")
    print(
        "| checkpoint threshold / memory limit | peak RSS added | the same from the 60,000th event "
        "| RSS added at the end | CPU an event | DuckDB's memory at the end |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for threshold in args.thresholds.split(","):
        child = subprocess.run(
            [sys.executable, "-m", "bench.ingest_memory", "--events", str(args.events), "--one", threshold],
            check=True,
            capture_output=True,
            text=True,
        )
        got = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"| {threshold} | {got['peak']:,.0f} MB | {got['warm_peak']:,.0f} MB | {got['end']:,.0f} MB "
            f"| {got['cpu_us']:.1f} µs "
            f"| {got['tags']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
