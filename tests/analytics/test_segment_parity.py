"""Segments on DuckDB and ClickHouse (chDB): exact membership for a hand-built audience, identical on
both, with ClickHouse fed shuffled batches, replays and a late older update; hostile text stays data."""

from __future__ import annotations

import random

import pytest

from analytics.duckdb_backend import DuckDBStore
from analytics.segments import SegmentCompiler
from schemas.segments import AttributeIs, SegmentQuery, parse_condition
from tests.analytics.segment_dataset import CASES, IDS, L1, NOW, WS, build

NAMES = {v: k for k, v in IDS.items()}


@pytest.fixture
async def loaded(both):
    duck, ch = both
    first, later = build()
    await duck.insert(first)
    await duck.insert(later)
    shuffled = first[:]
    random.Random(5).shuffle(shuffled)
    # The later batch holds replays and an older update: ClickHouse gets them between two halves.
    for batch in (shuffled[:15], later, shuffled[15:], later[:2]):
        await ch.insert(batch)
    return duck, ch


async def members(store, lists, condition) -> set[str]:
    query = SegmentQuery(lists=tuple(lists), filter=condition)
    found, after = [], None
    while True:
        page = await store.segment_members(WS, query, after=after, limit=2, now=NOW)
        found += [m.id for m in page.data]
        if not page.has_more:
            break
        after = page.data[-1].id
    assert found == sorted(found, reverse=True)
    assert await store.segment_count(WS, query, now=NOW) == len(found)
    return {NAMES[i] for i in found}


async def test_every_condition_finds_exactly_its_members_on_both_backends(loaded):
    duck, ch = loaded
    for lists, condition, expected in CASES:
        assert await members(duck, lists, condition) == expected, ("duckdb", condition)
        assert await members(ch, lists, condition) == expected, ("chdb", condition)


async def test_members_carry_the_newest_mirrored_record(loaded):
    for store in loaded:
        page = await store.segment_members(WS, SegmentQuery(lists=(L1,)), limit=100, now=NOW)
        ed = next(m for m in page.data if m.id == IDS["ed"])
        assert (ed.email, ed.name, ed.attributes) == ("ed@example.com", "Ed", {"plan": "enterprise"})


def compiled(condition) -> tuple[str, dict]:
    compiler = SegmentCompiler(DuckDBStore.dialect, DuckDBStore.json, WS, SegmentQuery(lists=(L1,)), NOW)
    return compiler.where(condition), compiler.bind.values


def test_hostile_names_and_values_never_reach_the_sql_text():
    benign_sql, _ = compiled(AttributeIs("plan", "eq", "pro"))
    for name, value in [
        ("plan", "pro'); DROP TABLE events; --"),
        ("we'ird'); DROP TABLE subscribers; --", "pro"),  # bypassing validation: still a parameter
        ('x" || 1=1 --', "\u2028ü名'\""),
    ]:
        sql, params = compiled(AttributeIs(name, "eq", value))
        assert sql == benign_sql
        assert value in params.values()
    for name in ["we'ird", "Plan", "ü名", "a" * 65, "x); DROP TABLE events"]:
        with pytest.raises(ValueError):
            parse_condition({"attribute": name, "op": "eq", "value": 1})


async def test_hostile_values_leave_the_tables_intact(loaded):
    for store in loaded:
        for value in ["x'); DROP TABLE events; --", "\\'", "ü名\u0000", "%", "_"]:
            for op in ("eq", "contains", "starts_with"):
                query = SegmentQuery(filter={"attribute": "plan", "op": op, "value": value})
                assert await store.segment_count(WS, query, now=NOW) == 0
        assert await store.segment_count(WS, SegmentQuery(), now=NOW) == 6
