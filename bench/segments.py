"""Segment count on chDB: 1,000,000 subscribers x 10,000,000 events, beside hand-written SQL.

`python -m bench.segments [--subscribers 1000000] [--events 10000000] [--runs 30] [--path DIR]`

The data is generated inside ClickHouse (`INSERT ... SELECT ... FROM numbers(n)`), not as Python rows:
subscribers with a `plan` (free/pro/enterprise) and an `age` attribute, all in one list (90%
subscribed), and events over 400 days (opens, sends, bounces, `order.completed`) of random subscribers.
The segment is MARKETING.md's example (attribute + an event window `any` + `not` a bounce in a year).
Each run counts it through `AnalyticsStore.segment_count` (the compiled, parameterised SQL) and with two
hand-written queries of the same condition over the same data, interleaved: HAND_WRITTEN reads what a
person would (the events table by address, the JSON attributes, membership by id: the baseline of issue
#12, unchanged since the first run), HAND_WRITTEN_DAYS the tables the compiler reads (event_days for the
whole days of each window plus the events of its first day, UInt64 keys, the attribute map), so the
compiler's own overhead shows. p50/p95 of each are printed with the machine's load. Target: p95 of the
compiled count <= 500 ms. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime

from analytics.store import open_store
from schemas.segments import SegmentQuery

WS, LIST = "bench", "lst_" + "0" * 26
SEGMENT = {
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
HAND_WRITTEN = f"""
SELECT count() FROM subscribers AS s FINAL
WHERE s.workspace = '{WS}' AND s.deleted = 0
  AND s.id IN (SELECT subscriber_id FROM memberships FINAL WHERE workspace = '{WS}' AND list_id = '{LIST}')
  AND JSONExtractString(s.attributes, 'plan') = 'pro'
  AND (s.email IN (SELECT recipient FROM events WHERE workspace = '{WS}' AND type = 'message.opened'
                   AND created_at >= {{now:DateTime64(3)}} - INTERVAL 30 DAY)
       OR s.email IN (SELECT recipient FROM events WHERE workspace = '{WS}' AND type = 'order.completed'
                      AND created_at >= {{now:DateTime64(3)}} - INTERVAL 90 DAY
                      GROUP BY recipient HAVING count(DISTINCT id) >= 2))
  AND s.email NOT IN (SELECT recipient FROM events WHERE workspace = '{WS}' AND type = 'message.bounced'
                      AND created_at >= {{now:DateTime64(3)}} - INTERVAL 365 DAY)
"""


def _window(kind: str, days: int, count_gte: int = 1) -> str:
    """Recipient keys with `count_gte` events of `kind` in the last `days` days, by hand: whole days from
    event_days, the window's first (partial) day from events."""
    since = f"({{now:DateTime64(3)}} - INTERVAL {days} DAY)"
    first_day = (
        f"FROM events WHERE workspace = '{WS}' AND type = '{kind}' AND created_at >= {since} "
        f"AND created_at < toDateTime64(toDate({since}), 3, 'UTC') + INTERVAL 1 DAY"
    )
    whole_days = f"FROM event_days WHERE workspace = '{WS}' AND type = '{kind}' AND day > toDate({since})"
    if count_gte == 1:
        return f"SELECT recipient_key {whole_days} UNION ALL SELECT cityHash64(recipient) {first_day}"
    return (
        f"SELECT k FROM (SELECT recipient_key AS k, ids AS n {whole_days} "
        f"UNION ALL SELECT cityHash64(recipient), [cityHash64(id)] {first_day}) "
        f"GROUP BY k HAVING uniqExactArray(n) >= {count_gte}"
    )


HAND_WRITTEN_DAYS = f"""
SELECT count() FROM subscribers AS s FINAL
WHERE s.workspace = '{WS}' AND s.deleted = 0
  AND s.key IN (SELECT subscriber_key FROM memberships FINAL WHERE workspace = '{WS}' AND list_id = '{LIST}'
                AND status <> 'removed')
  AND s.attr_strings['plan'] = 'pro'
  AND (s.email_key IN ({_window("message.opened", 30)})
       OR s.email_key IN ({_window("order.completed", 90, 2)}))
  AND s.email_key NOT IN ({_window("message.bounced", 365)})
SETTINGS use_index_for_in_with_subqueries = 0
"""
NOW = datetime(2026, 4, 1, tzinfo=UTC)


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


async def timed(runs: int, works: dict) -> dict[str, list[float]]:
    """Each work once per round, rounds interleaved, so load changes on the shared machine hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(runs):
        for name, work in works.items():
            start = time.perf_counter()
            await work()
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def report(name: str, times: list[float], answer: int) -> None:
    p95 = statistics.quantiles(times, n=20)[18] if len(times) >= 2 else times[0]
    print(f"{name:<28} count={answer:<8} p50={statistics.median(times):8.1f} ms  p95={p95:8.1f} ms")


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


async def main(args: argparse.Namespace) -> None:
    path = args.path or tempfile.mkdtemp(prefix="bench-segments-")
    store = open_store(f"chdb://{path}?database=bench_segments")
    await store.migrate()
    client = store._client  # type: ignore[attr-defined]  # the bench's own data load, in the engine
    if not client.query("SELECT count() FROM subscribers").result_rows[0][0]:
        start = time.perf_counter()
        generate(client, args.subscribers, args.events)
        client.command("OPTIMIZE TABLE subscribers FINAL")
        client.command("OPTIMIZE TABLE memberships FINAL")
        # Merged, as months-old days are in a running store (the view adds one row per event; background
        # merges sum them by key).
        client.command("OPTIMIZE TABLE event_days FINAL")
        print(
            f"generated {args.subscribers:,} subscribers, {args.events:,} events "
            f"in {time.perf_counter() - start:.1f} s"
        )
    parts = client.query(
        "SELECT table, count() FROM system.parts WHERE database = currentDatabase() AND active "
        "AND table IN ('events', 'event_days', 'subscribers', 'memberships') GROUP BY table ORDER BY table"
    ).result_rows
    print("active parts:", ", ".join(f"{table} {n}" for table, n in parts))
    query = SegmentQuery(lists=(LIST,), filter=SEGMENT)
    compiled_answer = await store.segment_count(WS, query, now=NOW)
    answers = {"compiled": compiled_answer}
    for name, sql in (("hand", HAND_WRITTEN), ("hand_days", HAND_WRITTEN_DAYS)):
        answers[name] = client.query(sql, parameters={"now": NOW}).result_rows[0][0]
    assert len(set(answers.values())) == 1, answers

    def by_hand(sql: str):
        return lambda: asyncio.to_thread(client.query, sql, parameters={"now": NOW})

    print(f"load average before: {load_average()}")
    times = await timed(
        args.runs,
        {
            "compiled": lambda: store.segment_count(WS, query, now=NOW),
            "hand": by_hand(HAND_WRITTEN),
            "hand_days": by_hand(HAND_WRITTEN_DAYS),
        },
    )
    print(f"load average after:  {load_average()}")
    report("segment_count (compiled)", times["compiled"], compiled_answer)
    report("hand-written, raw events", times["hand"], answers["hand"])
    report("hand-written, event_days", times["hand_days"], answers["hand_days"])
    await store.close()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--path", help="a chDB directory to reuse (data generated once)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
