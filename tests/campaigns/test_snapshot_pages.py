"""The audience snapshot packed into pages once final (store/campaigns.py, docs/campaigns.md "Memory"): a
chunk read from the pages is the one the zset gave, for any cursor, count and slice bound; a campaign's
zset is gone once it sends, its pages cost a fraction of the zset, and a finished campaign leaves none, even
when a runner's step writes after the cancel."""

from __future__ import annotations

import random
from collections import Counter

from actors.campaigns.body import PACK_CHUNK, message_id_at
from store import keyspace
from store.campaigns import AUDIENCE_PAGE, CampaignStore
from store.ledger import index_ranges
from tests.campaigns.conftest import (
    drive,
    packed_snapshot,
    recipients,
    runner,
    smtp_campaign,
    store_state,
    until_sending,
)

WS, CMP = "ws_pages", "cmp_pages"


def _ids(rng: random.Random, n: int) -> list[str]:
    # Ids of several lengths and a few past ASCII, so lex order is not length order ("s_1" < "s_10" < "s_2").
    found = {
        f"sub_{rng.randrange(10 ** rng.randrange(1, 9))}{rng.choice(['', 'é', 'Ω', 'z'])}" for _ in range(n)
    }
    return sorted(found, key=lambda i: i.encode())


async def _packed(store: CampaignStore, *, after: str, count: int, upto: str | None) -> list[str]:
    return [sub_id for sub_id, _ in await store.packed_chunk(WS, CMP, after=after, count=count, upto=upto)]


async def _pack(store: CampaignStore, ids: list[str]) -> None:
    """As the runner's pack phase does it: PACK_CHUNK ids a step, in order."""
    page = 0
    for start in range(0, len(ids), PACK_CHUNK):
        part = ids[start : start + PACK_CHUNK]
        await store.pack_pages(WS, CMP, page=page, ids=part, checkpoint={"cur": part[-1]})
        page += -(-len(part) // AUDIENCE_PAGE)


async def test_a_packed_chunk_is_the_zsets_for_any_cursor_count_and_bound(redis):
    rng = random.Random(7)
    ids = _ids(rng, 3_100)
    store = CampaignStore(redis)
    await redis.hset(keyspace.campaign(WS, CMP), mapping={"status": "sending"})
    await redis.zadd(keyspace.campaign_audience(WS, CMP), dict.fromkeys(ids, 0))
    await _pack(store, ids)
    assert await redis.llen(keyspace.campaign_audience_firsts(WS, CMP)) == -(-len(ids) // AUDIENCE_PAGE)

    afters = ["", ids[0], ids[499], ids[500], ids[-2], ids[-1], "sub_", "sub_5", "zzz"] + rng.sample(ids, 20)
    uptos = [None, ids[0], ids[1_000], ids[1_001], "sub_5"] + rng.sample(ids, 5)
    cases = [(a, c, u) for a in afters for c in (1, 7, 499, 500, 501, 1_000, 2_000) for u in uptos]
    expected = {}
    for after, count, upto in cases:
        zset = await store.audience_chunk(WS, CMP, after=after, count=count, upto=upto)
        assert await _packed(store, after=after, count=count, upto=upto) == zset, (
            after,
            count,
            upto,
        )
        expected[after, count, upto] = zset
    # A cursor walk in chunks of 333 meets every id once, in order.
    walked, cursor = [], ""
    while chunk := await _packed(store, after=cursor, count=333, upto=None):
        walked += chunk
        cursor = chunk[-1]
    assert walked == ids

    await store.finish_pack(WS, CMP, {"phase": "send"})
    assert not await redis.exists(keyspace.campaign_audience(WS, CMP))
    fresh = CampaignStore(redis)  # another runner: reads the page firsts from Redis
    for (after, count, upto), zset in list(expected.items())[::13]:
        assert await _packed(fresh, after=after, count=count, upto=upto) == zset

    # Cancelled: the script that finishes the campaign forgets its snapshot.
    assert (await fresh.transition(WS, CMP, ("sending",), "cancelled")).done
    assert not await redis.exists(*_snapshot_keys())


def _snapshot_keys() -> list[str]:
    return [
        keyspace.campaign_audience(WS, CMP),
        keyspace.campaign_audience_pages(WS, CMP),
        keyspace.campaign_audience_firsts(WS, CMP),
    ]


async def test_a_step_that_writes_after_the_campaign_was_cancelled_leaves_nothing_behind(redis):
    """A runner read the campaign as sending, then the cancel finished it and dropped the snapshot, then the
    runner's step wrote its chunk: each writer reads the status in its MULTI and drops what it wrote."""
    store = CampaignStore(redis)
    await redis.hset(keyspace.campaign(WS, CMP), mapping={"status": "sending"})
    await store.snapshot_add(WS, CMP, ["sub_a", "sub_b"], {"cur": "sub_b"})
    assert await redis.exists(*_snapshot_keys()) == 1
    assert (await store.transition(WS, CMP, ("sending",), "cancelled")).done
    assert not await redis.exists(*_snapshot_keys())
    await store.snapshot_add(WS, CMP, ["sub_c"], {"cur": "sub_c"})
    await store.snapshot_remove(WS, CMP, ["sub_a"], {"cur": "sub_a"})
    await store.pack_pages(WS, CMP, page=0, ids=["sub_a", "sub_b"], checkpoint={"cur": "sub_b", "pg": 1})
    await store.finish_pack(WS, CMP, {"phase": "send", "cur": ""})
    assert not await redis.exists(*_snapshot_keys())
    # While the campaign sends, the same writes stay.
    await redis.hset(keyspace.campaign(WS, CMP), mapping={"status": "sending"})
    await store.pack_pages(WS, CMP, page=0, ids=["sub_a", "sub_b"], checkpoint={"cur": "sub_b", "pg": 1})
    assert await redis.exists(*_snapshot_keys()) == 2


async def test_a_sending_campaign_reads_its_snapshot_from_pages_and_sends_everyone_once(
    client, make_key, sink, redis, workspace
):
    n = 1_234
    headers, _, emails, _, campaign_id = await smtp_campaign(client, make_key, sink, n)
    body = runner(client, in_flight=5_000, chunk=400)
    await until_sending(body, redis, workspace, campaign_id)
    snapshot = await packed_snapshot(redis, workspace, campaign_id)  # and the zset is gone
    assert len(snapshot) == n == len(set(snapshot))
    pages = keyspace.campaign_audience_pages(workspace, campaign_id)
    assert await redis.hlen(pages) == -(-n // AUDIENCE_PAGE)
    used = await redis.memory_usage(pages) + await redis.memory_usage(
        keyspace.campaign_audience_firsts(workspace, campaign_id)
    )
    assert used < 40 * n  # ~32 B a subscriber (the zset: ~128)

    done = await drive(body, client, headers, campaign_id)
    assert Counter(recipients(sink)) == Counter(emails)  # everyone, nobody twice
    assert done["counters"]["sent"] == n
    # Each message's id is its recipient's position in the snapshot (`message_id_at`).
    launch_ms = (await store_state(redis, workspace, campaign_id)).number("launch_ms")
    # The index holds them as the campaign's range (store/ledger/index_ranges.py), expanded newest first.
    listed, more = await index_ranges.newest_first(redis, workspace, limit=n + 1, after=None)
    assert listed == [message_id_at(launch_ms, campaign_id, p) for p in reversed(range(n))] and not more
    assert await redis.zcard(keyspace.message_index(workspace)) == 1
    assert not await redis.exists(pages)  # dropped with the snapshot when the campaign completed
