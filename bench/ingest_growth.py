"""What a DuckDB insert costs as the events table grows: a campaign's events (accepted, sent and delivered
for each recipient, one recipient each) through `AnalyticsStore.insert` in 3,000-event batches, printed
as µs of wall and CPU time an event per slice of the load. Three DuckDB files in one process, alternated
batch by batch so load changes hit all alike:

- "store": the event sink's insert (a plain INSERT first, `DuckDBStore._insert`);
- "replay path": the same store taking every batch as a replay (INSERT OR IGNORE, which is what every
  batch cost before the plain insert came first);
- "bare insert" (the baseline): the same Arrow rows into an `events` table of the same columns with no
  primary key, no day counts and no campaign aggregates.

`python -m bench.ingest_growth [--events 1200000] [--slice 300000]`. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from analytics.duckdb_backend import ARROW_SCHEMA, DuckDBStore
from bench.scratch import scratch_dir
from schemas.events import Event, EventMessage

START = datetime(2026, 12, 7, tzinfo=UTC)
TYPES = ("message.accepted", "message.sent", "message.delivered")


def batches(total: int, size: int) -> Iterator[list[Event]]:
    serial, out = 0, []
    for i in range(total // len(TYPES)):
        message = EventMessage(
            id=f"msg_{i:022d}",
            to=f"u{i}@example{i % 50}.com",
            from_="news@acme.com",
            provider="sandbox",
            server="srv_1",
            campaign_id="cmp_1",
            metadata={"subscriber_id": f"sub_{i:022d}"},
        )
        for kind in TYPES:
            serial += 1
            at = START + timedelta(milliseconds=serial)
            out.append(
                Event(id=f"evt_{serial:022d}", type=kind, created_at=at, workspace="ws", message=message)
            )
        if len(out) >= size:
            yield out
            out = []
    if out:
        yield out


class ReplayPath(DuckDBStore):
    """Every batch through the replay path (INSERT OR IGNORE and the stored-id lookup)."""

    def _insert(self, columns: dict[str, list[Any]]) -> None:
        self._insert_batch(columns, replayed=True)


class BareInsert(DuckDBStore):
    """The baseline: the batch's Arrow rows appended to a keyless copy of `events`, nothing else."""

    def _insert(self, columns: dict[str, list[Any]]) -> None:
        cursor = self._db.cursor()
        try:
            cursor.register("incoming_batch", pa.Table.from_pydict(columns, schema=ARROW_SCHEMA))
            cursor.execute("INSERT INTO bare_events SELECT * FROM incoming_batch")
        finally:
            cursor.close()


async def main(args: argparse.Namespace) -> None:
    path = scratch_dir("bench-ingest-growth-")
    stores: dict[str, DuckDBStore] = {
        "store": DuckDBStore(path / "store.duckdb"),
        "replay path": ReplayPath(path / "replay.duckdb"),
        "bare insert": BareInsert(path / "bare.duckdb"),
    }
    for store in stores.values():
        await store.migrate()
    bare = stores["bare insert"]
    await bare._run(bare._db.execute, "CREATE TABLE bare_events AS SELECT * FROM events LIMIT 0")
    wall = dict.fromkeys(stores, 0.0)
    cpu = dict.fromkeys(stores, 0.0)
    done = mark = 0
    print(f"| events stored | {' | '.join(f'{n}, µs an event (wall / CPU)' for n in stores)} |")
    print(f"|---:|{'---:|' * len(stores)}")
    for number, batch in enumerate(batches(args.events, args.batch)):
        names = list(stores)
        if number % 2:
            names.reverse()
        for name in names:
            started, started_cpu = time.perf_counter(), time.process_time()
            await stores[name].insert(batch)
            wall[name] += time.perf_counter() - started
            cpu[name] += time.process_time() - started_cpu
        done += len(batch)
        if done - mark >= args.slice or done >= args.events:
            size = done - mark
            cells = " | ".join(f"{wall[n] / size * 1e6:.1f} / {cpu[n] / size * 1e6:.1f}" for n in stores)
            print(f"| {mark:,}-{done:,} | {cells} |", flush=True)
            wall, cpu, mark = dict.fromkeys(stores, 0.0), dict.fromkeys(stores, 0.0), done
    for store in stores.values():
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_200_000)
    parser.add_argument("--slice", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=3_000)
    asyncio.run(main(parser.parse_args()))
