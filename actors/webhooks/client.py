"""What other code calls to reach the WebhookDeliverer: find or start it, and wait until it consumes."""

from __future__ import annotations

from typing import Any

import msgspec

from actors.runtime import ActorHandle, start_actor
from actors.webhooks.actor import WebhookDeliverer
from actors.webhooks.config import DELIVERER_NAME
from schemas.settings import Settings


def start_webhook_deliverer(
    settings: Settings, redis_url: str, *, name: str = DELIVERER_NAME, **overrides: Any
) -> ActorHandle:
    """Find or start the deliverer `name` without waiting (`handle.ready` answers once it consumes).

    `overrides` are `DelivererConfig` fields (the consumer name is the actor's name)."""
    return start_actor(
        WebhookDeliverer,
        name,
        settings,
        msgspec.msgpack.encode(settings),
        redis_url,
        {"consumer": name, **overrides},
    )


async def ensure_webhook_deliverer(
    settings: Settings, redis_url: str, *, name: str = DELIVERER_NAME, **overrides: Any
) -> ActorHandle:
    """Find or start the deliverer `name` and wait until it consumes the event stream."""
    handle = start_webhook_deliverer(settings, redis_url, name=name, **overrides)
    await handle.ready.remote()
    return handle
