"""Messages as the API reads and enqueues them: a name for the message ledger (store/ledger/).

The ledger owns the message hash, its timeline and every status transition; the ingress, its tests and
the send service know it as `MessageStore`, so the name stays while the code lives in the ledger.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from schemas.events import Event
from store.ledger import MessageLedger, MessageMeta, NewMessage, StoredMessage

MessageStore = MessageLedger

__all__ = ["MessageMeta", "MessageStore", "NewMessage", "StoredMessage", "cancel_scheduled"]


async def cancel_scheduled(
    redis: aioredis.Redis, workspace: str, message_id: str, event: Event, retention_seconds: int
) -> str:
    """Cancel if still scheduled; returns 'ok', or the status that prevented it ('' if missing)."""
    return await MessageLedger(redis).cancel_scheduled(workspace, message_id, event, retention_seconds)
