"""What other code calls to reach the campaign runner: start it (or find the running one).

The runner takes no requests: launched campaigns wait in Redis (`store/campaigns.py`), so the ingress
never calls it and nothing crosses Ray per recipient.
"""

from __future__ import annotations

from actors.campaigns.actor import CampaignRunnerActor
from actors.runtime import ActorHandle, find_actor, start_actor
from schemas.settings import Settings

CAMPAIGN_RUNNER = "campaign-runner"


def start_campaign_runner(
    settings: Settings, redis_url: str, *, name: str = CAMPAIGN_RUNNER, in_flight: int | None = None
) -> ActorHandle:
    """Find the campaign runner, creating it if none runs yet."""
    return start_actor(CampaignRunnerActor, name, settings, settings, redis_url, in_flight, concurrency=8)


def find_campaign_runner(settings: Settings, name: str = CAMPAIGN_RUNNER) -> ActorHandle | None:
    return find_actor(name, settings)
