"""The HTTP side of the send path (actors/outbound/compose.py): the key's sending-domain restriction,
heavy requests' validation on the ingress's worker thread, and their routing, tracking and enqueue in its
worker process (ingress/worker_process.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from actors.outbound.compose import Accepted, Outcome, Rejected, SendPath, utc_now
from actors.outbound.compose import accept as accept_items
from actors.outbound.validation import PreparedSend, prepare_send
from ingress import worker_process
from ingress.auth import require_sending_domain
from ingress.context import Principal
from ingress.off_loop import HEAVY_CONTENT_CHARS, HEAVY_HTML_CHARS, HEAVY_ITEMS, content_chars, run_heavy
from ingress.problems import ApiError
from schemas.ids import new_id
from schemas.send import SendRequest

__all__ = ["Accepted", "Outcome", "Rejected", "accept", "is_heavy", "prepare_items", "utc_now"]


def prepare_items(
    requests: Sequence[SendRequest], principal: Principal, *, now: datetime, prefixes: Sequence[str]
) -> list[PreparedSend | ApiError]:
    prepared: list[PreparedSend | ApiError] = []
    for request, prefix in zip(requests, prefixes, strict=True):
        try:
            item = prepare_send(
                request, workspace=principal.workspace, message_id=new_id("msg"), now=now, prefix=prefix
            )
            require_sending_domain(principal, item.message.sending_domain)
            prepared.append(item)
        except ApiError as exc:
            prepared.append(exc)
    return prepared


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
    path: SendPath | None = services.send_path
    assert path is not None, "Services.open builds the send path"
    if is_heavy(items):  # routed, tracked and enqueued in the worker process, the GIL left to the loop
        snapshot = await path.routing.get(principal.workspace)
        packed = await run_heavy(True, worker_process.pack_items, items)
        answers = await worker_process.run(
            worker_process.accept,
            services.settings,
            services.redis_url,
            packed,
            snapshot,
            now=now,
            prefixes=prefixes,
            scope=item_scope,
            audit=audit,
        )
        return worker_process.outcomes(answers)
    return await accept_items(
        path, principal.workspace, items, item_scope=item_scope, prefixes=prefixes, now=now, audit=audit
    )


def is_heavy(items: Sequence[PreparedSend]) -> bool:
    """Whether routing, tracking and enqueueing these items is worth a trip to the worker process."""
    if len(items) > HEAVY_ITEMS or sum(content_chars(i.message) for i in items) > HEAVY_CONTENT_CHARS:
        return True
    tracked = sum(len(i.message.html or "") for i in items if i.track_clicks)
    return tracked > HEAVY_HTML_CHARS
