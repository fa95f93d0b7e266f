"""`Outbound`: the send path for code that is not an HTTP handler (the campaign and automation runners).

The same steps as `POST /v1/send/bulk`, in the same order and through the same modules: render a
`template` (actors/outbound/templating.py), validate (validation.py), route, track and enqueue
atomically (compose.py). So routing rules, quotas, failover, suppressions at dispatch, tracking, the
RFC 8058 headers, webhooks and analytics apply to a runner's message exactly as to an API send.

Exactly once: an item may carry a `message_id` derived from what it is for
(`schemas.ids.derived_id("msg", millis, campaign, subscriber)`). That id is also the item's idempotency
key, and the enqueue script treats an existing message hash of that id as a prior send, so an item
enqueued again (a chunk replayed after a crash) comes back `replayed` and enqueues nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec
import redis.asyncio as aioredis

from actors.outbound.compose import Accepted, Outcome, Rejected, SendPath, accept
from actors.outbound.templating import render_sends
from actors.outbound.tracking import tracking_for
from actors.outbound.validation import PreparedSend, SharedSend
from schemas.ids import is_id, new_id
from schemas.problems import ApiError, validation_error
from schemas.send import SendRequest
from schemas.settings import Settings
from store.messages import MessageStore
from store.templates import TemplateStore
from store.workspace_routing import WorkspaceRoutingCache

__all__ = ["Accepted", "Outbound", "OutboundItem", "Outcome", "Rejected"]

ITEM_SCOPE = "outbound"  # the per-message idempotency keys of derived ids (store/keyspace.send_item)


class OutboundItem(msgspec.Struct, kw_only=True):
    request: SendRequest  # may carry `template` {id, version, variables}, rendered here
    message_id: str | None = None  # a derived `msg_` id; None: a new one
    campaign_id: str | None = None  # recorded on the message and on every event of it
    # `message_id` is a packed campaign's position id (actors/campaigns/body.message_id_at): indexed as
    # its campaign's range (store/ledger/index_ranges.py)
    ranged: bool = False


class Outbound:
    """One per runner process: a routing cache (5 s TTL), the template store and the ledger."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.templates = TemplateStore(redis)
        messages = MessageStore(redis, item_retention_seconds=settings.idempotency_retention_seconds)
        self.path = SendPath(
            routing=WorkspaceRoutingCache(redis),
            tracking=tracking_for(settings),
            enqueue=messages.enqueue,
        )

    async def send(self, workspace: str, items: Sequence[OutboundItem], *, now: datetime) -> list[Outcome]:
        """One outcome per item, in order: `Accepted` (durably queued, or `replayed`) or `Rejected` with
        the problem an API send would have answered (pointers under `#/items/<i>`)."""
        prefixes = [f"#/items/{i}" for i in range(len(items))]
        rendered = await render_sends(
            self.templates, workspace, [item.request for item in items], prefixes, heavy=False
        )
        outcomes: list[Outcome | None] = [None] * len(items)
        prepared: list[PreparedSend] = []
        positions: list[int] = []
        shared = SharedSend(workspace=workspace, now=now)
        for index, (item, request) in enumerate(zip(items, rendered, strict=True)):
            try:
                if isinstance(request, ApiError):
                    raise request
                prepared.append(_prepare(item, request, shared, prefix=prefixes[index]))
                positions.append(index)
            except ApiError as exc:
                outcomes[index] = Rejected(exc)
        if prepared:
            accepted = await accept(
                self.path,
                workspace,
                prepared,
                item_scope=ITEM_SCOPE,
                prefixes=[prefixes[i] for i in positions],
                now=now,
            )
            for index, outcome in zip(positions, accepted, strict=True):
                outcomes[index] = outcome
        done = [outcome for outcome in outcomes if outcome is not None]
        assert len(done) == len(items)
        return done


def _prepare(item: OutboundItem, request: SendRequest, shared: SharedSend, *, prefix: str) -> PreparedSend:
    derived = item.message_id is not None
    if item.message_id is not None and not is_id(item.message_id, "msg"):
        raise validation_error(prefix + "/message_id", "not a message id")
    prepared = shared.prepare(request, message_id=item.message_id or new_id("msg"), prefix=prefix)
    message = prepared.message
    if item.campaign_id is not None:
        message = msgspec.structs.replace(message, campaign_id=item.campaign_id)
    return msgspec.structs.replace(
        prepared,
        message=message,
        item_key=item.message_id if derived else prepared.item_key,
        derived_id=derived,
        ranged=item.ranged and derived,
    )
