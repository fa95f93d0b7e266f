"""How chDB answers segment conditions (issue #12's speed): event conditions with `count_gte` 1 read
the newest-event table (`event_latest`, one range filter); the others read `event_days` for the
whole days of a window and the events_by_type projection (one type, less than a day) for its first
day; every semi-join is over UInt64 keys; string and number attributes are map lookups, not JSON parses;
membership reads the newest version (FINAL: a `removed` row replaces a membership); the IN-subquery index
analysis is off. Answers are test_segment_parity.py's job; this checks the plan."""

from __future__ import annotations

from analytics.segments import SegmentCompiler
from analytics.store import open_store
from schemas.segments import AttributeIs, EventCount, SegmentQuery, parse_condition
from tests.analytics.conftest import store_url
from tests.analytics.segment_dataset import L1, NOW, WS, build


def _plan(client, sql: str, params: dict) -> str:
    return "\n".join(
        row[0] for row in client.query(f"EXPLAIN projections = 1 {sql}", parameters=params).result_rows
    )


async def test_event_conditions_read_day_counts_and_the_first_day_through_the_projection(tmp_path, chdb_path):
    store = open_store(store_url("chdb", tmp_path, chdb_path))
    await store.migrate()
    first, later = build()
    await store.insert(first + later)
    client = store._client  # the plan, which the store's interface does not show
    compiler = SegmentCompiler(store.dialect, store.json, WS, SegmentQuery(), NOW)
    # count_gte > 1: whole days from event_days, the first day through the projection.
    node = EventCount("order.completed", 10, 2)  # its first day holds events
    condition = compiler.condition(node)
    assert condition.startswith("(s.email_key IN (") and "FROM event_days" in condition
    days, _, first_day = condition.removeprefix("(s.email_key IN (").partition(" UNION ALL ")
    days = days.removeprefix("SELECT k FROM (")
    first_day = first_day.partition(") AS w GROUP BY")[0].removesuffix("))")
    assert "events_by_type" in _plan(client, first_day, compiler.bind.values)
    assert "event_days" in _plan(client, days, compiler.bind.values)
    # count_gte 1 (migration 0008): one range filter on the newest-event table, nothing else read.
    for node in (EventCount("message.opened", within_days=30), EventCount("message.opened")):
        condition = compiler.condition(node)
        recipients = condition.removeprefix("(s.email_key IN (").removesuffix("))")
        assert recipients.startswith("SELECT recipient_key FROM event_latest WHERE "), condition
        assert "events" not in recipients.replace("event_latest", "") and "FINAL" not in recipients
        assert ("last >= " in recipients) == (node.within_days is not None)
        plan = _plan(client, recipients, compiler.bind.values)
        assert "event_latest" in plan and "event_days" not in plan, plan
    # The projection holds every event, and event_days every (type, recipient, day, campaign).
    stored = client.query(
        "SELECT sum(rows) FROM system.projection_parts WHERE database = currentDatabase() "
        "AND table = 'events' AND name = 'events_by_type' AND active"
    ).result_rows[0][0]
    assert stored == client.query("SELECT count() FROM events").result_rows[0][0] > 0
    await store.close()


def test_keys_are_integers_attributes_maps_and_membership_the_newest_version():
    from analytics.clickhouse_backend import ClickHouseStore

    query = SegmentQuery(lists=(L1,))
    compiler = SegmentCompiler(ClickHouseStore.dialect, ClickHouseStore.json, WS, query, NOW)
    lists_alone = compiler.where(None)
    assert "s.key IN (SELECT subscriber_key FROM segment_memberships FINAL WHERE" in lists_alone
    assert "status <> 'removed'" in lists_alone
    condition = parse_condition({"attribute": "list_status", "op": "eq", "value": "subscribed"})
    assert "segment_memberships FINAL WHERE" in compiler.where(condition)
    assert "use_index_for_in_with_subqueries = 0" in ClickHouseStore.json.settings
    for node in (AttributeIs("plan", "eq", "pro"), AttributeIs("age", "gt", 30)):
        sql = compiler.condition(node)
        assert "JSON" not in sql and ("s.attr_strings[" in sql or "s.attr_numbers[" in sql), sql


def test_a_count_over_lists_hashes_the_filtered_subscribers_and_folds_list_status():
    """The speed of issue #12's shapes: with lists and a filter the count is driven by the lists'
    memberships and the hash set is the filter's subscribers (not the lists' members); a list_status
    eq/in the filter requires is the population's own status filter, so memberships are read once."""
    from analytics.clickhouse_backend import ClickHouseStore

    def count(lists: tuple[str, ...], condition) -> str:
        query = SegmentQuery(lists=lists)
        compiler = SegmentCompiler(ClickHouseStore.dialect, ClickHouseStore.json, WS, query, NOW)
        return compiler.count(None if condition is None else parse_condition(condition))

    attribute = count((L1,), {"attribute": "plan", "op": "eq", "value": "pro"})
    assert attribute.startswith("SELECT count(*) FROM segment_memberships FINAL WHERE "), attribute
    assert "subscriber_key IN (SELECT s.key FROM segment_subscribers AS s FINAL WHERE " in attribute
    assert attribute.count("segment_memberships") == 1
    several = count((L1, "lst_" + "2" * 26), {"attribute": "plan", "op": "eq", "value": "pro"})
    assert several.startswith("SELECT count(DISTINCT subscriber_key) FROM segment_memberships FINAL")
    status = count((L1,), {"attribute": "list_status", "op": "eq", "value": "unsubscribed"})
    assert status.count("segment_memberships") == 1 and "status <> 'removed'" not in status, status
    assert status.startswith("SELECT count(*) FROM segment_subscribers AS s FINAL WHERE ")
    both = count(
        (L1,),
        {
            "all": [
                {"attribute": "list_status", "op": "in", "value": ["subscribed"]},
                {"attribute": "age", "op": "gt", "value": 3},
            ]
        },
    )
    assert both.count("segment_memberships") == 1 and "status <> 'removed'" not in both, both
    negated = count((L1,), {"attribute": "list_status", "op": "ne", "value": "unsubscribed"})
    assert negated.count("segment_memberships") == 2  # ne is not a population: both sets stay

    events = [{"event": "message.opened", "within_days": 30}, {"event": "order.completed", "count_gte": 2}]
    union = count((L1,), {"any": [*events, {"attribute": "plan", "op": "eq", "value": "pro"}]})
    assert union.count("s.email_key IN (") == 1, union
    assert union.count("FROM event_latest") == 1 and union.count("FROM event_days") == 1, union
