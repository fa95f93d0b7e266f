"""SuppressionShards on the session's real Ray: scopes, write-through, restarts, one call per shard."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import ray

from actors.policies.suppression import shard_for
from actors.suppression.client import SuppressionClient
from schemas.settings import load_settings
from schemas.suppressions import Suppressed, SuppressionEntry
from store.suppressions import SuppressionStore, add_suppressions


def workspaces_on_each_shard(n: int = 2) -> list[str]:
    found: dict[int, str] = {}
    for i in range(100):
        found.setdefault(shard_for(f"ws{i}", n), f"ws{i}")
    return [found[s] for s in range(n)]


@pytest.fixture
async def suppressions(ray_session, redis, redis_url):
    client = SuppressionClient.start(
        load_settings({}, ray_namespace=f"sup-{uuid.uuid4().hex[:8]}", suppression_shards=2), redis_url
    )
    yield client
    await client.drain()
    for shard in client.shards:
        ray.kill(shard, no_restart=True)


async def stats(client: SuppressionClient) -> list[dict]:
    return list(await asyncio.gather(*(shard.stats.remote() for shard in client.shards)))


async def test_scopes_global_domain_workspace_list(suppressions, redis):
    one, two = workspaces_on_each_shard()
    entries = [
        SuppressionEntry(email="Ana@Example.com", reason="bounce"),
        SuppressionEntry(email="bo@example.com", scope="domain", scope_value="Acme.test", reason="complaint"),
        SuppressionEntry(email="cy@example.com", scope="list", scope_value="lst_1", reason="unsubscribe"),
        SuppressionEntry(email="gi@example.com", scope="global"),
    ]
    assert await suppressions.add(one, entries) == [True, True, True, True]
    assert await suppressions.add(one, entries[:1]) == [False]
    everyone = ["ana@example.com", "bo@example.com", "cy@example.com", "GI@example.com", "ok@example.com"]
    hits = await suppressions.check(one, "mail.acme.test", ["lst_1"], everyone)
    assert hits == [
        Suppressed("ana@example.com", "workspace", "bounce"),
        Suppressed("bo@example.com", "domain", "complaint"),
        Suppressed("cy@example.com", "list", "unsubscribe"),
        Suppressed("GI@example.com", "global", "manual"),
    ]
    assert [h.email for h in await suppressions.check(one, "other.test", [], everyone)] == [
        "ana@example.com",
        "GI@example.com",
    ]
    # the other workspace lives on the other shard: only the global entry applies to it
    assert await suppressions.check(two, "mail.acme.test", ["lst_1"], everyone) == [
        Suppressed("GI@example.com", "global", "manual")
    ]
    store = SuppressionStore(redis)
    assert await store.is_suppressed(one, "BO@example.com", "domain", "acme.test")
    assert await suppressions.remove(one, ["bo@example.com", "never@example.com"], "domain", "acme.test") == 1
    assert not await store.is_suppressed(one, "bo@example.com", "domain", "acme.test")
    assert await suppressions.remove("any", ["gi@example.com"], "global") == 1
    assert [h.email for h in await suppressions.check(one, "acme.test", ["lst_1"], everyone)] == [
        "ana@example.com",
        "cy@example.com",
    ]
    assert await suppressions.check(two, "acme.test", [], everyone) == []
    with pytest.raises(ValueError):
        await suppressions.add(one, [SuppressionEntry(email="not-an-address")])
    mixed = await suppressions.check(one, "acme.test", [], ["bad", "ana@example.com", "x@"])
    assert mixed == [Suppressed("ana@example.com", "workspace", "bounce")]


async def test_writes_by_consumers_reach_a_loaded_shard(suppressions, redis):
    workspace = workspaces_on_each_shard()[0]
    assert await suppressions.check(workspace, "acme.test", [], ["late@example.com"]) == []
    await add_suppressions(
        redis, workspace, [SuppressionEntry(email="late@example.com", reason="complaint", source="complaint")]
    )
    deadline = time.monotonic() + 2
    while not await suppressions.check(workspace, "acme.test", [], ["late@example.com"]):
        assert time.monotonic() < deadline, "the shard never applied the published change"
        await asyncio.sleep(0.02)
    await SuppressionStore(redis).remove(workspace, ["late@example.com"], "workspace")
    while await suppressions.check(workspace, "acme.test", [], ["late@example.com"]):
        assert time.monotonic() < deadline + 2, "the shard never applied the removal"
        await asyncio.sleep(0.02)


async def test_restarted_shard_rebuilds_from_redis(suppressions):
    one, two = workspaces_on_each_shard()
    await suppressions.add(
        one,
        [SuppressionEntry(email=f"u{i}@example.com", reason="bounce") for i in range(50)]
        + [SuppressionEntry(email="g@example.com", scope="global")],
    )
    recipients = [f"u{i}@example.com" for i in range(0, 100, 5)] + ["g@example.com"]
    before = await suppressions.check(one, "acme.test", [], recipients)
    assert len(before) == 11
    for shard in suppressions.shards:
        ray.kill(shard, no_restart=False)
    assert await suppressions.check(one, "acme.test", [], recipients) == before
    assert await suppressions.check(two, "acme.test", [], recipients) == [
        Suppressed("g@example.com", "global", "manual")
    ]


async def test_bulk_checks_are_one_ray_call_per_shard(suppressions):
    one, two = workspaces_on_each_shard()
    await suppressions.add(one, [SuppressionEntry(email="u7@example.com")])
    await suppressions.add(two, [SuppressionEntry(email="u8@example.com")])
    await suppressions.check(one, "acme.test", [], [])  # load both shards' sets before counting
    await suppressions.check(two, "acme.test", [], [])
    before = [s["calls"].get("check", 0) for s in await stats(suppressions)]
    recipients = [f"u{i}@example.com" for i in range(1000)]
    hits = await suppressions.check(one, "acme.test", [], recipients)
    assert hits == [Suppressed("u7@example.com", "workspace", "manual")]
    middle = [s["calls"].get("check", 0) for s in await stats(suppressions)]
    assert [m - b for m, b in zip(middle, before, strict=True)] == [1, 0]
    items = [((two, one)[i % 2], "acme.test", [], [f"u{i}@example.com"]) for i in range(1000)]
    results = await suppressions.check_many(items)
    assert results[7] == [Suppressed("u7@example.com", "workspace", "manual")] and results[8] == [
        Suppressed("u8@example.com", "workspace", "manual")
    ]
    assert sum(1 for r in results if r) == 2
    after = [s["calls"].get("check", 0) for s in await stats(suppressions)]
    assert [a - m for a, m in zip(after, middle, strict=True)] == [1, 1]
