"""The campaign report (`GET /v1/campaigns/:id/report`) and the A/B winner's metric, from the analytics store.

`campaign_report(store, workspace, campaign_id)` and `variant_metric(...)` take the store object the
analytics routes use (`ingress/routes/analytics.reader_for`): the store itself with ClickHouse, the
EventSink's client in DuckDB mode. Both end in `SqlAnalyticsStore.campaign_report`, which runs
`build_report` below on the store's own thread, never on the event loop.

Two queries, every value a bound parameter:
1. the span: first and last event time of the campaign (and whether it has any); with no events the
   report is all zeros and no second query runs;
2. one scan with GROUPING SETS: totals, per recipient domain, per (provider, server), per variant, per
   link and per timeline bucket, each row already pivoted into the counters (conditional counts), so
   a group costs one row however many event types it holds.
The counters and rates are defined in docs/campaigns.md ("Report") and `schemas/campaign_report.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from analytics.queries import CampaignReportQuery
from analytics.rows import from_epoch_ms
from analytics.sql import Bound, Dialect
from schemas.campaign_report import (
    COUNTS,
    METRICS,
    RATES,
    CampaignReport,
    Counters,
    DomainStats,
    LinkStats,
    ProviderStats,
    TimelineBucket,
    VariantStats,
)

Rows = list[tuple[Any, ...]]
RunQuery = Callable[[str, dict[str, Any]], Awaitable[Rows]]

MAX_DOMAINS = 100  # the domains with most `sent` first; `domains_truncated` says when more exist
MAX_BUCKETS = 100
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
WEEK = 7 * DAY
# Timeline widths, smallest first; the report takes the first that covers the span in MAX_BUCKETS.
LADDER = (MINUTE, 5 * MINUTE, 15 * MINUTE, HOUR, 6 * HOUR, DAY, WEEK)
# Buckets start at multiples of their width since the epoch (UTC); weeks (and multiples of weeks)
# start on Mondays: 1970-01-01 was a Thursday, so Monday 1970-01-05 is 4 days in.
WEEK_OFFSET = 4 * DAY

# counter -> (event type, unique among non-machine events?)
_COUNTED: dict[str, tuple[str, bool]] = {
    "sent": ("message.sent", False),
    "delivered": ("message.delivered", False),
    "bounced": ("message.bounced", False),
    "complained": ("message.complained", False),
    "opened": ("message.opened", False),
    "opened_unique": ("message.opened", True),
    "clicked": ("message.clicked", False),
    "clicked_unique": ("message.clicked", True),
    "unsubscribed": ("subscriber.unsubscribed", False),
    "failed": ("message.failed", False),
    "suppressed": ("message.suppressed", False),
}
REPORT_TYPES: tuple[str, ...] = tuple(dict.fromkeys(t for t, _ in _COUNTED.values()))
# Grouping dimensions in column order; grouping() gives d0 the highest bit.
_DIMS = ("recipient_domain", "provider", "server", "campaign_variant", "url", "bucket")
_SETS: dict[str, tuple[str, ...]] = {
    "totals": (),
    "domains": ("recipient_domain",),
    "providers": ("provider", "server"),
    "variants": ("campaign_variant",),
    "links": ("url",),
    "timeline": ("bucket",),
}


class ReportReader(Protocol):
    """What the report needs of a store: `analytics.store.AnalyticsReader.campaign_report`."""

    async def campaign_report(
        self,
        workspace: str,
        campaign_id: str,
        query: CampaignReportQuery | None = None,
        *,
        now: datetime | None = None,
    ) -> CampaignReport: ...


async def campaign_report(
    store: ReportReader,
    workspace: str,
    campaign_id: str,
    query: CampaignReportQuery | None = None,
    *,
    now: datetime | None = None,
) -> CampaignReport:
    """The report over the campaign's whole history (or the `from`/`to` window of `query`).

    Raises `analytics.errors.StoreUnavailable` when the store cannot answer and `InvalidQuery` for a
    bad window; a campaign without events (or an unknown id) is a report of zeros."""
    return await store.campaign_report(workspace, campaign_id, query, now=now)


async def variant_metric(
    store: ReportReader, workspace: str, campaign_id: str, metric: str
) -> dict[str, float]:
    """Variant ("0", "1", ...) -> the value of `metric` (a counter such as `opened_unique` or a rate such as
    `click_rate`, schemas.campaign_report.METRICS) over the campaign's whole history. Variants without
    events are absent; a campaign without an A/B test gives {}."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    report = await campaign_report(store, workspace, campaign_id)
    return {row.variant: float(getattr(row, metric)) for row in report.variants}


# --- the queries (run by SqlAnalyticsStore on its thread) ---------------------------------------------
def timeline_width(first_ms: int, last_ms: int) -> tuple[int, int]:
    """(width, offset) in ms of the smallest bucket of LADDER (then whole weeks) that covers
    [first_ms, last_ms] in at most MAX_BUCKETS buckets; buckets start at offset + k * width."""
    for width in LADDER:
        offset = WEEK_OFFSET if width == WEEK else 0
        if _bucket_count(first_ms, last_ms, width, offset) <= MAX_BUCKETS:
            return width, offset
    weeks = -(-(last_ms - first_ms + WEEK) // (WEEK * MAX_BUCKETS))
    while _bucket_count(first_ms, last_ms, weeks * WEEK, WEEK_OFFSET) > MAX_BUCKETS:
        weeks += 1
    return weeks * WEEK, WEEK_OFFSET


def _bucket_start(ms: int, width: int, offset: int) -> int:
    return (ms - offset) // width * width + offset


def _bucket_count(first_ms: int, last_ms: int, width: int, offset: int) -> int:
    return (_bucket_start(last_ms, width, offset) - _bucket_start(first_ms, width, offset)) // width + 1


def _where(
    dialect: Dialect, bind: Bound, workspace: str, campaign_id: str, window: tuple[int | None, int | None]
) -> str:
    parts = [f"workspace = {bind(workspace)}", f"campaign_id = {bind(campaign_id)}"]
    if window[0] is not None:
        parts.append(f"created_at >= {dialect.time(bind, window[0])}")
    if window[1] is not None:
        parts.append(f"created_at < {dialect.time(bind, window[1])}")
    parts.append(dialect.one_of("type", REPORT_TYPES, bind))
    return " AND ".join(parts)


def span_query(
    dialect: Dialect, workspace: str, campaign_id: str, window: tuple[int | None, int | None]
) -> tuple[str, dict[str, Any]]:
    """First and last event time (epoch ms) and the event count; duplicates change none of the
    three's emptiness or bounds, so ClickHouse reads this without FINAL."""
    bind = Bound(dialect)
    where = _where(dialect, bind, workspace, campaign_id, window)
    ms = dialect.created_ms
    return f"SELECT min({ms}), max({ms}), count(*) FROM events WHERE {where}", bind.values


def report_query(
    dialect: Dialect,
    workspace: str,
    campaign_id: str,
    window: tuple[int | None, int | None],
    width: int,
    offset: int,
) -> tuple[str, dict[str, Any]]:
    """The scan (a `from`/`to` window). Rows: (grouping mask, *_DIMS values, *COUNTS, link_unique), one
    per group of every grouping set. A unique open (click) is the earliest non-machine open (click) of
    its (message, recipient) pair inside the window, by (created_at, id), counted in its own groups and
    bucket: the same definition as the aggregates (analytics/campaign_firsts.py) restricted to the window;
    `link_unique` is the same per (pair, url), what the links section reads."""
    bind = Bound(dialect)
    where = _where(dialect, bind, workspace, campaign_id, window)
    alias = {d: f"d{i}" for i, d in enumerate(_DIMS)}
    width_p, offset_p = bind(width, "Int64"), bind(offset, "Int64")
    shifted = f"{dialect.created_ms} - {offset_p}"
    columns = {d: d for d in _DIMS}
    columns["bucket"] = f"{dialect.int_div(shifted, width_p)} * {width_p} + {offset_p}"
    selected = [f"grouping({', '.join(alias.values())}) AS g"]
    selected += [f"{columns[d]} AS {alias[d]}" for d in _DIMS]
    person = "NOT machine_open AND pair_hash <> 0"
    for counter in COUNTS:
        event_type, unique = _COUNTED[counter]
        condition = f"type = {bind(event_type)}"
        if unique:
            selected.append(
                f"count(*) FILTER (WHERE {condition} AND {person} AND pair_rank = 1) AS {counter}"
            )
        else:
            selected.append(f"count(*) FILTER (WHERE {condition}) AS {counter}")
    clicked = bind("message.clicked")
    selected.append(f"count(*) FILTER (WHERE type = {clicked} AND {person} AND link_rank = 1) AS link_unique")
    sets = ", ".join("(" + ", ".join(alias[d] for d in dims) + ")" for dims in _SETS.values())
    ranked = (
        "SELECT *, row_number() OVER (PARTITION BY type, machine_open, pair_hash ORDER BY created_at, id) "
        "AS pair_rank, row_number() OVER (PARTITION BY type, machine_open, pair_hash, url "
        f"ORDER BY created_at, id) AS link_rank FROM events{dialect.final} WHERE {where}"
    )
    source = f"FROM ({ranked}) AS ranked"
    return f"SELECT {', '.join(selected)} {source} GROUP BY GROUPING SETS ({sets})", bind.values


# --- the whole history: the aggregates (ClickHouse migration 0009, DuckDB 0006) ------------------------
_SUMS = ", ".join(f"sum({c})" for c in COUNTS)
_GROUP_DIMS = ("recipient_domain", "provider", "server", "campaign_variant")


def _campaign(dialect: Dialect, bind: Bound, workspace: str, campaign_id: str) -> str:
    return f"workspace = {bind(workspace)} AND campaign_id = {bind(campaign_id)}"


def aggregate_span_query(dialect: Dialect, workspace: str, campaign_id: str) -> tuple[str, dict[str, Any]]:
    """First and last minute (epoch ms) of the campaign's counted events, and whether it has any: a
    bucket of the ladder is a whole number of minutes, so the minutes give the same buckets as the
    events' times."""
    bind = Bound(dialect)
    where = _campaign(dialect, bind, workspace, campaign_id)
    return f"SELECT min(minute), max(minute), count(*) FROM campaign_minutes WHERE {where}", bind.values


def aggregate_query(
    dialect: Dialect, workspace: str, campaign_id: str, width: int, offset: int
) -> tuple[str, dict[str, Any]]:
    """One query (a round trip costs more than these reads): the groups (GROUPING SETS over
    `campaign_groups`), the links and the timeline (the minutes re-bucketed), as a UNION ALL of rows
    (section 0/1/2, grouping mask, d0-d3, bucket, *COUNTS); sums of integers only. A link row holds
    its url in d0 and `clicks`, `clicked_unique` in the first two counters."""
    bind = Bound(dialect)
    where = _campaign(dialect, bind, workspace, campaign_id)
    alias = {d: f"d{i}" for i, d in enumerate(_GROUP_DIMS)}
    sets = ", ".join(
        "(" + ", ".join(alias[d] for d in dims) + ")" for dims in ((), *(_SETS[s] for s in _GROUPED))
    )
    selected = ", ".join(f"{d} AS {alias[d]}" for d in _GROUP_DIMS)
    groups = (
        f"SELECT 0 AS s, grouping({', '.join(alias.values())}) AS g, {selected}, 0 AS bucket, {_SUMS} "
        f"FROM campaign_groups WHERE {where} GROUP BY GROUPING SETS ({sets})"
    )
    zeros = ", ".join(["0"] * (len(COUNTS) - 2))
    links = (
        f"SELECT 1, 0, url, '', '', '', 0, sum(clicks), sum(clicked_unique), {zeros} FROM campaign_links "
        f"WHERE {where} GROUP BY url"
    )
    width_p, offset_p = bind(width, "Int64"), bind(offset, "Int64")
    bucket = f"{dialect.int_div(f'minute - {offset_p}', width_p)} * {width_p} + {offset_p}"
    timeline = (
        f"SELECT 2, 0, '', '', '', '', {bucket} AS b, {_SUMS} FROM campaign_minutes WHERE {where} GROUP BY b"
    )
    return f"{groups} UNION ALL {links} UNION ALL {timeline}", bind.values


_GROUPED = ("domains", "providers", "variants")


def _mask(dims: tuple[str, ...]) -> int:
    return sum(1 << (len(_DIMS) - 1 - i) for i, d in enumerate(_DIMS) if d not in dims)


_SECTION_BY_MASK = {_mask(dims): section for section, dims in _SETS.items()}


def counters(values: Sequence[Any]) -> dict[str, Any]:
    """Counts in COUNTS order -> the counters and their rates (0 when the denominator is 0)."""
    found: dict[str, Any] = {name: int(value) for name, value in zip(COUNTS, values, strict=True)}
    for rate, (part, whole) in RATES.items():
        found[rate] = found[part] / found[whole] if found[whole] else 0.0
    return found


Section = list[tuple[dict[str, Any], dict[str, Any]]]


async def build_report(
    run: RunQuery, dialect: Dialect, workspace: str, campaign_id: str, window: tuple[int | None, int | None]
) -> CampaignReport:
    """The whole history from the aggregates; a `from`/`to` window by scanning its events."""
    if window == (None, None):
        return await aggregate_report(run, dialect, workspace, campaign_id)
    return await scan_report(run, dialect, workspace, campaign_id, window)


def _empty(campaign_id: str, window: tuple[int | None, int | None]) -> CampaignReport:
    return CampaignReport(
        campaign_id=campaign_id,
        from_=from_epoch_ms(window[0]) if window[0] is not None else None,
        to=from_epoch_ms(window[1]) if window[1] is not None else None,
        totals=Counters(),
        links=[],
        domains=[],
        providers=[],
        variants=[],
        timeline=[],
    )


async def scan_report(
    run: RunQuery, dialect: Dialect, workspace: str, campaign_id: str, window: tuple[int | None, int | None]
) -> CampaignReport:
    """The report computed from the campaign's events (what a window costs: a scan)."""
    report = _empty(campaign_id, window)
    first_ms, last_ms, events = (await run(*span_query(dialect, workspace, campaign_id, window)))[0]
    if not events:
        return report
    width, offset = timeline_width(int(first_ms), int(last_ms))
    rows = await run(*report_query(dialect, workspace, campaign_id, window, width, offset))
    sections: dict[str, Section] = {s: [] for s in _SETS}
    links = []
    for row in rows:
        section = _SECTION_BY_MASK[int(row[0])]
        keys = {d: row[1 + i] for i, d in enumerate(_DIMS) if d in _SETS[section]}
        values = row[1 + len(_DIMS) : 1 + len(_DIMS) + len(COUNTS)]
        if section == "links":
            if keys["url"]:
                links.append((keys["url"], int(values[COUNTS.index("clicked")]), int(row[-1])))
        else:
            sections[section].append((keys, counters(values)))
    _assemble(report, sections, links, int(first_ms), int(last_ms), width, offset)
    return report


async def aggregate_report(
    run: RunQuery, dialect: Dialect, workspace: str, campaign_id: str
) -> CampaignReport:
    """The report over the whole history from the aggregates: two small queries of sums."""
    report = _empty(campaign_id, (None, None))
    first_ms, last_ms, minutes = (await run(*aggregate_span_query(dialect, workspace, campaign_id)))[0]
    if not minutes:
        return report
    width, offset = timeline_width(int(first_ms), int(last_ms))
    sections: dict[str, Section] = {s: [] for s in _SETS}
    links = []
    group_masks = {
        sum(1 << (len(_GROUP_DIMS) - 1 - i) for i, d in enumerate(_GROUP_DIMS) if d not in _SETS[s]): s
        for s in ("totals", *_GROUPED)
    }
    for row in await run(*aggregate_query(dialect, workspace, campaign_id, width, offset)):
        section, dims, values = int(row[0]), row[2:6], row[7:]
        if section == 0:
            name = group_masks[int(row[1])]
            keys = {d: dims[i] for i, d in enumerate(_GROUP_DIMS) if d in _SETS[name]}
            found = counters(values)
            # Rows whose counts an erasure moved away sum to zero until merged: no events, no group.
            if name == "totals" or any(found[c] for c in COUNTS):
                sections[name].append((keys, found))
        elif section == 1:
            if dims[0] and (values[0] or values[1]):
                links.append((dims[0], int(values[0]), int(values[1])))
        else:
            sections["timeline"].append(({"bucket": row[6]}, counters(values)))
    _assemble(report, sections, links, int(first_ms), int(last_ms), width, offset)
    return report


def _assemble(
    report: CampaignReport,
    sections: dict[str, Section],
    links: list[tuple[str, int, int]],
    first_ms: int,
    last_ms: int,
    width: int,
    offset: int,
) -> None:
    for _, found in sections["totals"]:
        report.totals = Counters(**found)
    domains = sorted(sections["domains"], key=lambda kc: (-kc[1]["sent"], kc[0]["recipient_domain"]))
    report.domains = [
        DomainStats(domain=k["recipient_domain"] or None, **c) for k, c in domains[:MAX_DOMAINS]
    ]
    report.domains_truncated = len(domains) > MAX_DOMAINS
    providers = sorted(
        sections["providers"], key=lambda kc: (-kc[1]["sent"], kc[0]["provider"], kc[0]["server"])
    )
    report.providers = [
        ProviderStats(provider=k["provider"] or None, server=k["server"] or None, **c) for k, c in providers
    ]
    report.variants = sorted(
        (
            VariantStats(variant=k["campaign_variant"], **c)
            for k, c in sections["variants"]
            if k["campaign_variant"]
        ),
        key=lambda v: (len(v.variant), v.variant),
    )
    stats = [LinkStats(url=url, clicks=clicks, clicked_unique=unique) for url, clicks, unique in links]
    report.links = sorted(stats, key=lambda link: (-link.clicks, link.url))
    report.timeline_bucket_seconds = width // 1000
    by_start = {int(k["bucket"]): c for k, c in sections["timeline"]}
    start, last = _bucket_start(first_ms, width, offset), _bucket_start(last_ms, width, offset)
    empty = counters([0] * len(COUNTS))
    report.timeline = [
        TimelineBucket(start=from_epoch_ms(s), **by_start.get(s, empty))
        for s in range(start, last + 1, width)
    ]
