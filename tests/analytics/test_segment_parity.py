"""Segments on DuckDB and ClickHouse (chDB): exact membership for a hand-built audience, identical on
both, with ClickHouse fed shuffled batches, replays and a late older update; hostile text stays data."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from analytics.duckdb_backend import DuckDBStore
from analytics.segments import SegmentCompiler
from schemas.segments import AttributeIs, SegmentQuery, parse_condition
from tests.analytics.segment_dataset import CASES, IDS, L1, L2, NOW, TRIAL, WS, build, member

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


def removed(name: str, list_id: str, version: int):
    event = member(name, list_id, "subscribed", version)
    return msgspec.structs.replace(event, type="list.removed", data={**event.data, "status": "removed"})


# With these on top of build(): ana in both lists, bo unconfirmed in L2, cy subscribed in L2 (unsubscribed
# from L1), ed taken off L1 (`removed`) and subscribed in L2. A count over several lists reads their
# memberships, so it must count a person in two lists once; a `list_status` eq/in the whole filter requires
# becomes the population's own filter, so those rows must still be the lists' memberships of that status.
SEVERAL_LISTS = [
    member("ana", L2, "subscribed", 4),
    member("bo", L2, "unconfirmed", 4),
    member("cy", L2, "subscribed", 4),
    removed("ed", L1, 5),
    member("ed", L2, "subscribed", 6),
]
ANY_EVENTS = [
    {"event": TRIAL, "within_days": 7},
    {"event": "order.completed", "within_days": 12, "count_gte": 1},
    {"attribute": "plan", "op": "eq", "value": "free"},
]
SEVERAL_CASES: list[tuple[list[str], Any, set[str]]] = [
    ([L1, L2], None, {"ana", "bo", "cy", "di", "ed", "eve"}),
    ([L1, L2], {"attribute": "plan", "op": "exists"}, {"ana", "bo", "cy", "ed", "eve"}),
    ([L1, L2], {"attribute": "list_status", "op": "eq", "value": "unconfirmed"}, {"bo"}),
    (
        [L1, L2],
        {"attribute": "list_status", "op": "in", "value": ["unsubscribed", "unconfirmed"]},
        {"bo", "cy"},
    ),
    (
        [L1, L2],
        {
            "all": [
                {"attribute": "list_status", "op": "eq", "value": "subscribed"},
                {"attribute": "plan", "op": "eq", "value": "pro"},
            ]
        },
        {"ana", "cy"},
    ),
    ([L1, L2], {"attribute": "list_status", "op": "ne", "value": "subscribed"}, set()),
    ([L1], {"attribute": "list_status", "op": "eq", "value": "subscribed"}, {"ana", "bo", "eve"}),
    ([L1], {"attribute": "list_status", "op": "ne", "value": "subscribed"}, {"cy"}),
    (
        [L1],
        {
            "all": [
                {"attribute": "list_status", "op": "in", "value": ["subscribed", "unsubscribed"]},
                {"attribute": "plan", "op": "eq", "value": "pro"},
            ]
        },
        {"ana", "cy"},
    ),
    (
        [L1],
        {
            "all": [
                {"attribute": "list_status", "op": "eq", "value": "subscribed"},
                {"attribute": "list_status", "op": "eq", "value": "unsubscribed"},
            ]
        },
        set(),
    ),
    ([L2], {"not": {"event": "message.opened", "within_days": 30}}, {"bo", "di"}),
    # An `any` of event conditions is one set of their recipients (a window's first day included).
    ([L2], {"any": ANY_EVENTS}, {"ana", "bo", "cy", "ed"}),
    ([L2], {"not": {"any": ANY_EVENTS}}, {"di"}),
    ([L2], {"any": ANY_EVENTS[:2]}, {"ana", "cy", "ed"}),
]


async def test_several_lists_count_each_member_once_and_list_status_narrows_the_population(both):
    first, later = build()
    for store in both:
        await store.insert(first)
        await store.insert(later + SEVERAL_LISTS)
    duck, ch = both
    for lists, condition, expected in SEVERAL_CASES:
        assert await members(duck, lists, condition) == expected, ("duckdb", lists, condition)
        assert await members(ch, lists, condition) == expected, ("chdb", lists, condition)
