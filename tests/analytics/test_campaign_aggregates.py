"""The campaign report's write-time aggregates (analytics/campaign_firsts.py, ClickHouse migration 0009,
DuckDB 0006): the whole-history report reads sums only, and they agree with a scan of the events on
both backends, whatever the order, the batches and the replays; a late earlier open moves the unique
count in the timeline; a batch replayed after a crash between the firsts and the events decides the
same; events stored before the migration report the same after it; erasure leaves no person's domain
in the aggregates."""

from __future__ import annotations

import random
from datetime import timedelta

import duckdb
import msgspec
import pytest

from analytics.campaign_firsts import FIRSTS_COLUMNS, flag_batch
from analytics.campaign_report import aggregate_report, campaign_report, scan_report
from analytics.rows import AGGREGATE_COLUMNS, event_columns
from analytics.store import open_store
from schemas.campaign_report import COUNTS
from tests.analytics.conftest import store_url
from tests.analytics.events_factory import NOW, at
from tests.analytics.test_campaign_report import (
    CAMPAIGN,
    M1,
    M4,
    TOTALS,
    campaign_events,
    counts,
    ev,
    expect,
    random_campaign,
)


async def _reports(store, workspace: str, campaign: str):
    """(from the aggregates, from a scan of the whole history) of one campaign."""
    run, dialect = store._run_query, store.dialect
    return (
        await aggregate_report(run, dialect, workspace, campaign),
        await scan_report(run, dialect, workspace, campaign, (None, None)),
    )


NEW_COLUMNS = AGGREGATE_COLUMNS  # what the aggregates' migration added to `events`


def _same(a, b) -> None:
    assert msgspec.to_builtins(a) == msgspec.to_builtins(b)


async def _rows(store, sql: str) -> list[tuple]:
    return await store._run_query(sql, {})


async def test_the_whole_report_reads_the_aggregates_not_the_events(store):
    await store.insert(campaign_events())
    # Emptying `events` leaves the whole-history report as it was: it never reads them. A window scans.
    if store.backend == "duckdb":
        await store._run_query("DELETE FROM events", {})
    else:
        await store._run(store._client.command, "TRUNCATE TABLE events")
    report = await campaign_report(store, "acme", CAMPAIGN)
    assert counts(report.totals) == TOTALS
    assert [(link.url, link.clicks, link.clicked_unique) for link in report.links] == [
        ("https://acme.com/a", 3, 2),
        ("https://acme.com/b?x=1", 2, 1),
    ]
    from analytics.queries import CampaignReportQuery

    window = CampaignReportQuery(from_=at("09:00"), to=at("14:00"))
    windowed = await campaign_report(store, "acme", CAMPAIGN, window, now=NOW)
    assert counts(windowed.totals) == expect()


async def test_aggregates_agree_with_a_scan_whatever_the_batches_and_replays(store):
    rng = random.Random(5)
    found = random_campaign(rng, messages=400)
    shuffled = found[:]
    rng.shuffle(shuffled)
    replayed = rng.sample(found, len(found) // 3)
    # batches in random order, with replays inside a batch, across batches and whole batches again
    for batch in (shuffled[:500], shuffled[500:1500] + replayed[:300], shuffled[1500:], replayed[300:]):
        await store.insert(batch)
    await store.insert(shuffled[500:1500])
    for campaign in ("cmp_r", "cmp_other"):
        aggregated, scanned = await _reports(store, "acme", campaign)
        _same(aggregated, scanned)
    aggregated, _ = await _reports(store, "acme", "cmp_r")
    assert aggregated.totals.opened > aggregated.totals.opened_unique > 0
    assert sum(b.opened_unique for b in aggregated.timeline) == aggregated.totals.opened_unique
    assert sum(b.clicked_unique for b in aggregated.timeline) == aggregated.totals.clicked_unique
    # the hand-made counts: a pair's earliest non-machine open is in the bucket of its time
    person = [
        e
        for e in found
        if e.type == "message.opened" and e.message.campaign_id == "cmp_r" and not e.data["machine_open"]
    ]
    earliest: dict[str, tuple] = {}
    for e in person:
        earliest[e.message.id] = min(earliest.get(e.message.id, (e.created_at, e.id)), (e.created_at, e.id))
    width = timedelta(seconds=aggregated.timeline_bucket_seconds)
    by_bucket: dict = {}
    for moment, _ in earliest.values():
        start = aggregated.timeline[0].start + (moment - aggregated.timeline[0].start) // width * width
        by_bucket[start] = by_bucket.get(start, 0) + 1
    assert {b.start: b.opened_unique for b in aggregated.timeline if b.opened_unique} == by_bucket


async def test_a_late_earlier_open_moves_the_unique_count_to_its_bucket(store):
    later = [
        ev("message.sent", "10:00", M1),
        ev("message.delivered", "10:01", M1),
        ev("message.opened", "11:40", M1, machine=False),
        ev("message.clicked", "11:41", M1, machine=False, url="https://acme.com/a"),
        ev("message.opened", "11:00", M4, machine=False),
    ]
    late = [
        ev("message.opened", "10:20", M1, machine=False),  # earlier than the stored first, arrives later
        ev("message.opened", "10:15", M1, machine=True),  # a machine's: never a first
        ev("message.clicked", "10:22", M1, machine=False, url="https://acme.com/a"),
        ev("message.opened", "11:50", M4, machine=False),  # later than the stored first: not one
    ]
    await store.insert(later)
    await store.insert(late)
    aggregated, scanned = await _reports(store, "acme", CAMPAIGN)
    _same(aggregated, scanned)
    assert aggregated.timeline_bucket_seconds == 300
    busy = {
        b.start.strftime("%H:%M"): (b.opened_unique, b.clicked_unique)
        for b in aggregated.timeline
        if b.opened_unique or b.clicked_unique
    }
    assert busy == {"10:20": (1, 1), "11:00": (1, 0)}
    assert (aggregated.totals.opened, aggregated.totals.opened_unique) == (5, 2)
    assert (aggregated.totals.clicked, aggregated.totals.clicked_unique) == (2, 1)
    assert [(link.clicks, link.clicked_unique) for link in aggregated.links] == [(2, 1)]
    assert [(d.domain, d.opened_unique, d.clicked_unique) for d in aggregated.domains] == [
        ("example.com", 1, 1),
        ("gmail.com", 1, 0),
    ]


async def test_a_batch_replayed_after_a_crash_between_the_firsts_and_the_events_decides_the_same(
    tmp_path, chdb_path
):
    """ClickHouse has no transaction: the sink may die after the `campaign_firsts` rows of a batch went in
    and before its events did. The redelivered batch must flag the same events."""
    early = [ev("message.opened", "10:30", M1, machine=False)]
    batch = [
        ev("message.opened", "10:10", M1, machine=False),  # displaces the 10:30 open
        ev("message.clicked", "10:11", M1, machine=False, url="https://acme.com/a"),
        ev("message.opened", "10:40", M4, machine=False),
    ]
    reports = []
    for crash in (False, True):
        url = store_url("chdb", tmp_path, chdb_path)
        store = open_store(url)
        await store.migrate()
        await store.insert(early)
        if crash:
            # What the store's insert does before the events' insert, then nothing (the crash).
            client = store._client  # type: ignore[attr-defined]
            columns = event_columns(batch)
            new = flag_batch(columns, range(len(columns["id"])), store._lookup_firsts)
            assert new is not None and len(new["event_id"]) == 4  # open, click, (click, url), open
            client.insert(
                "campaign_firsts",
                [new[c] for c in FIRSTS_COLUMNS],
                column_names=list(FIRSTS_COLUMNS),
                column_oriented=True,
            )
        await store.insert(batch)  # the redelivery (or the first delivery)
        await store.insert(batch[:2])  # and a plain replay afterwards
        reports.append(await _reports(store, "acme", CAMPAIGN))
        await store.close()
    (clean, clean_scan), (crashed, crashed_scan) = reports
    _same(clean, clean_scan)
    _same(crashed, clean)
    _same(crashed_scan, clean_scan)
    busy = {b.start.strftime("%H:%M"): b.opened_unique for b in crashed.timeline if b.opened_unique}
    assert busy == {"10:10": 1, "10:40": 1}


@pytest.mark.parametrize("backend", ["duckdb", "chdb"])
async def test_events_stored_before_the_migration_report_the_same_after_it(backend, tmp_path, chdb_path):
    """A database at the migration before the aggregates, with events in it (through the store of that
    time: same columns, no flags): after migrating, the whole report (from the aggregates) equals the scan
    and the hand-checked totals; events inserted afterwards add to the backfilled counts."""
    version = 6 if backend == "duckdb" else 9  # the aggregates' migration (DuckDB 0006, ClickHouse 0009)
    url = store_url(backend, tmp_path, chdb_path)
    found = campaign_events()
    columns = event_columns(found)
    old_columns = {c: v for c, v in columns.items() if c not in NEW_COLUMNS}
    if backend == "duckdb":
        import pyarrow as pa

        from analytics.duckdb_backend import ARROW_SCHEMA

        older = open_store(url)
        await older.migrate(before=version)
        await older.close()
        with duckdb.connect(url.removeprefix("duckdb://")) as db:
            schema = pa.schema([ARROW_SCHEMA.field(name) for name in old_columns])
            db.register("old_rows", pa.Table.from_pydict(old_columns, schema=schema))
            db.execute(f"INSERT INTO events ({', '.join(old_columns)}) SELECT * FROM old_rows")
        store = open_store(url)
    else:
        store = open_store(url)
        await store.migrate(before=version)
        client = store._client  # type: ignore[attr-defined]  # to fill the pre-aggregates database
        client.insert(
            "events", list(old_columns.values()), column_names=list(old_columns), column_oriented=True
        )
        client.insert(
            "events", list(old_columns.values()), column_names=list(old_columns), column_oriented=True
        )
    try:
        assert version in await store.migrate()
        aggregated, scanned = await _reports(store, "acme", CAMPAIGN)
        assert counts(aggregated.totals) == TOTALS
        _same(aggregated, scanned)
        # new events after the migration: a later open of a pair already counted, a new person's open
        more = [
            ev("message.opened", "13:30", M1, machine=False),
            ev("message.opened", "09:00", M4, machine=False),  # earlier than M4's backfilled first
        ]
        await store.insert(more)
        aggregated, scanned = await _reports(store, "acme", CAMPAIGN)
        _same(aggregated, scanned)
        assert aggregated.totals.opened == TOTALS["opened"] + 2
        assert aggregated.totals.opened_unique == TOTALS["opened_unique"]
    finally:
        await store.close()


async def test_erasure_leaves_no_domain_of_the_person_in_the_aggregates(store):
    found = campaign_events()
    own = ev("message.sent", "10:00", dict(M1, message_id="msg_own", to="zoe@zoe-family.name"))
    opened = ev(
        "message.opened", "10:20", dict(M1, message_id="msg_own", to="zoe@zoe-family.name"), machine=False
    )
    await store.insert([*found, own, opened])
    before, _ = await _reports(store, "acme", CAMPAIGN)
    assert "zoe-family.name" in [d.domain for d in before.domains]
    await store.erase_subscriber("acme", "zoe@zoe-family.name", "sub_zoe")
    aggregated, scanned = await _reports(store, "acme", CAMPAIGN)
    _same(aggregated, scanned)
    assert "zoe-family.name" not in [d.domain for d in aggregated.domains]
    erased = next(d for d in aggregated.domains if d.domain is None)
    assert (erased.sent, erased.opened, erased.opened_unique) == (1, 1, 1)
    assert counts(aggregated.totals) == {**TOTALS, "sent": 6, "opened": 7, "opened_unique": 4}
    # nothing in any aggregate table names the domain any more (merged or not)
    for table in ("campaign_groups", "campaign_minutes", "campaign_links", "campaign_firsts"):
        text = await _rows(store, f"SELECT * FROM {table}")
        assert "zoe" not in repr(text), table
    assert all(name in COUNTS for name in ("opened_unique", "clicked_unique"))
