"""What other code calls to reach the automation runner: start it (or find the running one)."""

from __future__ import annotations

import msgspec

from actors.automations.actor import AutomationRunnerActor
from actors.runtime import ActorHandle, find_actor, start_actor
from schemas.settings import Settings

AUTOMATION_RUNNER = "automation-runner"


def start_automation_runner(
    settings: Settings, redis_url: str, *, name: str = AUTOMATION_RUNNER
) -> ActorHandle:
    """Find the automation runner, creating it if none runs yet (the name is its consumer name)."""
    encoded = msgspec.msgpack.encode(settings)
    return start_actor(AutomationRunnerActor, name, settings, redis_url, encoded, name, concurrency=8)


def find_automation_runner(settings: Settings, name: str = AUTOMATION_RUNNER) -> ActorHandle | None:
    return find_actor(name, settings)
