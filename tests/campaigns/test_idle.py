"""An idle runner (`CampaignRunner.run` with no active campaign) waits blocked on `m:events` instead of
passing twenty times a second, and a launch, whose transition appends `campaign.launched` to the
stream, wakes it at once (docs/campaigns.md, "The runner"): every runner, not only the one the
consumer group hands the entry to."""

from __future__ import annotations

import asyncio
import contextlib
import time

import redis.asyncio as aioredis

from actors.campaigns.body import CampaignRunner
from ingress.context import SERVICES
from tests.campaigns.conftest import SCOPES, campaign, make_audience, make_campaign, make_template, smtp

NAME = "idle-campaign-runner"


async def _blocked(redis, name: str = NAME) -> bool:
    """Whether the runner's own connection is blocked on the stream right now."""
    for entry in await redis.client_list():
        if entry.get("name") == name:
            return entry.get("cmd") in ("xread", "xreadgroup") and "b" in entry.get("flags", "")
    return False


async def _until_blocked(redis, task: asyncio.Task, deadline: float, what: str, name: str = NAME) -> None:
    """Until the runner's connection blocks on the stream; `what` names the failure."""
    while not await _blocked(redis, name):
        assert not task.done() and time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def test_an_idle_runner_waits_on_the_stream_and_a_launch_wakes_it(
    client, make_key, sink, redis, redis_url
):
    headers = await make_key(SCOPES)
    await smtp(client, headers, sink)
    list_id, emails = await make_audience(client, headers, 5)
    template_id = await make_template(client, headers)
    services = client.app[SERVICES]
    own = aioredis.Redis.from_url(redis_url, client_name=NAME)
    body = CampaignRunner(own, services.settings, clock=time.time)
    stop = asyncio.Event()
    # A block far longer than the test: only the stream entry of the launch can end the wait in time.
    task = asyncio.create_task(body.run(stop, idle_wait=0.01, idle_block=120))
    try:
        deadline = time.monotonic() + 30
        await _until_blocked(redis, task, deadline, "the idle runner never blocked")
        campaign_id = await make_campaign(client, headers, list_id, template_id)
        while (state := await campaign(client, headers, campaign_id))["status"] != "sent":
            assert time.monotonic() < deadline, f"the launch did not wake the runner: {state['status']}"
            await asyncio.sleep(0.02)
        assert state["counters"]["queued"] + state["counters"]["sent"] == len(emails)
        # Done, it goes back to waiting blocked.
        await _until_blocked(redis, task, deadline, "the runner did not go idle again")
    finally:
        stop.set()
        task.cancel()  # it is blocked for up to idle_block
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await own.aclose()


async def test_a_launch_wakes_runner_0_when_the_group_hands_its_entry_to_runner_1(
    client, make_key, sink, redis, redis_url
):
    """Two runners blocked, runner 1 first: Redis serves blocked clients in the order they blocked, so a
    group read would hand `campaign.launched` to runner 1, and runner 0, who alone resolves the audience,
    would sleep out its block (here two minutes: the test would time out)."""
    headers = await make_key(SCOPES)
    await smtp(client, headers, sink)
    list_id, emails = await make_audience(client, headers, 5)
    template_id = await make_template(client, headers)
    settings = client.app[SERVICES].settings
    stop = asyncio.Event()
    connections, tasks = [], []
    try:
        deadline = time.monotonic() + 30
        for index in (1, 0):
            own = aioredis.Redis.from_url(redis_url, client_name=f"{NAME}-{index}")
            connections.append(own)
            body = CampaignRunner(own, settings, clock=time.time, index=index, runners=2)
            tasks.append(asyncio.create_task(body.run(stop, idle_wait=0.01, idle_block=120)))
            await _until_blocked(
                redis, tasks[-1], deadline, f"runner {index} never blocked", f"{NAME}-{index}"
            )
        campaign_id = await make_campaign(client, headers, list_id, template_id)
        while (state := await campaign(client, headers, campaign_id))["status"] != "sent":
            assert time.monotonic() < deadline, f"the launch did not wake runner 0: {state['progress']}"
            await asyncio.sleep(0.02)
        assert state["counters"]["queued"] + state["counters"]["sent"] == len(emails)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for own in connections:
            await own.aclose()
