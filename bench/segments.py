"""Segment count on chDB: 1,000,000 subscribers x 10,000,000 events, beside hand-written SQL.

`python -m bench.segments [--subscribers 1000000] [--events 10000000] [--runs 30] [--path DIR]`

The data is generated inside ClickHouse (`INSERT ... SELECT ... FROM numbers(n)`), not as Python rows:
subscribers with a `plan` (free/pro/enterprise) and an `age` attribute, all in one list (90%
subscribed), and events over 400 days (opens, sends, bounces, `order.completed`) of random subscribers.
The segment is MARKETING.md's example (attribute + an event window `any` + `not` a bounce in a year).
Each run counts it once through `AnalyticsStore.segment_count` (the compiled, parameterised SQL) and
once with the hand-written query of the same condition; p50/p95 of both are printed. Target: p95 of
the compiled count <= 500 ms. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
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


async def timed(runs: int, work) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await work()
        times.append((time.perf_counter() - start) * 1000)
    return times


def report(name: str, times: list[float], answer: int) -> None:
    p95 = statistics.quantiles(times, n=20)[18] if len(times) >= 2 else times[0]
    print(f"{name:<28} count={answer:<8} p50={statistics.median(times):8.1f} ms  p95={p95:8.1f} ms")


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
        print(
            f"generated {args.subscribers:,} subscribers, {args.events:,} events "
            f"in {time.perf_counter() - start:.1f} s"
        )
    query = SegmentQuery(lists=(LIST,), filter=SEGMENT)
    compiled_answer = await store.segment_count(WS, query, now=NOW)
    hand_answer = client.query(HAND_WRITTEN, parameters={"now": NOW}).result_rows[0][0]
    assert compiled_answer == hand_answer, (compiled_answer, hand_answer)
    compiled = await timed(args.runs, lambda: store.segment_count(WS, query, now=NOW))

    async def by_hand():
        await asyncio.to_thread(client.query, HAND_WRITTEN, parameters={"now": NOW})

    hand = await timed(args.runs, by_hand)
    report("segment_count (compiled)", compiled, compiled_answer)
    report("hand-written SQL", hand, hand_answer)
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
