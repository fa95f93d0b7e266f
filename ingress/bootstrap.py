"""First start: the `default` workspace and its admin key (printed once, or MAILERS_BOOTSTRAP_KEY)."""

from __future__ import annotations

from schemas.settings import Settings
from store.api_keys import ApiKeyStore, generate_secret, hash_secret, new_record
from store.servers import ServerStore, ensure_sandbox_server
from store.workspaces import WorkspaceStore

DEFAULT_WORKSPACE = "default"


async def bootstrap(settings: Settings, workspaces: WorkspaceStore, keys: ApiKeyStore) -> str | None:
    """Returns a newly created admin secret to show once, or None when nothing new was created."""
    await workspaces.create(DEFAULT_WORKSPACE)
    await ensure_sandbox_server(ServerStore.for_settings(keys.redis, settings), DEFAULT_WORKSPACE)
    if settings.bootstrap_key is not None:
        if await keys.find_by_hash(hash_secret(settings.bootstrap_key)) is None:
            await keys.create(
                new_record(DEFAULT_WORKSPACE, "bootstrap", ["admin"], secret=settings.bootstrap_key)
            )
        return None
    if await keys.count(DEFAULT_WORKSPACE):
        return None
    secret = generate_secret()
    await keys.create(new_record(DEFAULT_WORKSPACE, "admin", ["admin"], secret=secret))
    return secret
