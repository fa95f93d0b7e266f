"""A member taken off a list (`list.removed`) leaves the segment population on both analytics backends,
and an older membership event arriving late cannot bring them back (the removal's version wins)."""

from __future__ import annotations

import msgspec

from schemas.segments import SegmentQuery
from tests.analytics.conftest import chdb_path, store  # noqa: F401  (fixtures: both backends)
from tests.analytics.segment_dataset import IDS, L1, NOW, WS, build, member


def removed(name: str, list_id: str, version: int):
    event = member(name, list_id, "subscribed", version)
    return msgspec.structs.replace(event, type="list.removed", data={**event.data, "status": "removed"})


async def population(store) -> set[str]:  # noqa: F811
    page = await store.segment_members(WS, SegmentQuery(lists=(L1,)), limit=100, now=NOW)
    return {m.id for m in page.data}


async def test_a_removed_member_leaves_the_list_population(store) -> None:  # noqa: F811
    await store.insert(build()[0])
    assert IDS["ana"] in await population(store)
    await store.insert([removed("ana", L1, 50)])
    assert IDS["ana"] not in await population(store)
    await store.insert([member("ana", L1, "subscribed", 49)])  # late and older: no effect
    assert IDS["ana"] not in await population(store)
    await store.insert([member("ana", L1, "subscribed", 51)])  # added again later: back
    assert IDS["ana"] in await population(store)
