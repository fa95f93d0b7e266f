"""Several runners share one campaign: the snapshot is cut into slices, each with its own cursor, and the
in-flight window and `rate.per_second` are granted per chunk by one script for all of them. Every
subscriber gets exactly one message whichever runner sends their slice, a replayed slice chunk enqueues
nothing twice, no slice is skipped (the phase waits for every slice), and the grants add up to the
window and the rate, never more."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from store import keyspace
from store.campaigns import CampaignStore
from tests.campaigns.conftest import (
    campaign,
    packed_snapshot,
    recipients,
    runner,
    settle,
    smtp_campaign,
    store_state,
    until_sending,
)


async def drive_all(bodies, client, headers, campaign_id: str, within: float = 60.0) -> dict:
    """Step every runner at once (their steps interleave on the loop) until the campaign is `sent`."""
    deadline = time.monotonic() + within
    while True:
        await asyncio.gather(*(body.run_until_idle() for body in bodies))
        state = await campaign(client, headers, campaign_id)
        if state["status"] == "sent":
            return state
        assert time.monotonic() < deadline, f"stuck: {state['progress']} {state['counters']}"
        await asyncio.sleep(0.02)


async def test_two_runners_send_every_slice_once_and_the_phase_waits_for_both(
    client, make_key, sink, redis, workspace
):
    headers, _, emails, _, campaign_id = await smtp_campaign(client, make_key, sink, 200)
    first = runner(client, in_flight=1000, chunk=20, index=0, runners=2)
    second = runner(client, in_flight=1000, chunk=20, index=1, runners=2, consumer="runner-1")
    await until_sending(first, redis, workspace, campaign_id)
    state = await store_state(redis, workspace, campaign_id)
    assert state.number("slices") == 2
    bound = state.text("bounds")
    assert bound is not None
    snapshot = await packed_snapshot(redis, workspace, campaign_id)
    in_first = [i for i in snapshot if i <= bound]
    assert len(in_first) == 100

    # Runner 0 alone sends its slice and no more: the campaign does not move on without slice 1.
    for _ in range(20):
        await first.run_until_idle()
    await settle(redis, first)
    await first.run_until_idle()
    state = await store_state(redis, workspace, campaign_id)
    assert state.text("phase") == "send" and state.status == "sending"
    assert state.number("n:done") == 100 and len(recipients(sink)) == 100
    assert (await campaign(client, headers, campaign_id))["counters"]["remaining"] == 100

    done = await drive_all([first, second], client, headers, campaign_id)
    assert Counter(recipients(sink)) == Counter(emails)  # everyone, nobody twice
    counters = done["counters"]
    assert counters["sent"] == 200 and counters["queued"] == 0 and counters["remaining"] == 0


async def test_a_slice_chunk_replayed_by_another_runner_enqueues_nothing_twice(
    client, make_key, sink, redis, workspace
):
    headers, _, emails, _, campaign_id = await smtp_campaign(client, make_key, sink, 120)
    first = runner(client, in_flight=1000, chunk=30, index=0, runners=2)
    second = runner(client, in_flight=1000, chunk=30, index=1, runners=2, consumer="runner-1")
    await until_sending(first, redis, workspace, campaign_id)
    key = keyspace.campaign(workspace, campaign_id)
    before = await redis.hgetall(key)
    await asyncio.gather(first.step(), second.step())  # one chunk of each slice, at once
    after = await store_state(redis, workspace, campaign_id)
    assert after.number("n:enq") == 60 and after.text("cur") and after.text("cur:1")
    # Both runners "died" after their enqueue, before their checkpoints: the hash is as it was.
    await redis.delete(key)
    await redis.hset(key, mapping=before)
    # Restarted the other way round: each slice's chunk is replayed by whichever runner has it now.
    again = [
        runner(client, in_flight=1000, chunk=30, index=1, runners=2, consumer="runner-a"),
        runner(client, in_flight=1000, chunk=30, index=0, runners=2, consumer="runner-b"),
    ]
    done = await drive_all(again, client, headers, campaign_id)
    assert Counter(recipients(sink)) == Counter(emails)
    assert done["counters"]["sent"] == 120 and done["counters"]["queued"] == 0


async def test_the_window_and_the_rate_are_granted_across_slices(redis):
    store = CampaignStore(redis)
    key = keyspace.campaign("w", "cmp_1")
    await redis.hset(key, mapping={"status": "sending", "n:enq": 10, "n:sent": 4})  # 6 queued

    async def grant(slice_index: int, wanted: int = 20, *, per_second: int | None = None, now_ms: int = 0):
        return await store.grant(
            "w",
            "cmp_1",
            slice_index=slice_index,
            slices=2,
            wanted=wanted,
            in_flight=36,
            per_second=per_second,
            now_ms=now_ms,
        )

    assert await grant(0) == (20, "")  # 36 - 6 queued
    assert await grant(1) == (10, "")  # slice 0's uncommitted chunk counts
    assert await grant(1) == (10, "")  # a replayed chunk takes its own reservation again, not more
    await store.commit_chunk("w", "cmp_1", checkpoint={"cur": "x"}, counts={"n:enq": 20}, slice_index=0)
    assert await grant(0) == (0, "window")  # 26 queued + slice 1's 10
    await store.commit_chunk("w", "cmp_1", checkpoint={"cur:1": "y"}, counts={"n:enq": 10}, slice_index=1)
    await redis.hincrby(key, "n:sent", 30)  # 36 - 34 settled = 2 queued
    assert await grant(0) == (20, "")
    await store.commit_chunk("w", "cmp_1", checkpoint={}, counts={}, slice_index=0)

    # One bucket for the campaign: slice 1 gets what slice 0 left, then waits for the clock.
    assert await grant(0, per_second=15, now_ms=1_000) == (15, "")
    assert await grant(1, per_second=15, now_ms=1_000) == (0, "rate")
    assert await grant(1, per_second=15, now_ms=1_400) == (6, "")
    await store.commit_chunk("w", "cmp_1", checkpoint={}, counts={}, slice_index=0, refund=5)  # 5 skipped
    assert await grant(0, per_second=15, now_ms=1_400) == (5, "")

    await redis.hset(key, "status", "paused")  # no grant once paused, whichever runner asks
    assert await grant(0) == (0, "status") and await grant(1) == (0, "status")
