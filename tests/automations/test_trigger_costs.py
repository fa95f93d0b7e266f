"""A lone api trigger crosses to Redis in its own task (no Task, no future for its batch of one); triggers
arriving together still leave as batches (`Coalescer(inline_alone=True)` in store/coalescer.py, used by
ingress/routes/automations.py; issue #14)."""

from __future__ import annotations

import asyncio

from ingress.context import SERVICES
from ingress.routes.automations import _api_batcher
from store import keyspace
from tests.audience.test_subscribers_api import new_list, upsert
from tests.automations.conftest import new_automation, trigger

API = {"type": "api"}
WAIT = {"id": "w", "type": "wait", "seconds": 3600}


async def test_a_lone_trigger_makes_no_batch_task_and_concurrent_ones_still_share_batches(
    client, admin, redis, workspace
):
    lst = await new_list(client, admin)
    emails = [f"lone{i}@example.com" for i in range(30)]
    await upsert(client, admin, lst["id"], [{"email": e} for e in emails])
    automation = await new_automation(client, admin, reentry="always", trigger=API, steps=[WAIT])
    assert (await trigger(client, admin, automation["id"], emails[0])).status == 202  # the head cached
    batcher = _api_batcher(client.app[SERVICES].redis)
    loop = asyncio.get_running_loop()
    flushes = 0

    def factory(loop: asyncio.AbstractEventLoop, coro, **kwargs):
        nonlocal flushes
        frame = getattr(coro, "cr_frame", None)
        flushes += frame is not None and frame.f_locals.get("self") is batcher
        return asyncio.Task(coro, loop=loop, **kwargs)

    previous = loop.get_task_factory()
    loop.set_task_factory(factory)
    try:
        calls = batcher.calls
        alone = await trigger(client, admin, automation["id"], emails[1])
        assert alone.status == 202 and flushes == 0 and batcher.calls == calls + 1
        keyed = await trigger(client, admin, automation["id"], emails[2], key="lone-k")
        assert keyed.status == 202 and flushes == 0
        replayed = await trigger(client, admin, automation["id"], emails[2], key="lone-k")
        assert replayed.status == 202 and replayed.headers["Idempotent-Replayed"] == "true"
        assert await replayed.json() == await keyed.json()
        calls = batcher.calls
        answers = await asyncio.gather(*(trigger(client, admin, automation["id"], e) for e in emails[3:]))
        assert {a.status for a in answers} == {202}
        assert flushes >= 1  # the ones that queued behind a batch in flight left as a batch of their own
        assert batcher.calls - calls < len(emails[3:])
    finally:
        loop.set_task_factory(previous)
    assert await redis.hlen(keyspace.automation_runs(workspace, automation["id"])) == 30
