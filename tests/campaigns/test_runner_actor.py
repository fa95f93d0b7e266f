"""The campaign runner through its real Ray shell: it resumes launched campaigns by itself, and killing
the actor alone mid-campaign (Ray restarts it) still gives every subscriber exactly one message."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from actors.campaigns.client import start_campaign_runner
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
    handle = start_campaign_runner(settings, redis_url, name=name, in_flight=200)
    try:
        assert await handle.ready.remote()
        await wait_for(lambda: len(sink.deliveries) >= 300, within=60)
        at_kill = len(sink.deliveries)
        ray.kill(handle, no_restart=False)  # the actor process dies; Ray starts it again

        async def finished():
            return (await campaign(client, headers, campaign_id))["status"] == "sent"

        await wait_for(finished, within=120)
    finally:
        await handle.shutdown.remote()
        ray.kill(handle, no_restart=True)
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
