"""The runner through its real Ray shell: its own loop drives runs, and a runner killed mid-run is
restarted by Ray and resumes every run from Redis."""

from __future__ import annotations

import asyncio

from tests.audience.test_subscribers_api import new_list, upsert
from tests.automations.conftest import new_automation, runs_of, trigger


async def _statuses(client, admin, automation_id: str, want: set[str], count: int) -> list[dict]:
    async with asyncio.timeout(60):  # the shell's own loop does the work: nothing here steps it
        while True:
            runs = await runs_of(client, admin, automation_id)
            if len(runs) == count and {r["status"] for r in runs} <= want:
                return runs
            await asyncio.sleep(0.05)


async def test_the_runner_shell_runs_and_a_killed_runner_resumes(
    ray_session, client, admin, redis_url, tmp_path
):
    import ray

    from actors.automations.client import start_automation_runner
    from tests.conftest import make_settings

    lst = await new_list(client, admin)
    emails = [f"p{i}@example.com" for i in range(50)]
    await upsert(client, admin, lst["id"], [{"email": e} for e in emails])
    automation = await new_automation(
        client,
        admin,
        trigger={"type": "api"},
        steps=[
            {"id": "one", "type": "update", "attributes": {"step": 1}},
            {"id": "two", "type": "update", "attributes": {"step": 2}},
        ],
    )
    settings = make_settings(tmp_path, redis_url)
    name = "automation-runner-shell-test"
    handle = start_automation_runner(settings, redis_url, name=name)
    try:
        assert await handle.ready.remote()
        for email in emails[:25]:
            assert (await trigger(client, admin, automation["id"], email)).status == 202
        ray.kill(handle, no_restart=False)  # dies wherever it is; Ray restarts it (max_restarts=-1)
        for email in emails[25:]:
            assert (await trigger(client, admin, automation["id"], email)).status == 202
        handle = start_automation_runner(settings, redis_url, name=name)
        runs = await _statuses(client, admin, automation["id"], {"completed"}, 50)
        assert all([h["step"] for h in r["history"]] == ["one", "two"] for r in runs)
    finally:
        await handle.shutdown.remote()
        ray.kill(handle)
