"""What other code calls to reach the import runner: start it (or find the running one)."""

from __future__ import annotations

from actors.imports.actor import ImportRunnerActor
from actors.runtime import ActorHandle, find_actor, start_actor
from schemas.settings import Settings

IMPORT_RUNNER = "import-runner"


def start_import_runner(settings: Settings, redis_url: str, *, name: str = IMPORT_RUNNER) -> ActorHandle:
    """Find the import runner, creating it if none runs yet."""
    return start_actor(ImportRunnerActor, name, settings, redis_url, concurrency=8)


def find_import_runner(settings: Settings, name: str = IMPORT_RUNNER) -> ActorHandle | None:
    return find_actor(name, settings)
