"""What the runner's cheaper passes must not lose (issue #14, wake-up and per-run cost): a commit is fenced by
the lease its claim took, so a runner whose lease ended and was taken over writes nothing; two runners
driving one automation do each step once; a run started elsewhere is claimed without a sweep (its
`automation.triggered` on the stream says so) and, when that entry is lost, by the next sweep; stream
entries that no live trigger can want are acked without being decoded."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import msgspec

from ingress.context import SERVICES
from schemas.events import events_msgpack_decoder
from store import keyspace
from store.automation_runs import RunStore, Transition
from tests.audience.test_subscribers_api import new_list, upsert
from tests.automations.conftest import Clock, new_automation, runs_of, trigger

UPDATE_WAIT_UPDATE = [
    {"id": "one", "type": "update", "attributes": {"step": 1}},
    {"id": "w", "type": "wait", "seconds": 60},
    {"id": "two", "type": "update", "attributes": {"step": 2}},
]


async def _steps_on_the_stream(redis) -> Counter[tuple[str, str]]:
    """How many times each (run, step) was reported done on `m:events` (step_completed or run_ended)."""
    done: Counter[tuple[str, str]] = Counter()
    for _, fields in await redis.xrange(keyspace.EVENT_STREAM):
        raw = fields.get(keyspace.EVENT_FIELD)
        for event in events_msgpack_decoder.decode(raw) if raw else []:
            if event.type in ("automation.step_completed", "automation.run_ended") and "step" in event.data:
                done[(event.data["run_id"], event.data["step"])] += 1
    return done


async def test_a_runner_whose_lease_was_taken_over_commits_nothing(
    client, admin, redis, workspace, runner_for
):
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}])
    automation = await new_automation(client, admin, trigger={"type": "api"}, steps=UPDATE_WAIT_UPDATE)
    clock = Clock(time.time())
    client.app[SERVICES].clock = clock
    run = (await (await trigger(client, admin, automation["id"], "ana@example.com")).json())["run"]
    runner = runner_for(clock)
    runs = RunStore(redis)
    now_ms = int(clock() * 1000)
    stale = await runs.claim_batch(workspace, automation["id"], now_ms=now_ms, lease_ms=5_000, limit=10)
    assert [c.run_id for c in stale.runs] == [run]
    clock.advance(6)  # the first claim's lease is over: another runner takes the run
    fresh = await runs.claim_batch(
        workspace, automation["id"], now_ms=now_ms + 6_000, lease_ms=5_000, limit=10
    )
    assert [c.run_id for c in fresh.runs] == [run]
    assert stale.runs[0].lease != fresh.runs[0].lease
    # Both did the step; only the claim that holds the run may record it (the record itself is unchanged
    # since either claim read it, so comparing it would have let the stale one through too).
    late = await runner.plan(workspace, automation["id"], stale)
    current = await runner.plan(workspace, automation["id"], fresh)
    assert await runs.commit(workspace, automation["id"], late) == [False]
    assert await runs.commit(workspace, automation["id"], current) == [True]
    assert await runs.commit(workspace, automation["id"], current) == [False], "a claim commits once"
    view = await (await client.get(f"/v1/automations/{automation['id']}/runs/{run}", headers=admin)).json()
    assert [h["step"] for h in view["history"]] == ["one"] and view["status"] == "running"
    # A cancel (no lease: the record's bytes are its token) still ends a run held by a claim.
    again = await runs.claim_batch(
        workspace, automation["id"], now_ms=now_ms + 6_000, lease_ms=5_000, limit=10
    )
    cancelled = await client.post(f"/v1/automations/{automation['id']}/runs/{run}/cancel", headers=admin)
    assert cancelled.status == 200
    moves = await runner.plan(workspace, automation["id"], again)
    assert await runs.commit(workspace, automation["id"], moves) == [False], "cancelled meanwhile"
    assert all(isinstance(m, Transition) and m.lease is not None for m in moves)


async def test_two_runners_on_one_automation_do_each_step_once(client, admin, redis, workspace, runner_for):
    lst = await new_list(client, admin)
    emails = [f"r{i}@example.com" for i in range(120)]
    await upsert(client, admin, lst["id"], [{"email": e} for e in emails])
    automation = await new_automation(client, admin, trigger={"type": "api"}, steps=UPDATE_WAIT_UPDATE)
    clock = Clock(time.time())
    client.app[SERVICES].clock = clock
    made = await asyncio.gather(*(trigger(client, admin, automation["id"], e) for e in emails))
    assert {r.status for r in made} == {202}
    # Small batches and a pipeline of several: the two claim, plan and commit interleaved.
    first = runner_for(clock, consumer="runner-a", batch=7, pipeline=3)
    second = runner_for(clock, consumer="runner-b", batch=5, pipeline=2)
    await asyncio.gather(first.run_until_idle(), second.run_until_idle())
    assert {r["status"] for r in await runs_of(client, admin, automation["id"])} == {"waiting"}
    clock.advance(61)
    await asyncio.gather(first.run_until_idle(), second.run_until_idle())
    runs = await runs_of(client, admin, automation["id"])
    assert len(runs) == 120 and {r["status"] for r in runs} == {"completed"}
    assert all([h["step"] for h in r["history"]] == ["one", "w", "two"] for r in runs)
    done = await _steps_on_the_stream(redis)
    assert set(done.values()) == {1}, "each step reported once"
    assert len(done) == 3 * 120


async def test_a_run_started_elsewhere_is_claimed_at_once_and_a_lost_hint_by_the_sweep(
    client, admin, redis, workspace, runner_for
):
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}, {"email": "bo@example.com"}])
    automation = await new_automation(
        client, admin, reentry="always", trigger={"type": "api"}, steps=UPDATE_WAIT_UPDATE
    )
    clock = Clock(time.time())
    client.app[SERVICES].clock = clock
    runner = runner_for(clock)
    await runner.run_until_idle()  # the first pass: the consumer group, and a sweep
    # The clock stands still: no sweep is due. The api trigger's `automation.triggered` says to claim.
    assert (await trigger(client, admin, automation["id"], "ana@example.com")).status == 202
    await runner.run_until_idle()
    assert [r["status"] for r in await runs_of(client, admin, automation["id"])] == ["waiting"]
    # The entry that would say so is gone before the runner reads it: the run waits for the next sweep.
    assert (await trigger(client, admin, automation["id"], "bo@example.com")).status == 202
    await redis.xtrim(keyspace.EVENT_STREAM, maxlen=0)
    await runner.run_until_idle()
    assert sorted(r["status"] for r in await runs_of(client, admin, automation["id"])) == [
        "running",
        "waiting",
    ]
    clock.advance(runner.live_ttl)
    await runner.run_until_idle()
    assert [r["status"] for r in await runs_of(client, admin, automation["id"])] == ["waiting", "waiting"]


async def test_entries_no_live_trigger_wants_are_acked_undecoded(client, admin, redis, workspace, runner_for):
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}])
    automation = await new_automation(
        client,
        admin,
        reentry="always",
        trigger={"type": "event", "event": "signed.up"},
        steps=[{"id": "w", "type": "wait", "seconds": 60}],
    )
    clock = Clock(time.time())
    client.app[SERVICES].clock = clock
    runner = runner_for(clock)
    await runner.run_until_idle()  # the consumer group exists from here
    # Not msgpack at all, and naming no event type a live trigger wants: decoding it would fail the pass.
    junk = b"\x92\xc1 message.delivered \xc1"
    with_mark = msgspec.msgpack.encode("type") + msgspec.msgpack.encode("signed.up")
    assert with_mark not in junk
    await redis.xadd(keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: junk})
    body = {"name": "signed.up", "email": "ana@example.com"}
    assert (await client.post("/v1/events", json=body, headers=admin)).status == 202
    await runner.run_until_idle()
    assert [r["status"] for r in await runs_of(client, admin, automation["id"])] == ["waiting"]
    await runner.run_until_idle()  # the next read acks what the last pass handled
    pending = await redis.xpending(keyspace.EVENT_STREAM, keyspace.AUTOMATION_GROUP)
    assert pending["pending"] == 0
