"""Insert cost of `event_latest` (ClickHouse migration 0008) on the event sink's path: events stored
through `AnalyticsStore.insert` in the sink's batches (5,000), into two chDB databases in one process,
one with the `event_latest_feed` view and one without it (dropped), alternated batch by batch (and
who goes first) so load changes hit both alike. Prints events/s and process CPU per event for each, and
the ratio; then the engine's part alone (rows generated inside ClickHouse, `--engine-rows` per insert,
same alternation).

`python -m bench.event_latest_insert [--batches 20] [--batch 5000]`. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from datetime import UTC, datetime, timedelta

from analytics.store import open_store
from bench.scratch import scratch_dir
from schemas.events import Event, EventMessage
from schemas.ids import new_id

NOW = datetime(2026, 4, 1, tzinfo=UTC)
TYPES = ["message.sent", "message.delivered", "message.opened", "message.bounced", "message.clicked"]


GENERATED = """INSERT INTO events (id, workspace, created_at, type, message_id, recipient, recipient_domain,
sender, provider, server, campaign_id, tags, metadata, bounce_type, url, data, pair_hash)
SELECT concat('evt_', toString({seed}), '_', toString(number)), 'bench',
    toDateTime64('2026-04-01 00:00:00', 3, 'UTC')
        - toIntervalSecond(cityHash64(number, {seed}) % 34560000),
    ['message.sent', 'message.delivered', 'message.opened', 'order.completed', 'message.bounced'][
        cityHash64(number, 2) % 5 + 1],
    concat('msg_', toString(number)),
    concat('user', toString(cityHash64(number, 3) % 1000000), '@example.com'),
    'example.com', 'news@acme.com', 'smtp', 'srv_1', '', [], '{{}}', '', '', '{{}}', 0
FROM numbers({n})"""


def batch(size: int, rng: random.Random) -> list[Event]:
    out = []
    for _ in range(size):
        message = EventMessage(
            id=new_id("msg"), to=f"user{rng.randrange(1_000_000)}@example.com", from_="news@acme.com"
        )
        kind = rng.choice(TYPES)
        data = {"bounce": {"type": "hard"}} if kind == "message.bounced" else {}
        at = NOW - timedelta(seconds=rng.randrange(400 * 86_400))
        out.append(
            Event(id=new_id("evt"), type=kind, created_at=at, workspace="bench", message=message, data=data)
        )
    return out


async def main(args: argparse.Namespace) -> None:
    path = str(scratch_dir("bench-latest-"))
    stores = {
        "with event_latest_feed": open_store(f"chdb://{path}?database=with_view"),
        "without it": open_store(f"chdb://{path}?database=without_view"),
    }
    for store in stores.values():
        await store.migrate()
    client = stores["without it"]._client  # type: ignore[attr-defined]
    client.command("DROP VIEW event_latest_feed")
    rng = random.Random(1)
    totals = {name: [0.0, 0.0, 0] for name in stores}
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for i in range(args.batches):
        events = batch(args.batch, rng)
        order = list(stores.items())
        for name, store in order if i % 2 else order[::-1]:  # who goes first alternates too
            start, cpu = time.perf_counter(), time.process_time()
            await store.insert(events)
            totals[name][0] += time.perf_counter() - start
            totals[name][1] += time.process_time() - cpu
            totals[name][2] += len(events)
    # The engine's part alone: the same rows generated inside ClickHouse (no Python conversion), as
    # bench/segments.py generates its data, alternated the same way.
    engine = {name: [0.0, 0.0, 0] for name in stores}
    for i in range(args.batches):
        order = list(stores.items())
        for name, store in order if i % 2 else order[::-1]:
            start, cpu = time.perf_counter(), time.process_time()
            store._client.command(GENERATED.format(n=args.engine_rows, seed=i))  # type: ignore[attr-defined]
            engine[name][0] += time.perf_counter() - start
            engine[name][1] += time.process_time() - cpu
            engine[name][2] += args.engine_rows
    print(f"load average after:  {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for name, (wall, cpu, n) in engine.items():
        print(f"engine only, {name:<24} {n / wall:12,.0f} events/s  CPU {cpu / n * 1e6:6.2f} µs/event")
    with_view, without = engine["with event_latest_feed"], engine["without it"]
    print(
        f"engine only, ratio (with / without): wall {with_view[0] / without[0]:.3f}, "
        f"CPU {with_view[1] / without[1]:.3f}"
    )
    for name, (wall, cpu, n) in totals.items():
        print(f"{name:<24} {n / wall:10,.0f} events/s  CPU {cpu / n * 1e6:6.1f} µs/event")
    with_view, without = totals["with event_latest_feed"], totals["without it"]
    print(
        f"ratio (with / without): wall {with_view[0] / without[0]:.3f}, CPU {with_view[1] / without[1]:.3f}"
    )
    for store in stores.values():
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--engine-rows", type=int, default=200_000, help="rows per generated insert")
    asyncio.run(main(parser.parse_args()))
