"""What other code calls to reach the campaign runners: start them (or find the running ones).

The runners take no requests: launched campaigns wait in Redis (`store/campaigns.py`), so the ingress
never calls them and nothing crosses Ray per recipient. `MAILERS_CAMPAIGN_RUNNERS` actors share every
campaign's sending (each its slices of the audience snapshot, docs/campaigns.md "The runner"): the first
is named `campaign-runner`, the others `campaign-runner-1`, `campaign-runner-2`, ….
"""

from __future__ import annotations

from actors.campaigns.actor import CampaignRunnerActor
from actors.runtime import ActorHandle, find_actor, start_actor
from schemas.settings import Settings

CAMPAIGN_RUNNER = "campaign-runner"


def runner_name(name: str, index: int) -> str:
    return name if index == 0 else f"{name}-{index}"


def start_campaign_runners(
    settings: Settings,
    redis_url: str,
    *,
    name: str = CAMPAIGN_RUNNER,
    in_flight: int | None = None,
    runners: int | None = None,
) -> list[ActorHandle]:
    """Find the campaign runners (`runners`, default `settings.campaign_runners`), creating those that
    do not run yet."""
    count = max(1, runners if runners is not None else settings.campaign_runners)
    return [
        start_actor(
            CampaignRunnerActor,
            runner_name(name, index),
            settings,
            settings,
            redis_url,
            in_flight,
            index,
            count,
            concurrency=8,
        )
        for index in range(count)
    ]


def start_campaign_runner(
    settings: Settings, redis_url: str, *, name: str = CAMPAIGN_RUNNER, in_flight: int | None = None
) -> ActorHandle:
    """Start every campaign runner (`start_campaign_runners`); the first one's handle."""
    return start_campaign_runners(settings, redis_url, name=name, in_flight=in_flight)[0]


def find_campaign_runner(settings: Settings, name: str = CAMPAIGN_RUNNER) -> ActorHandle | None:
    return find_actor(name, settings)
