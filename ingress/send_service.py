"""The HTTP side of the send path (actors/outbound/compose.py): the key's sending-domain restriction
(ingress/send_work.py's `prepare_items`), a light request's enqueue through the shared coalesced ledger,
and a heavy request handed whole to the ingress's worker process (`in_worker`, ingress/worker_process.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from actors.outbound.compose import Accepted, Outcome, Rejected, SendPath, utc_now
from actors.outbound.compose import accept as accept_items
from actors.outbound.validation import PreparedSend
from ingress import send_work, worker_process
from ingress.context import Principal
from ingress.off_loop import HEAVY_CONTENT_CHARS, HEAVY_HTML_CHARS, HEAVY_ITEMS, content_chars, run_heavy
from ingress.send_work import Answer, SendCall, prepare_items
from store.templates import TemplateStore

__all__ = ["Accepted", "Outcome", "Rejected", "accept", "in_worker", "is_heavy", "prepare_items", "utc_now"]


async def in_worker(services, work: send_work.Work, raw: bytes, call: SendCall) -> Answer:
    """A heavy request whole in the worker process (`send_work.bulk` or `send_work.single`), its body
    shipped as bytes once; a refusal is raised. Sends with a template take a second trip with the
    versions the first one named."""
    path: SendPath | None = services.send_path
    assert path is not None, "Services.open builds the send path"
    workspace = call.principal.workspace
    snapshot = await path.routing.get(workspace)
    settings, url = services.settings, services.redis_url
    answer = await worker_process.run(send_work.handle, work, settings, url, raw, snapshot, call, None)
    if answer.templates is not None:
        templates = TemplateStore(services.redis)
        found = await asyncio.gather(*(templates.get_version(workspace, t, v) for t, v in answer.templates))
        versions = dict(zip(answer.templates, found, strict=True))
        answer = await worker_process.run(
            send_work.handle, work, settings, url, raw, snapshot, call, versions
        )
    if answer.refusal is not None:
        raise answer.refusal.error()
    return answer


async def accept(
    services,
    principal: Principal,
    items: Sequence[PreparedSend],
    *,
    item_scope: str,
    prefixes: Sequence[str],
    now: datetime,
    audit: bytes | None = None,
) -> list[Outcome]:
    """A light request's items: enqueued with every concurrent request's through the shared script, or,
    when a template rendered them heavy, routed, tracked and enqueued in the worker process."""
    path: SendPath | None = services.send_path
    assert path is not None, "Services.open builds the send path"
    if is_heavy(items):
        snapshot = await path.routing.get(principal.workspace)
        packed = await run_heavy(True, send_work.pack_items, items)
        answers = await worker_process.run(
            send_work.accept_packed,
            services.settings,
            services.redis_url,
            packed,
            snapshot,
            now=now,
            prefixes=prefixes,
            scope=item_scope,
            audit=audit,
        )
        return send_work.unpacked(answers)
    return await accept_items(
        path, principal.workspace, items, item_scope=item_scope, prefixes=prefixes, now=now, audit=audit
    )


def is_heavy(items: Sequence[PreparedSend]) -> bool:
    """Whether routing, tracking and enqueueing these items is worth a trip to the worker process."""
    if len(items) > HEAVY_ITEMS or sum(content_chars(i.message) for i in items) > HEAVY_CONTENT_CHARS:
        return True
    tracked = sum(len(i.message.html or "") for i in items if i.track_clicks)
    return tracked > HEAVY_HTML_CHARS
