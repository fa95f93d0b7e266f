"""The pipeline behind every send (API.md): validate → route → track → durable enqueue, shared by the
HTTP send routes (through ingress/send_service.py) and the actors that send (through `Outbound`).

A request's messages cross each boundary once: one routing decision per message over the cached
workspace config, and one Lua enqueue shared by all concurrent requests of this process. No actor is
called on the request path: suppressions are applied by the Dispatcher at send time, in batches
(actors/dispatch/loop.py), so a suppression added after acceptance still stops a queued, scheduled or
retried message, and the 202 costs no Ray round trip.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from actors.outbound.tracking import Tracking
from actors.outbound.validation import PreparedSend
from actors.outbound.work import RunHeavy, run_inline
from actors.policies.routing import MessageFacts, RouteDecision, choose_servers
from actors.policies.suppression import LIST_ID_KEY
from schemas.events import Event, EventMessage
from schemas.ids import new_id
from schemas.message_status import api_status
from schemas.messages import Address
from schemas.problems import ApiError, validation_error
from schemas.send import MessageStatus
from security.link_rewrite import TooManyLinks
from store import keyspace
from store.ledger.records import DERIVED_ITEM
from store.messages import MessageMeta, NewMessage
from store.workspace_routing import RoutingSnapshot, WorkspaceRoutingCache

_rng = random.Random()


class Accepted(msgspec.Struct):
    id: str
    status: MessageStatus
    created_at: datetime
    replayed: bool = False  # the item's idempotency key (or derived id) was enqueued before: nothing new


class Rejected(msgspec.Struct):
    error: ApiError


Outcome = Accepted | Rejected


@dataclass(frozen=True)
class SendPath:
    """What accepting messages needs: the routing snapshot, tracking, the durable enqueue, and where the
    CPU-heavy part runs."""

    routing: WorkspaceRoutingCache
    tracking: Tracking
    enqueue: Callable[[list[NewMessage]], Awaitable[list[str | None]]]
    run: RunHeavy = run_inline


async def accept(
    path: SendPath,
    workspace: str,
    items: Sequence[PreparedSend],
    *,
    item_scope: str,
    prefixes: Sequence[str],
    now: datetime,
    heavy: bool = False,
    audit: bytes | None = None,
) -> list[Outcome]:
    """Route and enqueue valid items; returns one outcome per item, in order. `audit`, the request's
    audit entry, rides with its last message in the same enqueue. `heavy`: run the CPU part through
    `path.run` (the ingress's worker thread)."""
    snapshot = await path.routing.get(workspace)
    outcomes, batch = await path.run(
        heavy,
        build,
        items,
        snapshot,
        path.tracking,
        now=now,
        prefixes=prefixes,
        scope=item_scope,
        audit=audit,
    )
    prior_ids = await path.enqueue([new for _, new in batch]) if batch else []
    return settle(outcomes, batch, prior_ids, now=now)


Built = tuple[list[Outcome | None], list[tuple[int, NewMessage]]]


def build(
    items: Sequence[PreparedSend],
    snapshot: RoutingSnapshot,
    tracking: Tracking,
    *,
    now: datetime,
    prefixes: Sequence[str],
    scope: str,
    audit: bytes | None = None,
) -> Built:
    """The CPU part of `accept` (routing, tracking) over a routing snapshot: the rejected items' outcomes
    and the messages to enqueue, the request's `audit` entry riding with the last. No I/O, so it may run
    on a worker thread or in another process (the ingress's worker process enqueues there, then
    `settle`s: ingress/worker_process.py)."""
    outcomes, batch = _build(items, _Router(snapshot), tracking, now=now, prefixes=prefixes, scope=scope)
    if batch and audit is not None:
        batch[-1] = (batch[-1][0], msgspec.structs.replace(batch[-1][1], audit=audit))
    return outcomes, batch


def settle(
    outcomes: list[Outcome | None],
    batch: Sequence[tuple[int, NewMessage]],
    prior_ids: Sequence[str | None],
    *,
    now: datetime,
) -> list[Outcome]:
    """One outcome per item, in order, once `batch` is enqueued (`prior_ids`: what the enqueue answered)."""
    for (index, new), prior in zip(batch, prior_ids, strict=True):
        outcomes[index] = Accepted(
            prior or new.message.id, "queued" if prior else api_status(new.status), now, bool(prior)
        )
    done = [outcome for outcome in outcomes if outcome is not None]
    assert len(done) == len(outcomes), "every item was rejected by _build or enqueued here"
    return done


def _build(
    items: Sequence[PreparedSend],
    route: _Router,
    tracking: Tracking,
    *,
    now: datetime,
    prefixes: Sequence[str],
    scope: str,
) -> tuple[list[Outcome | None], list[tuple[int, NewMessage]]]:
    """The CPU part of `accept` (routing, tracking): no I/O, so it may run on a worker thread."""
    outcomes: list[Outcome | None] = [None] * len(items)
    batch: list[tuple[int, NewMessage]] = []
    for index, item in enumerate(items):
        try:
            new = _new_message(item, route, tracking, now=now, prefix=prefixes[index], item_scope=scope)
        except ApiError as exc:
            outcomes[index] = Rejected(exc)
            continue
        batch.append((index, new))
    return outcomes, batch


def _new_message(
    item: PreparedSend, route: _Router, tracking: Tracking, *, now: datetime, prefix: str, item_scope: str
) -> NewMessage:
    decision = route(item, prefix)
    try:
        message, links = tracking.prepare(
            item.message,
            track_opens=item.track_opens,
            track_clicks=item.track_clicks,
            unsubscribe=item.unsubscribe,
            # Mail sent for lists (campaigns) unsubscribes from those lists, not from the workspace.
            list_id=item.message.metadata.get(LIST_ID_KEY) or None,
        )
    except TooManyLinks as exc:
        raise validation_error(prefix + "/html", str(exc), "too_many_tracked_links") from None
    status = "scheduled" if item.send_at else "queued"
    created_ms = int(now.timestamp() * 1000)
    meta = MessageMeta(
        created_ms=created_ms,
        candidates=decision.candidates,
        purpose=item.purpose,
        send_at_ms=int(item.send_at.timestamp() * 1000) if item.send_at else None,
        track_opens=item.track_opens,
        track_clicks=item.track_clicks,
        unsubscribe=item.unsubscribe,
        links=links,
    )
    events = [_event(message, "message.scheduled" if status == "scheduled" else "message.accepted", now, {})]
    if item.derived_id:  # the message hash is the record (store/ledger/scripts.py, ENQUEUE)
        item_key: str | None = DERIVED_ITEM
    elif item.item_key:
        item_key = keyspace.send_item(
            message.workspace, item_scope, item.item_key, api_key=item.item_key_owner
        )
    else:
        item_key = None
    return NewMessage(
        message=message,
        meta=meta,
        status=status,
        server=decision.candidates[0],
        events=events,
        item_key=item_key,
        fresh_id=not item.derived_id,
        ranged=item.ranged,
    )


class _Router:
    """Routing decisions for one batch; without weighted rules a decision depends only on the message's
    facts, so equal facts (a bulk to one domain) are decided once."""

    def __init__(self, snapshot) -> None:
        self.snapshot = snapshot
        self.memo: dict[tuple, RouteDecision] | None = (
            None if any(r.strategy == "weighted" for r in snapshot.rules) else {}
        )

    def __call__(self, item: PreparedSend, prefix: str) -> RouteDecision:
        message = item.message
        facts = MessageFacts(
            purpose=item.purpose,
            from_domain=message.sending_domain,
            to_domains=sorted({a.domain for a in message.recipients}),
            tags=message.tags,
        )
        if self.memo is None:
            return _route(item, facts, self.snapshot, prefix)
        key = (
            facts.purpose,
            facts.from_domain,
            tuple(facts.to_domains),
            tuple(facts.tags),
            item.forced_server,
        )
        decision = self.memo.get(key)
        if decision is None:
            decision = self.memo[key] = _route(item, facts, self.snapshot, prefix)
        return decision


def _route(item: PreparedSend, facts: MessageFacts, snapshot, prefix: str) -> RouteDecision:
    message = item.message
    decision = choose_servers(
        facts, snapshot.rules, snapshot.servers, forced_server=item.forced_server, rng=_rng
    )
    if decision.candidates:
        return decision
    if item.forced_server is not None:
        raise validation_error(
            prefix + "/routing/server", f"cannot use this server: {decision.reason}", decision.reason
        )
    # Every eligible server is down: queue on the best one anyway; the message waits, it is not refused.
    waiting = sorted(
        (s for s in snapshot.servers if _may_send(s, message.sending_domain)),
        key=lambda s: (s.priority, s.id),
    )
    if not waiting:
        raise validation_error(
            prefix + "/from", f"no sending server may send from {message.sending_domain}", "no_sending_server"
        )
    return RouteDecision([s.id for s in waiting], None, "all_down")


def _may_send(server, domain: str) -> bool:
    return not server.domains or any(domain == d or domain.endswith("." + d) for d in server.domains)


def _event(message, kind: str, now: datetime, data: dict, *, to: str | None = None) -> Event:
    first: Address | None = (
        message.to[0] if message.to else (message.recipients[0] if message.recipients else None)
    )
    return Event(
        id=new_id("evt"),
        type=kind,
        created_at=now,
        workspace=message.workspace,
        data=data,
        message=EventMessage(
            id=message.id,
            to=to or (first.email if first else ""),
            from_=message.from_.email,
            tags=message.tags,
            metadata=message.metadata,
            campaign_id=message.campaign_id,
        ),
    )


def utc_now() -> datetime:
    return datetime.now(UTC)
