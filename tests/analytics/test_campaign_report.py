"""The campaign report: exact numbers for a hand-built campaign on both backends, parity on a random one
with duplicates and late arrivals, old rows read through migration 0005, and an empty campaign."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import duckdb
import msgspec
import pytest

from analytics.campaign_report import (
    DAY,
    HOUR,
    MINUTE,
    WEEK,
    campaign_report,
    timeline_width,
    variant_metric,
)
from analytics.rows import epoch_ms
from analytics.store import open_store
from schemas.campaign_report import COUNTS, RATES
from schemas.events import Event
from tests.analytics.conftest import store_url
from tests.analytics.events_factory import NOW, at, event

CAMPAIGN = "cmp_1"
LINK_A, LINK_B = "https://acme.com/a", "https://acme.com/b?x=1"


def msg(message_id, to, provider, server, variant):
    return dict(
        message_id=message_id, to=to, provider=provider, server=server, campaign_id=CAMPAIGN, variant=variant
    )


M1 = msg("msg_1", "ana@example.com", "smtp", "srv_1", "0")
M2 = msg("msg_2", "bob@example.com", "smtp", "srv_1", "1")
M3 = msg("msg_3", "cy@gmail.com", "amazon-ses", "srv_2", "0")
M4 = msg("msg_4", "dee@gmail.com", "amazon-ses", "srv_2", "1")
M5 = msg("msg_5", "eve@gmail.com", None, None, "0")  # suppressed before any server took it
M6 = msg("msg_6", "fay@example.com", None, None, "1")  # failed without a candidate
M7 = msg("msg_7", "gus@Gmail.com", "smtp", "srv_1", None)  # no A/B variant


def ev(type_: str, hhmm: str, spec: dict, *, machine: bool | None = None, url: str | None = None, **kw):
    spec = dict(spec)
    variant = spec.pop("variant")
    data: dict = {}
    if machine is not None:
        data.update(user_agent="Mozilla/5.0", ip="17.58.1.2" if machine else "10.0.0.1", machine_open=machine)
    if url is not None:
        data["url"] = url
    found = event(type_, at(hhmm), **spec, **data, **kw)
    if variant is not None:
        found.message.metadata = {"user": "42", "campaign_variant": variant}
    return found


def campaign_events() -> list[Event]:
    return [
        ev("message.accepted", "09:59", M1),  # not a counted type
        ev("message.sent", "10:00", M1),
        ev("message.delivered", "10:01", M1),
        ev("message.opened", "10:05", M1, machine=False),
        ev("message.opened", "10:06", M1, machine=False),  # a second open by the same person
        ev("message.opened", "11:00", M1, machine=True),
        ev("message.clicked", "10:07", M1, machine=False, url=LINK_A),
        ev("message.clicked", "10:08", M1, machine=False, url=LINK_A),
        ev("message.clicked", "10:09", M1, machine=True, url=LINK_B),  # a scanner: no unique click on B
        ev("subscriber.unsubscribed", "10:10", M1),
        ev("message.sent", "10:00", M2),
        ev("message.delivered", "10:01", M2),
        ev("message.opened", "10:02", M2, machine=True),  # only Apple's proxy opened it
        ev("message.complained", "12:00", M2),
        ev("message.sent", "10:00", M3),
        ev("message.bounced", "10:01", M3, bounce={"type": "hard", "code": "550"}),
        ev("message.deferred", "10:00", M3),  # not a counted type
        ev("message.sent", "10:00", M4),
        ev("message.delivered", "10:02", M4),
        ev("message.opened", "10:30", M4, machine=False),
        ev("message.clicked", "10:31", M4, machine=False, url=LINK_B),
        ev("message.clicked", "10:32", M4, machine=False, url=LINK_A),
        ev("message.suppressed", "10:00", M5),
        ev("message.failed", "10:00", M6),
        ev("message.sent", "10:00", M7),
        ev("message.delivered", "10:01", M7),
        ev("message.opened", "13:00", M7, machine=False),
        # other campaigns and workspaces, and a message outside any campaign
        ev("message.sent", "10:00", dict(M1, campaign_id="cmp_2", variant=None)),
        ev("message.opened", "10:05", dict(M1, campaign_id="cmp_2", variant=None), machine=False),
        ev("message.sent", "10:00", M1, workspace="beta"),
        ev("message.sent", "10:00", dict(M1, campaign_id=None, variant=None)),
    ]


def counts(row) -> dict[str, int]:
    return {name: getattr(row, name) for name in COUNTS}


def expect(**given: int) -> dict[str, int]:
    return {name: given.get(name, 0) for name in COUNTS}


TOTALS = expect(
    sent=5,
    delivered=4,
    bounced=1,
    complained=1,
    opened=6,
    opened_unique=3,
    clicked=5,
    clicked_unique=2,
    unsubscribed=1,
    failed=1,
    suppressed=1,
)


@pytest.fixture
async def loaded(store):
    found = campaign_events()
    await store.insert(found)
    await store.insert(found[3:9])  # the sink delivers at least once: a replayed batch
    return store


async def test_totals_and_rates_are_exact(loaded):
    report = await campaign_report(loaded, "acme", CAMPAIGN)
    assert report.campaign_id == CAMPAIGN and report.from_ is None and report.to is None
    assert counts(report.totals) == TOTALS
    totals = report.totals
    assert (totals.delivery_rate, totals.bounce_rate, totals.complaint_rate) == (4 / 5, 1 / 5, 1 / 4)
    assert (totals.open_rate, totals.click_rate, totals.unsubscribe_rate) == (3 / 4, 2 / 4, 1 / 4)
    assert totals.click_to_open_rate == 2 / 3


async def test_links_domains_providers_and_variants_are_exact(loaded):
    report = await campaign_report(loaded, "acme", CAMPAIGN)
    assert [(link.url, link.clicks, link.clicked_unique) for link in report.links] == [
        (LINK_A, 3, 2),
        (LINK_B, 2, 1),
    ]
    assert [(d.domain, counts(d)) for d in report.domains] == [
        (
            "gmail.com",
            expect(
                sent=3,
                delivered=2,
                bounced=1,
                opened=2,
                opened_unique=2,
                clicked=2,
                clicked_unique=1,
                suppressed=1,
            ),
        ),
        (
            "example.com",
            expect(
                sent=2,
                delivered=2,
                complained=1,
                opened=4,
                opened_unique=1,
                clicked=3,
                clicked_unique=1,
                unsubscribed=1,
                failed=1,
            ),
        ),
    ]
    assert not report.domains_truncated
    assert [(p.provider, p.server, counts(p)) for p in report.providers] == [
        (
            "smtp",
            "srv_1",
            expect(
                sent=3,
                delivered=3,
                complained=1,
                opened=5,
                opened_unique=2,
                clicked=3,
                clicked_unique=1,
                unsubscribed=1,
            ),
        ),
        (
            "amazon-ses",
            "srv_2",
            expect(sent=2, delivered=1, bounced=1, opened=1, opened_unique=1, clicked=2, clicked_unique=1),
        ),
        (None, None, expect(failed=1, suppressed=1)),
    ]
    assert [(v.variant, counts(v)) for v in report.variants] == [
        (
            "0",
            expect(
                sent=2,
                delivered=1,
                bounced=1,
                opened=3,
                opened_unique=1,
                clicked=3,
                clicked_unique=1,
                unsubscribed=1,
                suppressed=1,
            ),
        ),
        (
            "1",
            expect(
                sent=2,
                delivered=2,
                complained=1,
                opened=2,
                opened_unique=1,
                clicked=2,
                clicked_unique=1,
                failed=1,
            ),
        ),
    ]
    assert [(v.variant, v.open_rate, v.bounce_rate) for v in report.variants] == [
        ("0", 1.0, 0.5),
        ("1", 0.5, 0.0),
    ]


async def test_the_timeline_has_every_bucket_of_the_span(loaded):
    report = await campaign_report(loaded, "acme", CAMPAIGN)
    # 10:00 to 13:00 is 181 one-minute buckets, too many; 37 five-minute buckets
    assert report.timeline_bucket_seconds == 300
    assert [b.start for b in report.timeline] == [at("10:00") + timedelta(minutes=5 * i) for i in range(37)]
    busy = {b.start.strftime("%H:%M"): counts(b) for b in report.timeline if any(counts(b).values())}
    assert busy == {
        "10:00": expect(sent=5, delivered=4, bounced=1, opened=1, failed=1, suppressed=1),
        "10:05": expect(opened=2, opened_unique=1, clicked=3, clicked_unique=1),
        "10:10": expect(unsubscribed=1),
        "10:30": expect(opened=1, opened_unique=1, clicked=2, clicked_unique=1),
        "11:00": expect(opened=1),
        "12:00": expect(complained=1),
        "13:00": expect(opened=1, opened_unique=1),
    }
    first = report.timeline[0]
    assert first.delivery_rate == 4 / 5 and first.open_rate == 0.0  # rates per bucket, zero-guarded


async def test_a_window_counts_only_its_events(loaded):
    from analytics.queries import CampaignReportQuery

    window = CampaignReportQuery(from_=at("10:05"), to=at("11:00"))
    report = await campaign_report(loaded, "acme", CAMPAIGN, window, now=NOW)
    assert counts(report.totals) == expect(
        opened=3, opened_unique=2, clicked=5, clicked_unique=2, unsubscribed=1
    )
    assert report.from_ == at("10:05") and report.to == at("11:00")
    assert report.timeline[0].start == at("10:05") and report.timeline[-1].start == at("10:32")


async def test_variant_metric_picks_from_the_variants(loaded):
    assert await variant_metric(loaded, "acme", CAMPAIGN, "open_rate") == {"0": 1.0, "1": 0.5}
    assert await variant_metric(loaded, "acme", CAMPAIGN, "clicked") == {"0": 3.0, "1": 2.0}
    assert await variant_metric(loaded, "acme", "cmp_2", "opened_unique") == {}  # no A/B test
    with pytest.raises(ValueError, match="unknown metric"):
        await variant_metric(loaded, "acme", CAMPAIGN, "opened_unique; DROP TABLE events")


async def test_a_campaign_without_events_is_all_zeros(store):
    await store.insert(campaign_events())
    for workspace, campaign in (("acme", "cmp_none"), ("gamma", CAMPAIGN), ("acme", "x' OR '1'='1")):
        report = await campaign_report(store, workspace, campaign)
        assert counts(report.totals) == expect()
        assert all(getattr(report.totals, rate) == 0.0 for rate in RATES)
        assert (report.links, report.domains, report.providers, report.variants, report.timeline) == (
            [],
            [],
            [],
            [],
            [],
        )
        assert report.timeline_bucket_seconds is None


async def test_identical_on_duckdb_and_chdb_with_duplicates_and_late_arrivals(both):
    duck, ch = both
    rng = random.Random(11)
    found = random_campaign(rng, messages=300)
    await duck.insert(sorted(found, key=lambda e: e.created_at))
    shuffled = found[:]
    rng.shuffle(shuffled)
    replayed = rng.sample(found, len(found) // 4)
    for batch in (shuffled[:700], shuffled[700:] + replayed[:200], replayed[200:]):
        await ch.insert(batch)
    for campaign in ("cmp_r", "cmp_other", "cmp_none"):
        a, b = await campaign_report(duck, "acme", campaign), await campaign_report(ch, "acme", campaign)
        assert msgspec.to_builtins(a) == msgspec.to_builtins(b), campaign
    report = await campaign_report(duck, "acme", "cmp_r")
    assert report.totals.opened > report.totals.opened_unique > 0
    assert len(report.variants) == 2 and len(report.domains) == 3 and len(report.links) == 3
    assert len(report.providers) == 3 and len(report.timeline) > 20
    # the hand-made count agrees with the store's: distinct pairs with a person's open
    unique = {
        (e.message.id, e.message.to)
        for e in found
        if e.type == "message.opened" and e.message.campaign_id == "cmp_r" and not e.data["machine_open"]
    }
    assert report.totals.opened_unique == len(unique)
    # The whole report comes from the write-time aggregates, fed in a different order on each backend
    # (sorted vs shuffled batches with replays); a scan of the events gives the same on both.
    from analytics.campaign_report import scan_report

    for store in (duck, ch):
        scanned = await scan_report(store._run_query, store.dialect, "acme", "cmp_r", (None, None))
        assert msgspec.to_builtins(scanned) == msgspec.to_builtins(report)


def random_campaign(rng: random.Random, *, messages: int) -> list[Event]:
    found = []
    start = NOW - timedelta(days=3)
    types = ["message.sent", "message.delivered", "message.opened", "message.clicked", "message.bounced"]
    types += ["message.complained", "subscriber.unsubscribed", "message.failed", "message.suppressed"]
    for n in range(messages * 6):
        m = rng.randrange(messages)
        type_ = rng.choices(types, [3, 3, 6, 3, 1, 1, 1, 1, 1])[0]
        data: dict = {}
        if type_ in ("message.opened", "message.clicked"):
            data["machine_open"] = rng.random() < 0.3
        if type_ == "message.clicked":
            data["url"] = rng.choice(["https://a.com/1", "https://a.com/2", "https://b.com/"])
        provider = [("smtp", "srv_1"), ("amazon-ses", "srv_2"), (None, None)][m % 3]
        found.append(
            event(
                type_,
                start + timedelta(seconds=rng.randrange(3 * 86400)),
                message_id=f"msg_{m:05d}",
                to=f"u{m}@{['example.com', 'gmail.com', 'Yahoo.com'][m // 3 % 3]}",
                provider=provider[0],
                server=provider[1],
                campaign_id="cmp_r" if m % 7 else "cmp_other",
                event_id=f"evt_{n:026d}",
                **data,
            )
        )
        if m % 4:
            found[-1].message.metadata = {"campaign_variant": str(m % 2)}
    return found


def test_the_timeline_width_adapts_to_the_span():
    t0 = epoch_ms(datetime(2026, 4, 1, 9, 30, tzinfo=UTC))  # a Wednesday
    assert timeline_width(t0, t0) == (MINUTE, 0)
    assert timeline_width(t0, t0 + 99 * MINUTE) == (MINUTE, 0)
    assert timeline_width(t0, t0 + 3 * HOUR) == (5 * MINUTE, 0)
    assert timeline_width(t0, t0 + 2 * DAY) == (HOUR, 0)
    assert timeline_width(t0, t0 + 10 * DAY) == (6 * HOUR, 0)
    assert timeline_width(t0, t0 + 60 * DAY) == (DAY, 0)
    width, offset = timeline_width(t0, t0 + 200 * DAY)
    assert width == WEEK and datetime.fromtimestamp(offset / 1000, UTC).strftime("%A") == "Monday"
    width, offset = timeline_width(t0, t0 + 5 * 365 * DAY)  # several weeks per bucket, still Mondays
    assert width % WEEK == 0 and width > WEEK and (t0 + 5 * 365 * DAY - t0) // width < 100


async def test_rows_written_before_migration_0005_are_read_with_their_variant_and_machine_flag(
    tmp_path, chdb_path
):
    """A database at migration 0004 with events in it: after migrating, the report still finds their
    variants and machine opens (ClickHouse computes the new columns from the JSON, DuckDB backfills)."""
    found = campaign_events()
    expected = None
    for backend in ("duckdb", "chdb"):
        url = store_url(backend, tmp_path, chdb_path)
        if backend == "duckdb":
            older = open_store(url)
            await older.migrate(before=5)
            await older.close()
            with duckdb.connect(url.removeprefix("duckdb://")) as db:
                insert_old_rows_duckdb(db, found)
            store = open_store(url)
        else:
            store = open_store(url)
            await store.migrate(before=5)
            client = store._client  # type: ignore[attr-defined]  # to fill the pre-0005 database
            insert_old_rows_clickhouse(client, found)
        await store.migrate()
        report = await campaign_report(store, "acme", CAMPAIGN)
        await store.close()
        assert counts(report.totals) == TOTALS, backend
        assert [v.variant for v in report.variants] == ["0", "1"]
        if expected is None:
            expected = msgspec.to_builtins(report)
        assert msgspec.to_builtins(report) == expected


def _old_columns(found: list[Event]) -> dict[str, list]:
    from analytics.rows import COLUMNS, event_columns

    columns = event_columns(found)
    return {name: columns[name] for name in COLUMNS[: COLUMNS.index("pair_hash") + 1]}


def insert_old_rows_duckdb(db, found: list[Event]) -> None:
    import pyarrow as pa

    from analytics.duckdb_backend import ARROW_SCHEMA

    columns = _old_columns(found)
    schema = pa.schema([ARROW_SCHEMA.field(name) for name in columns])
    db.register("old_rows", pa.Table.from_pydict(columns, schema=schema))
    db.execute("INSERT INTO events SELECT * FROM old_rows")


def insert_old_rows_clickhouse(client, found: list[Event]) -> None:
    columns = _old_columns(found)
    client.insert("events", list(columns.values()), column_names=list(columns), column_oriented=True)


async def test_the_report_crosses_ray_from_the_event_sink_in_duckdb_mode(
    ray_session, redis, redis_url, tmp_path
):
    """In DuckDB mode the routes' store is the EventSink's client: the report and the A/B metric come
    back through Ray as the same structs."""
    import asyncio

    import ray

    from actors.event_sink.client import EventSinkClient, start_event_sink
    from schemas.settings import load_settings
    from store import keyspace

    settings = load_settings({}, data_dir=str(tmp_path), redis_url=redis_url, ray_namespace="mailers-test")
    handle = start_event_sink(settings, redis_url=redis_url, name="event-sink-report", max_latency=0.05)
    try:
        client = EventSinkClient(handle)
        assert await handle.ready.remote()
        encode = msgspec.msgpack.Encoder().encode
        await redis.xadd(keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: encode(campaign_events())})
        async with asyncio.timeout(60):
            while (await campaign_report(client, "acme", CAMPAIGN)).totals.sent < 5:
                await asyncio.sleep(0.1)
        report = await campaign_report(client, "acme", CAMPAIGN)
        assert counts(report.totals) == TOTALS and report.timeline_bucket_seconds == 300
        assert [(v.variant, v.opened_unique) for v in report.variants] == [("0", 1), ("1", 1)]
        assert await variant_metric(client, "acme", CAMPAIGN, "open_rate") == {"0": 1.0, "1": 0.5}
    finally:
        await handle.shutdown.remote()
        ray.kill(handle)


async def test_domains_stop_at_a_hundred_most_sent_and_say_so(store):
    from analytics.campaign_report import MAX_DOMAINS

    sends = [
        ev("message.sent", "10:00", msg(f"msg_{d}_{n}", f"u{n}@d{d:03d}.com", "smtp", "srv_1", None))
        for d in range(MAX_DOMAINS + 1)
        for n in range(1 + (d == 7))
    ]
    await store.insert(sends)
    report = await campaign_report(store, "acme", CAMPAIGN)
    assert report.totals.sent == MAX_DOMAINS + 2 and report.domains_truncated
    assert len(report.domains) == MAX_DOMAINS
    assert [(d.domain, d.sent) for d in report.domains[:3]] == [
        ("d007.com", 2),
        ("d000.com", 1),
        ("d001.com", 1),
    ]
