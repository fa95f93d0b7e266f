"""The campaign report on chDB: a 1,000,000-recipient campaign with 10,000,000 events, beside one
hand-written SQL query computing only the totals of the same campaign.

`python -m bench.campaign_report [--recipients 1000000] [--runs 20] [--path DIR]` (also the
`campaign_report` phase of `python -m bench`). Target (issue #13): p95 of the report <= 300 ms.

The events are generated inside ClickHouse (`INSERT ... SELECT ... FROM numbers(n)`, one insert per
6 hours of event time, in time order as the sink writes them), ten per recipient: accepted, sent (1%
suppressed, 1% failed instead), delivered (2.5% bounced), opens (a quarter of the first ones by
Apple's proxy, more for some recipients, machine re-opens), clicks on 20 links, complaints and
unsubscribes, the rest deferrals (not counted). Sends spread over 2 hours, opens and clicks over the
3 days after. Eight recipient domains, two providers, a 20% A/B test split in two variants. Each run
asks for the whole report through `campaign_report(store, ...)`, then the hand-written totals;
p50/p95 of both are printed with the machine's load. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from analytics.campaign_report import campaign_report
from analytics.store import open_store

WS, CAMPAIGN = "bench", "cmp_" + "0" * 26
T0 = "2026-04-01 08:00:00"
DOMAINS = [
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "gmx.de",
    "web.de",
    "acme.io",
]
# Hand-written: only the totals, the question the report answers first, in one scan.
HAND_WRITTEN = """
SELECT countIf(type = 'message.sent'), countIf(type = 'message.delivered'),
       countIf(type = 'message.bounced'), countIf(type = 'message.complained'),
       countIf(type = 'message.opened'),
       uniqExactIf(pair_hash, type = 'message.opened' AND NOT machine_open),
       countIf(type = 'message.clicked'),
       uniqExactIf(pair_hash, type = 'message.clicked' AND NOT machine_open),
       countIf(type = 'subscriber.unsubscribed'), countIf(type = 'message.failed'),
       countIf(type = 'message.suppressed')
FROM events FINAL
WHERE workspace = {ws:String} AND campaign_id = {campaign:String}
"""
# slot -> the event type of recipient r's slot-th event (r and slot are columns of the SELECT below)
_TYPE = """multiIf(
    slot = 0, 'message.accepted',
    slot = 1, multiIf(r % 100 = 0, 'message.suppressed', r % 100 = 50, 'message.failed', 'message.sent'),
    slot = 2, multiIf(r % 50 = 0, 'message.deferred', r % 40 = 7, 'message.bounced', 'message.delivered'),
    slot = 3, if(r % 50 = 0 OR r % 40 = 7, 'message.deferred', 'message.opened'),
    slot = 4, if(r % 10 < 5, 'message.opened', 'message.deferred'),
    slot = 5, if(r % 10 < 3, 'message.opened', 'message.deferred'),
    slot = 6, if(r % 10 < 2, 'message.clicked', 'message.deferred'),
    slot = 7, if(r % 10 < 1, 'message.clicked', 'message.deferred'),
    slot = 8, if(r % 3 = 0, 'message.opened', 'message.deferred'),
    multiIf(r % 1000 = 3, 'message.complained', r % 200 = 9, 'subscriber.unsubscribed',
            'message.deferred'))"""
_GENERATE = f"""
INSERT INTO events (id, workspace, created_at, type, message_id, recipient, recipient_domain, sender,
    provider, server, campaign_id, tags, metadata, bounce_type, url, data, pair_hash, machine_open,
    campaign_variant)
SELECT concat('evt_', leftPad(toString(number), 26, '0')), '{WS}', at,
    type, concat('msg_', leftPad(toString(r), 26, '0')), recipient, domain, 'news@acme.com',
    if(type IN ('message.suppressed', 'message.failed'), '', ['smtp', 'amazon-ses'][r % 2 + 1]),
    if(type IN ('message.suppressed', 'message.failed'), '', ['srv_1', 'srv_2'][r % 2 + 1]),
    '{CAMPAIGN}', ['newsletter'], if(variant = '', '{{}}', concat('{{"campaign_variant":"', variant, '"}}')),
    if(type = 'message.bounced', if(r % 3 = 0, 'soft', 'hard'), ''),
    if(type = 'message.clicked', concat('https://acme.com/news/', toString(cityHash64(number) % 20)), ''),
    '{{}}', if(type IN ('message.opened', 'message.clicked'), cityHash64(r) + 1, 0),
    type = 'message.opened' AND (slot = 8 OR (slot = 3 AND r % 4 = 0)), variant
FROM (
    SELECT number, intDiv(number, 10) AS r, number % 10 AS slot, {_TYPE} AS type,
        {DOMAINS!r}[r % {len(DOMAINS)} + 1] AS domain, concat('user', toString(r), '@', domain) AS recipient,
        if(r % 5 = 0, toString(intDiv(r, 5) % 2), '') AS variant,
        toDateTime64('{T0}', 3, 'UTC') + toIntervalMillisecond(r * 7 + if(slot < 3, slot * 2000,
            slot * 1000 + cityHash64(number) % 259200000)) AS at
    FROM numbers({{count:UInt64}})
)
WHERE at >= toDateTime64('{T0}', 3, 'UTC') + toIntervalHour({{from_hour:UInt32}})
  AND at < toDateTime64('{T0}', 3, 'UTC') + toIntervalHour({{to_hour:UInt32}})"""
SLICE_HOURS, SPAN_HOURS = 6, 78  # sends over ~2 hours, opens and clicks over the 3 days after


def percentiles(times: list[float]) -> tuple[float, float]:
    return statistics.median(times), statistics.quantiles(times, n=20, method="inclusive")[18]


async def timed(runs: int, work: Callable[[], Awaitable[Any]]) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await work()
        times.append((time.perf_counter() - start) * 1000)
    return times


def load_average() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


async def run(recipients: int, runs: int, path: str | None) -> list[str]:
    path = path or tempfile.mkdtemp(prefix="bench-campaign-report-")
    store = open_store(f"chdb://{path}?database=bench_campaign_report")
    await store.migrate()
    client = store._client  # type: ignore[attr-defined]  # the bench's own data load, in the engine
    lines = []
    if not client.query("SELECT count() FROM events").result_rows[0][0]:
        # In time order, a slice of hours per insert, as the sink writes them (it inserts events as they
        # happen): parts then hardly overlap in the sorting key, which is what FINAL costs on.
        start = time.perf_counter()
        for hour in range(0, SPAN_HOURS, SLICE_HOURS):
            client.command(
                _GENERATE,
                parameters={"count": recipients * 10, "from_hour": hour, "to_hour": hour + SLICE_HOURS},
            )
        lines.append(f"generated {recipients * 10:,} events in {time.perf_counter() - start:.1f} s")
    events, parts = client.query(
        "SELECT sum(rows), count() FROM system.parts WHERE database = currentDatabase() "
        "AND table = 'events' AND active"
    ).result_rows[0]
    params = {"ws": WS, "campaign": CAMPAIGN}
    report = await campaign_report(store, WS, CAMPAIGN)
    hand = client.query(HAND_WRITTEN, parameters=params).result_rows[0]
    totals = report.totals
    ours = (
        totals.sent,
        totals.delivered,
        totals.bounced,
        totals.complained,
        totals.opened,
        totals.opened_unique,
        totals.clicked,
        totals.clicked_unique,
        totals.unsubscribed,
        totals.failed,
        totals.suppressed,
    )
    assert tuple(int(v) for v in hand) == ours, (hand, ours)
    load_before = load_average()
    report_times = await timed(runs, lambda: campaign_report(store, WS, CAMPAIGN))

    async def by_hand() -> None:
        await asyncio.to_thread(client.query, HAND_WRITTEN, parameters=params)

    hand_times = await timed(runs, by_hand)
    await store.close()
    lines.append(
        f"campaign report, chDB: {events:,} events in {parts} parts, {totals.sent:,} sent, "
        f"{len(report.links)} links, {len(report.domains)} domains, {len(report.variants)} variants, "
        f"{len(report.timeline)} timeline buckets of {report.timeline_bucket_seconds} s; {runs} runs each"
    )
    lines.append("| query | p50 ms | p95 ms |")
    lines.append("|---|---|---|")
    for name, times in (
        ("campaign_report (whole report, 2 queries)", report_times),
        ("hand-written SQL, totals only", hand_times),
    ):
        p50, p95 = percentiles(times)
        lines.append(f"| {name} | {p50:.1f} | {p95:.1f} |")
    lines.append(f"target: report p95 <= 300 ms; {load_before} before, {load_average()} after")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--path", help="a chDB directory to reuse (data generated once)")
    args = parser.parse_args()
    print("\n".join(asyncio.run(run(args.recipients, args.runs, args.path))))


if __name__ == "__main__":
    main()
