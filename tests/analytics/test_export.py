"""Exporting a million events streams them: the Python heap stays small however long the window."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime, timedelta

import duckdb
import msgspec
import pytest

from analytics.queries import EventsQuery, ExportQuery
from analytics.store import open_store
from schemas.events import Event

EVENTS = 1_000_000
START = datetime(2026, 3, 1, tzinfo=UTC)
PEAK_BOUND = 40 * 1024 * 1024  # the whole export is ~330 MB of NDJSON; one chunk is ~1.7 MB

# A million rows written by DuckDB itself (a Python loop would dominate the test's time), one every 2 ms.
GENERATE = """
INSERT INTO events SELECT
    'evt_' || lpad(i::VARCHAR, 26, '0'), 'acme', TIMESTAMP '2026-03-01' + to_milliseconds(i * 2),
    CASE i % 4 WHEN 0 THEN 'message.sent' WHEN 1 THEN 'message.delivered' WHEN 2 THEN 'message.opened'
               ELSE 'message.clicked' END,
    'msg_' || lpad((i // 4)::VARCHAR, 26, '0'), 'user' || (i % 1000) || '@example.com', 'example.com',
    'hello@acme.com', 'smtp', 'srv_1', '', ['welcome'], '{"user":"42"}', '', '', '{}', 0, false, '', 0, 0, 0,
    '', '', '', ''
FROM range($events) AS t(i)
"""


# ~15 s alone on the 2-core box: marked slow (deselect with -m "not slow"), but `make test` keeps it
# because it is well under a minute and the only guard of the streaming export's memory bound.
@pytest.mark.slow
async def test_export_of_a_million_events_stays_under_a_memory_bound(tmp_path):
    path = tmp_path / "analytics.duckdb"
    store = open_store(f"duckdb://{path}")
    await store.migrate()
    await store.close()
    with duckdb.connect(str(path)) as db:
        db.execute(GENERATE, {"events": EVENTS})

    store = open_store(f"duckdb://{path}")
    query = ExportQuery(from_=START, to=START + timedelta(days=1))
    lines = size = 0
    first = last = b""
    tracemalloc.start()
    try:
        async for chunk in store.export_events("acme", query, now=START + timedelta(days=2)):
            lines += chunk.count(b"\n")
            size += len(chunk)
            first = first or chunk[: chunk.index(b"\n")]
            last = chunk[chunk.rindex(b"\n", 0, len(chunk) - 1) + 1 :]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await store.close()
    assert lines == EVENTS
    assert size > 250 * 1024 * 1024
    print(f"export of {EVENTS} events: peak Python heap {peak / 2**20:.1f} MiB")
    assert peak < PEAK_BOUND, f"peak {peak / 2**20:.1f} MiB"
    oldest, newest = msgspec.json.decode(first, type=Event), msgspec.json.decode(last, type=Event)
    assert oldest.id == "evt_" + "0" * 26 and oldest.created_at == START
    assert newest.created_at == START + timedelta(milliseconds=2 * (EVENTS - 1))


async def test_export_lines_are_exactly_the_events_json_even_for_awkward_values(store):
    from tests.analytics.events_factory import event

    awkward = [
        event(
            "message.clicked",
            START + timedelta(microseconds=123_456),
            to='"odd\\\\one"@example.com',
            tags=["ünï", "tab\there", "line\u2028sep"],
            campaign_id="cmp_\x01",
            url='https://acme.com/?q="x"&y=é',
            nested={"pi": 3.14159, "big": 10**15, "list": [1, None, True, "😀"], "slash": "a/b"},
        ),
        event("campaign.launched", START + timedelta(seconds=1), message_id=None, count=0.1),
        event("message.sent", START + timedelta(seconds=2), provider=None, server=None, tags=[]),
    ]
    await store.insert(awkward)
    query = ExportQuery(from_=START, to=START + timedelta(days=1))
    lines = b"".join([c async for c in store.export_events("acme", query, now=START)]).splitlines()
    page = await store.events_page(
        "acme", EventsQuery(limit=10, from_=START, to=START + timedelta(days=1)), now=START
    )
    assert lines == [msgspec.json.encode(e) for e in reversed(page.data)]
    assert page.data[-1].created_at == START + timedelta(milliseconds=123)  # stored to the millisecond
    assert (
        page.data[-1].message.to == '"odd\\\\one"@example.com'
        and page.data[-1].data["nested"]["list"][3] == "😀"
    )
