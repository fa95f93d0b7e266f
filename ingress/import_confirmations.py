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
BLOCK_SECONDS = 1.0
CONSUMER = "ingress"  # one name for every process: an entry a dead process was handed is read again


async def send_queued_confirmations(
    services, *, block_ms: int | None = int(BLOCK_SECONDS * 1000), stop: asyncio.Event | None = None
) -> int:
    """Send what is queued; with `block_ms` run until `stop` is set, with None return when idle (tests)."""
    outbox = ConfirmationOutbox(services.listener_redis, CONSUMER)  # a blocking read: not the request pool
    await outbox.ensure_group()
    sent = 0
    while stop is None or not stop.is_set():
        entries = await outbox.read(block_ms=block_ms)
        if not entries and block_ms is None:
            break
        for entry_id, pending in entries:
            sent += await _send(services, pending)
            await outbox.ack(entry_id)
    return sent


async def run_confirmation_sender(services, stop: asyncio.Event) -> None:
    """The long-running task: a failure (Redis away) is logged and retried, never ends the task."""
    while not stop.is_set():
        try:
            await send_queued_confirmations(services, stop=stop)
        except Exception:
            log.exception("sending queued confirmations failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


async def confirmation_sender_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's cleanup context: the sender runs while the services are open and ends before they close.

    It is cancelled and also asked to stop: a cancellation that lands inside redis-py's blocking XREADGROUP
    is not reliably passed on (a test's teardown hung on it), and then it ends after that read."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_confirmation_sender(app[SERVICES], stop))
    yield
    stop.set()
    task.cancel()
    await asyncio.wait({task}, timeout=BLOCK_SECONDS + 2)


async def _send(services, pending: PendingConfirmations) -> int:
    key = await services.keys.get(pending.key_id) if pending.key_id else None
    target = await ListStore(services.redis).get(pending.workspace, pending.list_id)
    if key is None or key.state == "revoked" or key.workspace != pending.workspace or target is None:
        log.warning("dropped %d confirmations for list %s", len(pending.members), pending.list_id)
        return 0
    principal = Principal(key=key, scopes=frozenset(key.scopes))
    return await send_confirmations(services, principal, target, pending.members, pending.applied_ms)
