"""Chaos: the automation runner actor killed mid-run (while sends and waits are in flight); Ray restarts
it, it resumes every run from Redis, and every send step has sent exactly one message."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.audience.test_subscribers_api import new_list, upsert
from tests.automations.conftest import new_automation, new_template, runs_of, trigger
from tests.pipeline.conftest import dispatch_idle, wait_for

pytestmark = pytest.mark.slow
RUNS = 200


async def test_killing_the_runner_mid_run_sends_each_step_once(
    ray_session, client, admin, redis, redis_url, sink, smtp_server, tmp_path
):
    import ray

    from actors.automations.client import start_automation_runner
    from tests.conftest import make_settings

    first = await new_template(client, admin, html="<p>One</p>", subject="One")
    second = await new_template(client, admin, html="<p>Two</p>", subject="Two")
    lst = await new_list(client, admin)
    emails = [f"c{i}@example.com" for i in range(RUNS)]
    await upsert(client, admin, lst["id"], [{"email": e} for e in emails])
    automation = await new_automation(
        client,
        admin,
        trigger={"type": "api"},
        steps=[
            {"id": "one", "type": "send", "template": {"id": first["id"]}, "from": "Acme <hi@acme.com>"},
            {"id": "pause", "type": "wait", "seconds": 2},
            {"id": "two", "type": "send", "template": {"id": second["id"]}, "from": "Acme <hi@acme.com>"},
        ],
    )
    name = "automation-runner-chaos-test"
    # The killed runner's claimed runs are due again when their lease ends: a short lease, a short test.
    settings = make_settings(tmp_path, redis_url, automation_lease_seconds=5.0)
    handle = start_automation_runner(settings, redis_url, name=name)
    try:
        assert await handle.ready.remote()
        for email in emails:
            assert (await trigger(client, admin, automation["id"], email)).status == 202
        await wait_for(lambda: len(sink.deliveries) >= RUNS // 4, within=120)
        ray.kill(handle, no_restart=False)  # mid-send and mid-wait; Ray restarts it, it resumes from Redis

        async def done() -> bool:
            runs = await runs_of(client, admin, automation["id"])
            return len(runs) == RUNS and all(r["status"] == "completed" for r in runs)

        await wait_for(done, within=240, every=0.5)
        await wait_for(lambda: len(sink.deliveries) >= 2 * RUNS, within=120)
        await wait_for(lambda: dispatch_idle(redis), within=120)  # past this, nothing more can arrive
        counts = Counter((d.rcpt_tos[0], d.parsed()["Subject"]) for d in sink.deliveries)
        duplicates = sum(c - 1 for c in counts.values())
        print(f"\n[chaos] runner kill: {RUNS} runs x 2 sends, {len(counts)} arrived, {duplicates} duplicates")
        assert set(counts) == {(e, s) for e in emails for s in ("One", "Two")}
        assert duplicates == 0, "a send step redone after the kill must be a replay of the same message id"
        for run in await runs_of(client, admin, automation["id"]):
            assert [h["outcome"] for h in run["history"]] == ["sent", "waiting", "sent"]
    finally:
        await handle.shutdown.remote()
        ray.kill(handle)
