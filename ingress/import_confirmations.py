"""Sends the confirmation mails the import runner queued (`store/confirmation_outbox.py`).

Every ingress runs one `send_queued_confirmations` task (`confirmation_sender_ctx`, after its services):
it reads the outbox through the shared consumer group, sends each entry's mails through the normal send
path as the uploader's key (`ingress/confirmation.send_confirmations`), then acks. A key revoked since
the upload, or a list deleted since, drops the entry (logged): nobody may be mailed on their behalf.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ingress.confirmation import send_confirmations
from ingress.context import SERVICES, Principal
from store.confirmation_outbox import ConfirmationOutbox, PendingConfirmations
from store.lists import ListStore

log = logging.getLogger("mailers.audience.confirmation")
CONSUMER = "ingress"  # one name for every process: an entry a dead process was handed is read again


async def send_queued_confirmations(services, *, block_ms: int | None = 1000) -> int:
    """Send what is queued; run forever with `block_ms`, or return when idle with None (tests)."""
    outbox = ConfirmationOutbox(services.redis, CONSUMER)
    await outbox.ensure_group()
    sent = 0
    while True:
        entries = await outbox.read(block_ms=block_ms)
        if not entries and block_ms is None:
            return sent
        for entry_id, pending in entries:
            sent += await _send(services, pending)
            await outbox.ack(entry_id)


async def run_confirmation_sender(services) -> None:
    """The long-running task: a failure (Redis away) is logged and retried, never ends the task."""
    while True:
        try:
            await send_queued_confirmations(services)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sending queued confirmations failed; retrying")
            await asyncio.sleep(1.0)


async def confirmation_sender_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's cleanup context: the sender runs while the services are open, cancelled before they close."""
    task = asyncio.create_task(run_confirmation_sender(app[SERVICES]))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _send(services, pending: PendingConfirmations) -> int:
    key = await services.keys.get(pending.key_id) if pending.key_id else None
    target = await ListStore(services.redis).get(pending.workspace, pending.list_id)
    if key is None or key.state == "revoked" or key.workspace != pending.workspace or target is None:
        log.warning("dropped %d confirmations for list %s", len(pending.members), pending.list_id)
        return 0
    principal = Principal(key=key, scopes=frozenset(key.scopes))
    return await send_confirmations(services, principal, target, pending.members, pending.applied_ms)
