"""What the two latency targets of issue #14 rest on: an api trigger's 202 writes its audit entry with its
run (one script, no audit round trip of its own), and a runner idle in production (`run`) is woken by the
event stream at once instead of sleeping out its idle wait."""

from __future__ import annotations

import asyncio
import time

import msgspec

from security.audit_chain import AuditEntry
from store import keyspace
from tests.audience.test_subscribers_api import new_list, upsert
from tests.automations.conftest import Clock, new_automation, runs_of, trigger
from tests.pipeline.conftest import wait_for

WAIT = [{"id": "w", "type": "wait", "seconds": 3600}]


async def _audit_entries(redis, since: int) -> list[AuditEntry]:
    return [
        msgspec.msgpack.decode(fields[keyspace.AUDIT_FIELD], type=AuditEntry)
        for _, fields in (await redis.xrange(keyspace.AUDIT_STREAM))[since:]
    ]


async def test_every_trigger_answer_has_exactly_one_audit_entry(client, admin, redis, workspace):
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": f"a{i}@example.com"} for i in range(4)])
    always = await new_automation(client, admin, reentry="always", trigger={"type": "api"}, steps=WAIT)
    never = await new_automation(client, admin, reentry="never", trigger={"type": "api"}, steps=WAIT)
    paused = await new_automation(client, admin, status="paused", trigger={"type": "api"}, steps=WAIT)
    before = await redis.xlen(keyspace.AUDIT_STREAM)
    answers = list(
        await asyncio.gather(
            trigger(client, admin, always["id"], "a0@example.com"),  # 202, a new run
            trigger(client, admin, always["id"], "a1@example.com", key="k1"),  # 202, a new run
            trigger(client, admin, never["id"], "a2@example.com"),  # 202, a new run
            trigger(client, admin, always["id"], "nobody@example.com"),  # 422
            trigger(client, admin, paused["id"], "a0@example.com"),  # 409
            trigger(client, admin, "aut_" + "0" * 26, "a0@example.com"),  # 404
        )
    )
    answers.append(await trigger(client, admin, always["id"], "a1@example.com", key="k1"))  # replayed 202
    answers.append(await trigger(client, admin, never["id"], "a2@example.com"))  # 409: entered before
    assert [a.status for a in answers] == [202, 202, 202, 422, 409, 404, 202, 409]
    assert answers[6].headers["Idempotent-Replayed"] == "true"
    entries = [e for e in await _audit_entries(redis, before) if e.action.endswith("/trigger")]
    by_request = {e.request_id: e for e in entries}
    assert len(entries) == len(by_request) == len(answers), "one entry per request, none twice"
    for answer in answers:
        entry = by_request[answer.headers["Request-Id"]]
        assert (entry.status, entry.action) == (answer.status, "POST /v1/automations/{id}/trigger")
        assert entry.resource_id == answer.url.path.split("/")[3]  # the automation triggered
    assert len(await runs_of(client, admin, always["id"])) == 2
    assert len(await runs_of(client, admin, never["id"])) == 1


async def test_an_idle_runner_is_woken_by_the_event_stream_not_its_idle_wait(
    client, admin, redis, runner_for
):
    """With an idle wait of a minute, an event (and an api trigger's run) is taken within seconds: the
    runner waits on the stream (XREADGROUP BLOCK), which the event's append — or the start script's
    `automation.triggered` — ends."""
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ev@example.com"}, {"email": "api@example.com"}])
    on_event = await new_automation(
        client, admin, reentry="always", trigger={"type": "event", "event": "signed.up"}, steps=WAIT
    )
    on_api = await new_automation(client, admin, reentry="always", trigger={"type": "api"}, steps=WAIT)
    runner = runner_for(Clock(time.time()))
    runner.clock = time.time  # production's clock: the blocking read is real time
    await runner.run_until_idle()  # the consumer group exists: events from now on are the runner's
    passes = 0
    step = runner.step

    async def counted() -> int:
        nonlocal passes
        passes += 1
        return await step()

    runner.step = counted  # type: ignore[method-assign]  # counts the passes `run` makes
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop, idle_wait=60.0, min_pass=0.001))
    try:
        await _until_idle_blocked(runner)
        idle_passes = passes
        await asyncio.sleep(0.5)  # idle: the runner is blocked on the stream, not polling it
        assert passes - idle_passes <= 2
        started = time.monotonic()
        body = {"name": "signed.up", "email": "ev@example.com"}
        assert (await client.post("/v1/events", json=body, headers=admin)).status == 202
        await _until(client, admin, on_event["id"], "waiting")
        assert (await trigger(client, admin, on_api["id"], "api@example.com")).status == 202
        await _until(client, admin, on_api["id"], "waiting")  # its first step done: the runner woke
        assert time.monotonic() - started < 20, "woken by the stream, not after the 60 s idle wait"
        assert passes - idle_passes < 40, "a pass per wake-up, not a spin"
    finally:
        stop.set()  # a blocked read ends within its second (cancelling it is swallowed by redis-py)
        await asyncio.wait_for(task, 10)


async def _until_idle_blocked(runner) -> None:
    """Until the runner has finished a pass with nothing to do (its next read blocks)."""
    await wait_for(lambda: runner.idle_block.idle, within=10)


async def _until(client, admin, automation_id: str, status: str) -> None:
    """Until the automation has a run in `status`, for at most 20 s (the idle wait is 60)."""

    async def reached() -> bool:
        return any(r["status"] == status for r in await runs_of(client, admin, automation_id))

    await wait_for(reached, within=20)
