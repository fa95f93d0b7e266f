"""How chDB answers segment conditions (issue #12's speed): event conditions read the events_by_type
projection (one type, one window) instead of the table's time order, membership reads the newest version
(FINAL: a `removed` row replaces a membership), and the IN-subquery index analysis is off. Answers are
test_segment_parity.py's job; this checks the plan."""

from __future__ import annotations

from analytics.segments import SegmentCompiler
from analytics.store import open_store
from schemas.segments import EventCount, SegmentQuery, parse_condition
from tests.analytics.conftest import store_url
from tests.analytics.segment_dataset import L1, NOW, WS, build


async def test_event_conditions_read_the_type_ordered_projection(tmp_path, chdb_path):
    store = open_store(store_url("chdb", tmp_path, chdb_path))
    await store.migrate()
    first, later = build()
    await store.insert(first + later)
    client = store._client  # the plan, which the store's interface does not show
    compiler = SegmentCompiler(store.dialect, store.json, WS, SegmentQuery(), NOW)
    for node in (EventCount("message.opened", within_days=30), EventCount("order.completed", None, 2)):
        subquery = compiler.condition(node).removeprefix("(s.email IN (").removesuffix("))")
        plan = client.query(f"EXPLAIN projections = 1 {subquery}", parameters=compiler.bind.values)
        text = "\n".join(row[0] for row in plan.result_rows)
        assert "events_by_type" in text, text
    stored = client.query(
        "SELECT sum(rows) FROM system.projection_parts WHERE database = currentDatabase() "
        "AND table = 'events' AND name = 'events_by_type' AND active"
    ).result_rows[0][0]
    assert stored == client.query("SELECT count() FROM events").result_rows[0][0] > 0
    await store.close()


def test_membership_reads_the_newest_version_and_skips_removed_members():
    from analytics.clickhouse_backend import ClickHouseStore

    query = SegmentQuery(lists=(L1,))
    compiler = SegmentCompiler(ClickHouseStore.dialect, ClickHouseStore.json, WS, query, NOW)
    lists_alone = compiler.where(None)
    assert "memberships FINAL WHERE" in lists_alone and "status <> 'removed'" in lists_alone
    condition = parse_condition({"attribute": "list_status", "op": "eq", "value": "subscribed"})
    assert "memberships FINAL WHERE" in compiler.where(condition)
    assert "use_index_for_in_with_subqueries = 0" in ClickHouseStore.json.settings
