"""A packed campaign's messages are one mark in the workspace's message index, expanded where they sort
(store/ledger/index_ranges.py): the same pages, in the same order, as one member per message would give."""

from __future__ import annotations

from schemas.ids import id_at, new_id
from store import keyspace
from store.ledger import index_ranges
from store.ledger.index_ranges import RANGE_MARK, id_in_range, position_of, range_prefix
from store.ledger.ledger import MessageLedger

WORKSPACE = "acme"


def campaign_prefix(launch_ms: int, tag: str) -> str:
    """A range's prefix as actors/campaigns/body.message_id_at makes it: the launch time, then 40 bits."""
    from actors.campaigns.body import message_id_at

    return range_prefix(message_id_at(launch_ms, tag, 0))


async def index_with_ranges(redis, plain: list[str], ranges: dict[str, int]) -> list[str]:
    """Writes the index the enqueue script writes; returns every id it stands for, newest first."""
    index, counts = keyspace.message_index(WORKSPACE), keyspace.message_ranges(WORKSPACE)
    await redis.zadd(index, {i: 0 for i in plain} | {p + RANGE_MARK: 0 for p in ranges})
    if ranges:
        await redis.hset(counts, mapping=ranges)
    every = plain + [id_in_range(p, n) for p, count in ranges.items() for n in range(count)]
    return sorted(every, reverse=True)


async def walk(redis, limit: int) -> list[list[str]]:
    pages, after = [], None
    while True:
        ids, more = await index_ranges.newest_first(redis, WORKSPACE, limit=limit, after=after)
        pages.append(ids)
        if not more:
            return pages
        after = ids[-1]


def test_a_position_id_is_its_range_prefix_and_position() -> None:
    from actors.campaigns.body import message_id_at

    for position in (0, 1, 1023, 1024, 999_999, 2**40 - 1):
        made = message_id_at(1_796_600_000_000, "cmp_01M98H21HGFJK0XP9J00000000", position)
        assert position_of(made) == position
        assert id_in_range(range_prefix(made), position) == made
    first, second = (message_id_at(1_796_600_000_000, "cmp_x", p) for p in (41, 42))
    assert first < second < range_prefix(second) + RANGE_MARK  # the mark sorts above its range's ids


async def test_pages_over_ranges_and_plain_ids_are_the_pages_of_one_id_each(redis) -> None:
    older, newer = 1_796_600_000_000, 1_796_600_050_000
    plain = [id_at("msg", older - 5)[:-1] + "1", new_id("msg")]  # one older than both ranges, one newer
    plain += [id_at("msg", older)[:-8] + "ZZZZZZZZ"]  # the first range's launch ms, another digest
    ranges = {campaign_prefix(older, "cmp_a"): 7, campaign_prefix(newer, "cmp_b"): 12}
    expected = await index_with_ranges(redis, plain, ranges)
    assert await redis.zcard(keyspace.message_index(WORKSPACE)) == len(plain) + 2
    for limit in (1, 2, 3, 5, 7, 12, 40):
        pages = await walk(redis, limit)
        assert [i for page in pages for i in page] == expected, limit
        assert all(len(page) == limit for page in pages[:-1]) and 0 < len(pages[-1]) <= limit


async def test_an_after_inside_a_range_goes_on_with_its_lower_positions_then_below_it(redis) -> None:
    prefix = campaign_prefix(1_796_600_000_000, "cmp_a")
    below = id_at("msg", 1_796_500_000_000)[:-1] + "7"
    await index_with_ranges(redis, [below], {prefix: 5})
    ids, more = await index_ranges.newest_first(redis, WORKSPACE, limit=10, after=id_in_range(prefix, 2))
    assert ids == [id_in_range(prefix, 1), id_in_range(prefix, 0), below] and not more
    ids, more = await index_ranges.newest_first(redis, WORKSPACE, limit=1, after=id_in_range(prefix, 2))
    assert ids == [id_in_range(prefix, 1)] and more


async def test_the_retention_trim_drops_a_range_with_its_mark(redis) -> None:
    old, recent = 1_796_000_000_000, 1_796_600_000_000
    ranges = {campaign_prefix(old, "cmp_old"): 3, campaign_prefix(recent, "cmp_new"): 2}
    await redis.hset(keyspace.WORKSPACES, WORKSPACE, "{}")
    await index_with_ranges(redis, [], ranges)
    assert await MessageLedger(redis).trim_indexes(old + 1000) == 1
    ids, _ = await index_ranges.newest_first(redis, WORKSPACE, limit=10, after=None)
    assert ids == [id_in_range(campaign_prefix(recent, "cmp_new"), p) for p in (1, 0)]
    assert await redis.hkeys(keyspace.message_ranges(WORKSPACE)) == [
        campaign_prefix(recent, "cmp_new").encode()
    ]


async def test_ids_of_a_range_also_in_the_index_one_by_one_are_listed_once(redis) -> None:
    """A campaign sending when the ranges came: its first ids went into the index one by one, the rest as
    its range, whose count covers them too."""
    prefix = campaign_prefix(1_796_600_000_000, "cmp_a")
    earlier = [id_in_range(prefix, p) for p in range(3)]
    other = new_id("msg")
    expected = await index_with_ranges(redis, [*earlier, other], {prefix: 6})
    assert len(expected) == 10 and len(set(expected)) == 7  # the helper lists the earlier ids twice
    for limit in (1, 2, 4, 20):
        pages = await walk(redis, limit)
        assert [i for page in pages for i in page] == sorted(set(expected), reverse=True), limit


async def test_a_campaign_sending_across_the_upgrade_gets_a_count_over_its_ids_of_before(redis) -> None:
    """The enqueue script, adding a range's mark, raises its count over the campaign's ids already in the
    index one by one (written before the ranges): every id is listed once, in order, whatever the pages."""
    import msgspec

    from actors.campaigns.body import message_id_at
    from store.ledger.listing import MessageFilter, MessageLister
    from tests.pipeline.helpers import enqueue, message, new_message

    launch, campaign = 1_796_600_000_000, "cmp_01M98H21HGFJK0XP9J00000000"

    def campaign_message(position: int, *, ranged: bool):
        made = msgspec.structs.replace(
            message(workspace=WORKSPACE), id=message_id_at(launch, campaign, position), campaign_id=campaign
        )
        new = new_message(made, ["srv_a"])
        new.fresh_id, new.ranged = False, ranged
        return new

    # before the upgrade, two slices had sent positions 0-2 and 5-6, each id in the index by itself
    assert await enqueue(redis, [campaign_message(p, ranged=False) for p in (0, 1, 2, 5, 6)]) == [None] * 5
    assert await enqueue(redis, [campaign_message(3, ranged=True)]) == [None]  # after it, the range
    prefix = range_prefix(message_id_at(launch, campaign, 0))
    assert await redis.hget(keyspace.message_ranges(WORKSPACE), prefix) == b"7"
    ids = [message_id_at(launch, campaign, p) for p in (6, 5, 3, 2, 1, 0)]
    for limit in (1, 2, 3, 10):
        pages = await walk(redis, limit)
        listed = [i for page in pages for i in page]
        assert [i for i in listed if i in ids] == ids, limit  # 4 has no message: its id is listed, bare
        assert len(listed) == len(set(listed)) == 7
    page = await MessageLister(redis).page(WORKSPACE, MessageFilter(), limit=10, after=None)
    assert [m.id for m in page.messages] == ids
    # a later batch of the same campaign does not look again: its mark is there
    assert await enqueue(redis, [campaign_message(4, ranged=True)]) == [None]
    assert await redis.hget(keyspace.message_ranges(WORKSPACE), prefix) == b"7"
