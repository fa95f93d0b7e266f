"""Segment count on chDB: 1,000,000 subscribers x 10,000,000 events, beside hand-written SQL.

`python -m bench.segments [--subscribers 1000000] [--events 10000000] [--runs 20] [--path DIR]
[--shapes attribute,list_status,event_count,not,combination] [--previous]`

`--path DIR` keeps the chDB data: the first run generates it (about 6 minutes on the shared machine, load
~10), later runs with the same DIR reuse it (migrations added since run on it, backfilling as they do).

The data is generated inside ClickHouse (`INSERT ... SELECT ... FROM numbers(n)`), not as Python rows:
subscribers with a `plan` (free/pro/enterprise) and an `age` attribute, all in one list (90%
subscribed), and events over 400 days (opens, sends, bounces, `order.completed`) of random subscribers.
Five condition shapes (SHAPES): an attribute, a list status, an event count in a window, `not` an event,
and MARKETING.md's example combining them. Each is counted through `AnalyticsStore.segment_count` (the
compiled, parameterised SQL) and with a hand-written query of the same condition that reads what a
person would (the events table by address, the JSON attributes, memberships by id: the baseline of
issue #12), interleaved round by round so load changes hit both alike. The combination also runs by hand
over the tables the compiler reads (`HAND_WRITTEN_LAYOUT`), so the compiler's own overhead shows. For
each: p50/p95 wall time and the median CPU time of the process (chDB runs in it, on every thread) per
query, which the other processes' load moves far less than wall time; the load average is printed
before and after. Target: p95 of the compiled
count <= 500 ms. Not part of `make test`.

`--previous` adds, per shape, the SQL of the compiler before issue #12's fourth pass (`PreviousJson`:
`count_gte` 1 read from `event_days` and the first day's events, not `event_latest`; attribute equality
as two map lookups), interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from datetime import UTC, datetime

from analytics.clickhouse_backend import ClickHouseStore
from analytics.segments import ClickHouseJson, SegmentCompiler
from analytics.store import open_store
from bench.scratch import scratch_dir
from schemas.segments import SegmentQuery, parse_condition

WS, LIST = "bench", "lst_" + "0" * 26
COMBINATION = {
    "all": [
        {"attribute": "plan", "op": "eq", "value": "pro"},
        {
            "any": [
                {"event": "message.opened", "within_days": 30},
                {"event": "order.completed", "within_days": 90, "count_gte": 2},
            ]
        },
        {"not": {"event": "message.bounced", "within_days": 365}},
    ]
}
SEGMENT = COMBINATION
# The population every hand-written query starts from: the list's members, as a person would write it.
_MEMBERS = f"""SELECT count() FROM subscribers AS s FINAL
WHERE s.workspace = '{WS}' AND s.deleted = 0
  AND s.id IN (SELECT subscriber_id FROM memberships FINAL WHERE workspace = '{WS}' AND list_id = '{LIST}'
               AND status <> 'removed')"""


def _events(kind: str, days: int, count_gte: int = 1) -> str:
    """Addresses with `count_gte` events of `kind` in the last `days` days, from the events table."""
    sql = (
        f"SELECT recipient FROM events WHERE workspace = '{WS}' AND type = '{kind}' "
        f"AND created_at >= {{now:DateTime64(3)}} - INTERVAL {days} DAY"
    )
    return sql if count_gte == 1 else f"{sql} GROUP BY recipient HAVING count(DISTINCT id) >= {count_gte}"


HAND_WRITTEN = f"""{_MEMBERS}
  AND JSONExtractString(s.attributes, 'plan') = 'pro'
  AND (s.email IN ({_events("message.opened", 30)})
       OR s.email IN ({_events("order.completed", 90, 2)}))
  AND s.email NOT IN ({_events("message.bounced", 365)})
"""
# (filter, the same condition written by hand over the raw tables)
SHAPES: dict[str, tuple[dict, str]] = {
    "attribute": (
        {"attribute": "plan", "op": "eq", "value": "pro"},
        f"{_MEMBERS} AND JSONExtractString(s.attributes, 'plan') = 'pro'",
    ),
    "list_status": (
        {"attribute": "list_status", "op": "eq", "value": "unsubscribed"},
        f"{_MEMBERS} AND s.id IN (SELECT subscriber_id FROM memberships FINAL WHERE workspace = '{WS}' "
        f"AND list_id = '{LIST}' AND status = 'unsubscribed')",
    ),
    "event_count": (
        {"event": "order.completed", "within_days": 90, "count_gte": 2},
        f"{_MEMBERS} AND s.email IN ({_events('order.completed', 90, 2)})",
    ),
    "not": (
        {"not": {"event": "message.bounced", "within_days": 365}},
        f"{_MEMBERS} AND s.email NOT IN ({_events('message.bounced', 365)})",
    ),
    "combination": (COMBINATION, HAND_WRITTEN),
}


def _window(kind: str, days: int, count_gte: int = 1) -> str:
    """Recipient keys with `count_gte` events of `kind` in the last `days` days, by hand over the tables
    the compiler reads: for `count_gte` 1 the newest event per recipient (event_latest), else whole days
    from event_days and the window's first (partial) day from events."""
    since = f"({{now:DateTime64(3)}} - INTERVAL {days} DAY)"
    if count_gte == 1:
        latest = f"FROM event_latest WHERE workspace = '{WS}' AND type = '{kind}' AND last >= {since}"
        return f"SELECT recipient_key {latest}"
    first_day = (
        f"FROM events WHERE workspace = '{WS}' AND type = '{kind}' AND created_at >= {since} "
        f"AND created_at < toDateTime64(toDate({since}), 3, 'UTC') + INTERVAL 1 DAY"
    )
    whole_days = f"WHERE workspace = '{WS}' AND type = '{kind}' AND day > toDate({since})"
    if count_gte == 1:
        days = f"SELECT recipient_key FROM event_days {whole_days}"
        return f"{days} UNION ALL SELECT cityHash64(recipient) {first_day}"
    return (
        f"SELECT k FROM (SELECT recipient_key AS k, length(ids) AS n FROM event_days FINAL {whole_days} "
        f"UNION ALL SELECT cityHash64(recipient) AS k, uniqExact(id) AS n {first_day} GROUP BY k) "
        f"GROUP BY k HAVING sum(n) >= {count_gte}"
    )


HAND_WRITTEN_LAYOUT = f"""
SELECT count() FROM segment_subscribers AS s FINAL
WHERE s.workspace = '{WS}' AND s.deleted = 0
  AND s.key IN (SELECT subscriber_key FROM segment_memberships FINAL WHERE workspace = '{WS}'
                AND list_id = '{LIST}' AND status <> 'removed')
  AND s.attr_strings['plan'] = 'pro'
  AND (s.email_key IN ({_window("message.opened", 30)})
       OR s.email_key IN ({_window("order.completed", 90, 2)}))
  AND s.email_key NOT IN ({_window("message.bounced", 365)})
SETTINGS use_index_for_in_with_subqueries = 0
"""
NOW = datetime(2026, 4, 1, tzinfo=UTC)


class PreviousJson(ClickHouseJson):
    """The compiler before issue #12's fourth pass, for the `previous compiler` rows: `count_gte` 1 event
    conditions read `event_days` for the window's whole days and `events` for its first day, as
    `count_gte` > 1 still does, instead of `event_latest` (migration 0008); an attribute `eq`/`ne` tests
    `mapContains` and then looks the key up (two lookups per row)."""

    latest_table = None
    absent_is_default = False


def generate(client, subscribers: int, events: int) -> None:
    """Everything from numbers(): seconds for 10M rows, where Python rows would take minutes."""
    client.command(
        f"""INSERT INTO subscribers SELECT '{WS}', concat('sub_', leftPad(toString(number), 26, '0')),
        concat('user', toString(number), '@example.com'), concat('User ', toString(number)),
        concat('{{"plan":"', ['free', 'pro', 'enterprise'][number % 3 + 1], '","age":',
               toString(number % 80), '}}'),
        'active', toDateTime64('2025-01-01 00:00:00', 3, 'UTC') + toIntervalSecond(number % 30000000), 1, 0
        FROM numbers({subscribers})"""
    )
    client.command(
        f"""INSERT INTO memberships SELECT '{WS}', concat('sub_', leftPad(toString(number), 26, '0')),
        '{LIST}', if(number % 10 = 0, 'unsubscribed', 'subscribed'), 2 FROM numbers({subscribers})"""
    )
    client.command(
        f"""INSERT INTO events (id, workspace, created_at, type, message_id, recipient, recipient_domain,
        sender, provider, server, campaign_id, tags, metadata, bounce_type, url, data, pair_hash)
        SELECT concat('evt_', leftPad(toString(number), 26, '0')), '{WS}',
        toDateTime64('{NOW:%Y-%m-%d %H:%M:%S}', 3, 'UTC')
            - toIntervalSecond(cityHash64(number, 1) % 34560000),
        ['message.sent', 'message.delivered', 'message.opened', 'message.opened', 'order.completed',
         'message.bounced'][cityHash64(number, 2) % 6 + 1],
        concat('msg_', toString(intDiv(number, 3))),
        concat('user', toString(cityHash64(number, 3) % {subscribers}), '@example.com'), 'example.com',
        'news@acme.com', 'smtp', 'srv_1', '', [], '{{}}', '', '', '{{}}', 0
        FROM numbers({events})"""
    )


async def timed(runs: int, works: dict) -> dict[str, list[tuple[float, float]]]:
    """Each work once per round, rounds interleaved, so load changes on the shared machine hit all alike.
    (wall ms, process CPU ms) per run."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in works}
    for _ in range(runs):
        for name, work in works.items():
            start, cpu = time.perf_counter(), time.process_time()
            await work()
            times[name].append(((time.perf_counter() - start) * 1000, (time.process_time() - cpu) * 1000))
    return times


def report(name: str, times: list[tuple[float, float]], answer: int) -> None:
    wall = [w for w, _ in times]
    p95 = statistics.quantiles(wall, n=20)[18] if len(wall) >= 2 else wall[0]
    cpu = statistics.median(c for _, c in times)
    print(
        f"{name:<34} count={answer:<8} p50={statistics.median(wall):8.1f} ms  p95={p95:8.1f} ms"
        f"  cpu p50={cpu:7.1f} ms"
    )


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


async def main(args: argparse.Namespace) -> None:
    path = args.path or str(scratch_dir("bench-segments-"))
    store = open_store(f"chdb://{path}?database=bench_segments")
    await store.migrate()
    client = store._client  # type: ignore[attr-defined]  # the bench's own data load, in the engine
    if not client.query("SELECT count() FROM subscribers").result_rows[0][0]:
        start = time.perf_counter()
        generate(client, args.subscribers, args.events)
        # Merged, as months-old rows are in a running store (the views add one row per inserted row;
        # background merges fold them by key).
        for table in (
            "subscribers",
            "memberships",
            "segment_subscribers",
            "segment_memberships",
            "event_days",
            "event_latest",
        ):
            client.command(f"OPTIMIZE TABLE {table} FINAL")
        print(
            f"generated {args.subscribers:,} subscribers, {args.events:,} events "
            f"in {time.perf_counter() - start:.1f} s"
        )
    parts = client.query(
        "SELECT table, count() FROM system.parts WHERE database = currentDatabase() AND active "
        "AND table IN ('events', 'event_days', 'event_latest', 'segment_subscribers', 'segment_memberships') "
        "GROUP BY table ORDER BY table"
    ).result_rows
    print("active parts:", ", ".join(f"{table} {n}" for table, n in parts))

    def by_hand(sql: str, values: dict | None = None):
        return lambda: asyncio.to_thread(client.query, sql, parameters=values or {"now": NOW})

    works, answers = {}, {}
    for shape in args.shapes.split(","):
        condition, hand = SHAPES[shape]
        query = SegmentQuery(lists=(LIST,), filter=condition)
        compiled = await store.segment_count(WS, query, now=NOW)
        by_hand_answer = client.query(hand, parameters={"now": NOW}).result_rows[0][0]
        assert compiled == by_hand_answer, (shape, compiled, by_hand_answer)
        works[f"{shape}: compiled"] = lambda q=query: store.segment_count(WS, q, now=NOW)
        works[f"{shape}: hand-written"] = by_hand(hand)
        answers[f"{shape}: compiled"] = answers[f"{shape}: hand-written"] = compiled
        if args.previous:
            before = SegmentCompiler(ClickHouseStore.dialect, PreviousJson(), WS, query, NOW)
            sql = before.count(parse_condition(condition))
            previous = client.query(sql, parameters=before.bind.values).result_rows[0][0]
            assert previous == compiled, (shape, previous, compiled)
            works[f"{shape}: previous compiler"] = by_hand(sql, before.bind.values)
            answers[f"{shape}: previous compiler"] = previous
        if shape == "combination":
            layout = client.query(HAND_WRITTEN_LAYOUT, parameters={"now": NOW}).result_rows[0][0]
            assert layout == compiled, (layout, compiled)
            works["combination: by hand, same tables"] = by_hand(HAND_WRITTEN_LAYOUT)
            answers["combination: by hand, same tables"] = layout

    print(f"load average before: {load_average()}")
    times = await timed(args.runs, works)
    print(f"load average after:  {load_average()}")
    for name in works:
        report(name, times[name], answers[name])
    await store.close()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--path", help="a chDB directory to reuse (data generated once)")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated names of SHAPES")
    parser.add_argument(
        "--previous", action="store_true", help="also time the previous compiler's SQL, interleaved"
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
