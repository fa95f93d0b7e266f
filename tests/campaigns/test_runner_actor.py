"""The campaign runners through their real Ray shells: they resume launched campaigns by themselves, and
killing one runner actor alone mid-campaign (Ray restarts it) while the other sends its slice still gives
every subscriber exactly one message."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from actors.campaigns.client import start_campaign_runners
from ingress.context import SERVICES
from tests.campaigns.conftest import campaign, smtp_campaign
from tests.pipeline.conftest import wait_for

pytestmark = pytest.mark.slow


async def test_killing_the_runner_actor_mid_campaign_sends_everyone_exactly_once(
    client, make_key, sink, redis_url
):
    import ray

    headers, list_id, emails, template_id, campaign_id = await smtp_campaign(client, make_key, sink, 1500)
    settings = client.app[SERVICES].settings
    name = f"campaign-runner-{uuid.uuid4().hex[:8]}"
    handles = start_campaign_runners(settings, redis_url, name=name, in_flight=200, runners=2)
    handle = handles[0]  # runner 0: resolve, its slice, the phases; runner 1 keeps sending its slice
    try:
        assert all([await h.ready.remote() for h in handles])
        await wait_for(lambda: len(sink.deliveries) >= 300, within=60)
        at_kill = len(sink.deliveries)
        ray.kill(handle, no_restart=False)  # the actor process dies; Ray starts it again

        async def finished():
            return (await campaign(client, headers, campaign_id))["status"] == "sent"

        await wait_for(finished, within=120)
    finally:
        for each in handles:
            await each.shutdown.remote()
            ray.kill(each, no_restart=True)
    counts = Counter(to for d in sink.deliveries for to in d.rcpt_tos)
    duplicates = sum(c - 1 for c in counts.values())
    print(
        f"\n[campaign chaos] runner actor killed: {len(emails)} subscribers, "
        f"{len(counts)} got mail, {duplicates} twice"
    )
    assert at_kill < len(emails), "the kill came after the end"
    assert set(counts) == set(emails) and duplicates == 0
    done = await campaign(client, headers, campaign_id)
    assert done["counters"]["sent"] == len(emails) and done["counters"]["queued"] == 0
