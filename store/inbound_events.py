"""Recording verified inbound provider events: dedupe, correlate, move the status, append, in one MULTI.

For one webhook request of one sending server:
1. correlate each `ProviderEvent` to a message of the server's workspace: the `our_message_id` hint
   first, else the `provider_message` mapping the Dispatcher wrote (`"{workspace}|{id}"`); a mapping to
   another workspace is ignored, so a server can only ever touch its own workspace's messages;
2. WATCH the dedupe keys (`inbound_event_seen(provider, server_id, provider_event_id)`: per server)
   and the message hashes,
   read them, and plan: an event already seen is a duplicate; an event for no message of ours is
   counted in `INBOUND_UNMATCHED`; the provider's own `message.sent` is not recorded again (our
   Dispatcher recorded `message.sent` when the provider's API took the message); every other event
   becomes our `Event` and may move its message's status forward (`store.ledger.statuses`);
3. add workspace suppressions for new hard bounces and complaints (an idempotent upsert, written
   before the commit so a crash after it cannot lose them; a retried request writes them again);
4. MULTI: the dedupe keys (kept `SEEN_TTL_SECONDS`), the status changes and the events on their
   timelines and as one event-stream entry (both through the `MessageLedger`), the unmatched counter.
   redis-py's `Redis.transaction` runs 2-4 again when a concurrent change to a watched key aborts the
   commit; after `MAX_COMMIT_ATTEMPTS` plans the request fails and the provider retries.

Event ids are derived from `(provider, server_id, provider_event_id)`, so even an event recorded twice
(after its dedupe key expired) carries the same `evt_` id and every downstream consumer drops the copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
import redis.asyncio as aioredis

from schemas.domain_names import normalise_email
from schemas.events import Event, EventMessage
from schemas.ids import derived_id, has_prefix
from schemas.messages import OutboundMessage
from schemas.provider_events import ProviderEvent
from schemas.suppressions import Reason, SuppressionEntry
from store import keyspace
from store.ledger import MessageLedger
from store.ledger.statuses import forward_status
from store.suppressions import add_suppressions

SEEN_TTL_SECONDS = 7 * 24 * 3600
MAX_COMMIT_ATTEMPTS = 20
NOT_RECORDED = frozenset({"message.sent"})


class InboundConflict(Exception):
    """The commit lost the race against concurrent writers too many times; the provider will retry."""


class InboundOutcome(msgspec.Struct, kw_only=True):
    received: int
    recorded: int
    duplicates: int = 0
    unmatched: int = 0
    not_recorded: int = 0
    events: list[Event] = []


def to_event(
    provider_event: ProviderEvent, *, workspace: str, server_id: str, message: OutboundMessage
) -> Event:
    millis = max(0, int(provider_event.occurred_at.timestamp() * 1000))
    first = next((a.email for a in message.recipients), "")
    return Event(
        id=derived_id("evt", millis, provider_event.provider, server_id, provider_event.provider_event_id),
        type=provider_event.type,
        created_at=provider_event.occurred_at,
        workspace=workspace,
        data=provider_event.data,
        message=EventMessage(
            id=message.id,
            to=provider_event.recipient or first,
            from_=message.from_.email,
            provider=provider_event.provider,
            server=server_id,
            tags=message.tags,
            metadata=message.metadata,
            campaign_id=message.campaign_id,
        ),
    )


def suppressions_for(events: Sequence[Event]) -> list[SuppressionEntry]:
    """Workspace suppressions owed for hard bounces and complaints (addresses that are not valid skipped)."""
    entries = []
    for event in events:
        bounce = event.data.get("bounce") if event.type == "message.bounced" else None
        hard = isinstance(bounce, dict) and bounce.get("type") == "hard"
        if (hard or event.type == "message.complained") and event.message is not None:
            reason: Reason = "bounce" if hard else "complaint"
            try:
                email = normalise_email(event.message.to)
            except ValueError:
                continue
            entries.append(SuppressionEntry(email=email, reason=reason, scope="workspace", source=reason))
    return entries


@dataclass
class _Plan:
    seen: list[tuple[str, str]] = field(default_factory=list)  # dedupe key -> what it recorded
    statuses: dict[str, str] = field(default_factory=dict)  # message id -> new status
    events: list[Event] = field(default_factory=list)
    duplicates: int = 0
    unmatched: int = 0
    not_recorded: int = 0


class InboundRecorder:
    def __init__(self, redis: aioredis.Redis, *, seen_ttl_seconds: int = SEEN_TTL_SECONDS) -> None:
        self.redis = redis
        self.seen_ttl_seconds = seen_ttl_seconds
        self.ledger = MessageLedger(redis)

    async def record(
        self, *, workspace: str, server_id: str, provider: str, events: Sequence[ProviderEvent]
    ) -> InboundOutcome:
        if not events:
            return InboundOutcome(received=0, recorded=0)
        messages = await self.correlate(workspace, events)
        seen_keys = [keyspace.inbound_event_seen(provider, server_id, e.provider_event_id) for e in events]
        message_ids = sorted({m.id for m in messages if m is not None})
        attempts = 0

        async def commit(pipe: aioredis.client.Pipeline) -> _Plan:
            nonlocal attempts
            attempts += 1
            if attempts > MAX_COMMIT_ATTEMPTS:
                raise InboundConflict(
                    f"gave up recording {len(events)} {provider} events after {MAX_COMMIT_ATTEMPTS} tries"
                )
            plan = await self._plan(workspace, server_id, events, messages, seen_keys, message_ids)
            if entries := suppressions_for(plan.events):
                await add_suppressions(self.redis, workspace, entries)
            pipe.multi()
            self._write(pipe, workspace, provider, plan)
            return plan

        watched = [*seen_keys, *self.ledger.keys(workspace, message_ids)]
        plan = await self.redis.transaction(commit, *watched, value_from_callable=True)
        return InboundOutcome(
            received=len(events),
            recorded=len(plan.events),
            duplicates=plan.duplicates,
            unmatched=plan.unmatched,
            not_recorded=plan.not_recorded,
            events=plan.events,
        )

    async def correlate(
        self, workspace: str, events: Sequence[ProviderEvent]
    ) -> list[OutboundMessage | None]:
        """Each event's message in `workspace` (hint first, then the provider id mapping), or None."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pid = (event.provider_message_id or "").strip().strip("<>")
                if pid:
                    pipe.get(keyspace.provider_message(event.provider, pid))
                else:
                    pipe.echo(b"")
            mapped = [_own_message_id(raw, workspace) for raw in await pipe.execute()]
        hints = [
            e.our_message_id if e.our_message_id and has_prefix(e.our_message_id, "msg") else None
            for e in events
        ]
        wanted = sorted({i for i in (*hints, *mapped) if i is not None})
        found = await self.ledger.messages(workspace, wanted)
        return [
            found.get(hint or "") or found.get(mid or "") for hint, mid in zip(hints, mapped, strict=True)
        ]

    async def _plan(
        self,
        workspace: str,
        server_id: str,
        events: Sequence[ProviderEvent],
        messages: Sequence[OutboundMessage | None],
        seen_keys: list[str],
        message_ids: list[str],
    ) -> _Plan:
        seen = await self.redis.mget(seen_keys)
        statuses = await self.ledger.statuses(workspace, message_ids)
        plan, fresh = _Plan(), set()
        for event, message, key, was_seen in zip(events, messages, seen_keys, seen, strict=True):
            if was_seen is not None or key in fresh:
                plan.duplicates += 1
                continue
            fresh.add(key)
            if message is None or message.id not in statuses:
                plan.unmatched += 1
                plan.seen.append((key, "unmatched"))
            elif event.type in NOT_RECORDED:
                plan.not_recorded += 1
                plan.seen.append((key, "not-recorded"))
            else:
                recorded = to_event(event, workspace=workspace, server_id=server_id, message=message)
                plan.events.append(recorded)
                plan.seen.append((key, recorded.id))
                _move(plan, statuses, message.id, event.type)
        return plan

    def _write(self, pipe: aioredis.client.Pipeline, workspace: str, provider: str, plan: _Plan) -> None:
        for key, value in plan.seen:
            pipe.set(key, value, ex=self.seen_ttl_seconds)
        self.ledger.set_statuses(pipe, workspace, plan.statuses)
        self.ledger.append_events(pipe, plan.events)
        if plan.unmatched:
            pipe.hincrby(keyspace.INBOUND_UNMATCHED, provider, plan.unmatched)


def _move(plan: _Plan, statuses: dict[str, str], message_id: str, event_type: str) -> None:
    current = plan.statuses.get(message_id, statuses[message_id])
    target = forward_status(current, event_type)
    if target is not None:
        plan.statuses[message_id] = target


def _own_message_id(raw: bytes | None, workspace: str) -> str | None:
    """The message id of a `"{workspace}|{id}"` mapping, only if it belongs to `workspace`."""
    if not raw:
        return None
    owner, _, message_id = raw.decode().partition("|")
    return message_id if owner == workspace and has_prefix(message_id, "msg") else None
