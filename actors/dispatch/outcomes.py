"""What a provider's answer means for one message: a pure decision, recorded by the loop.

Sent → `sent` (+ `message.sent`; the sandbox also reports `message.delivered`), refused recipients
bounce. Permanent → `bounced` when every recipient bounced hard, else `failed`. Throttled/Transient →
retry on this server after the retry policy's delay, or fail over to the next candidate once retries are
exhausted or the server itself is at fault; with no candidate left the message `failed`.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import msgspec

from actors.policies.retry import RetryPolicy
from providers.base import Outcome, Permanent, RecipientRefusal, Sent, Throttled, Transient
from schemas.events import Event, EventMessage
from schemas.ids import new_id
from store.ledger import Claimed


class Decision(msgspec.Struct, kw_only=True):
    status: str  # sent | bounced | failed | queued
    events: list[Event]
    provider_message_id: str | None = None
    retry_at: float | None = None  # epoch seconds: back into the schedule, same server
    failover_to: str | None = None  # next server: onto its dispatch stream now
    suppress: list[str] = []  # hard-bounced recipients
    success: bool = False  # for the circuit breaker
    server_fault: bool = False


# Waiting longer than this on one server when another could take the message now is not worth it.
FAILOVER_AFTER_SECONDS = 10.0


def decide(
    claimed: Claimed,
    outcome: Outcome,
    *,
    server_id: str,
    provider: str,
    now: float,
    retry: RetryPolicy,
    rng: random.Random,
    failover_after: float = FAILOVER_AFTER_SECONDS,
) -> Decision:
    if isinstance(outcome, Sent):
        return _sent(claimed, outcome, server_id, provider, now)
    if isinstance(outcome, Permanent):
        return _permanent(claimed, outcome, server_id, provider, now)
    return _retry_or_fail_over(claimed, outcome, server_id, provider, now, retry, rng, failover_after)


def _sent(claimed: Claimed, outcome: Sent, server: str, provider: str, now: float) -> Decision:
    events = [
        event(
            claimed,
            "message.sent",
            now,
            server,
            provider,
            {"provider_message_id": outcome.provider_message_id, "attempt": claimed.attempts + 1},
        )
    ]
    if provider == "sandbox":
        events.append(event(claimed, "message.delivered", now, server, provider, {"simulated": True}))
    events += [_bounce_event(claimed, r, now, server, provider) for r in outcome.refused]
    status = "delivered" if provider == "sandbox" else "sent"
    return Decision(
        status=status,
        events=events,
        provider_message_id=outcome.provider_message_id,
        success=True,
        suppress=[r.email for r in outcome.refused if r.hard],
    )


def _permanent(claimed: Claimed, outcome: Permanent, server: str, provider: str, now: float) -> Decision:
    recipients = {a.email.lower() for a in claimed.message.recipients}
    hard = {r.email.lower() for r in outcome.bounced if r.hard}
    if outcome.bounced:
        events = [_bounce_event(claimed, r, now, server, provider) for r in outcome.bounced]
        status = "bounced" if hard >= recipients else "failed"
        if status == "failed":
            events.append(event(claimed, "message.failed", now, server, provider, {"reason": outcome.reason}))
    else:
        status, events = (
            "failed",
            [
                event(
                    claimed,
                    "message.failed",
                    now,
                    server,
                    provider,
                    {"reason": outcome.reason, "code": outcome.code},
                )
            ],
        )
    return Decision(status=status, events=events, suppress=sorted(hard), success=True)


def _retry_or_fail_over(
    claimed: Claimed,
    outcome: Throttled | Transient,
    server: str,
    provider: str,
    now: float,
    retry: RetryPolicy,
    rng: random.Random,
    failover_after: float,
) -> Decision:
    server_fault = isinstance(outcome, Transient) and outcome.server_down
    delay = None if server_fault else retry.next_delay(claimed.attempts + 1, rng, outcome.retry_after)
    following = next_candidate(claimed.meta.candidates, server)
    if delay is not None and delay > failover_after and following is not None:
        delay = None  # another server can take it now
    data = {"reason": outcome.reason, "attempt": claimed.attempts + 1}
    if delay is not None:
        deferred = event(
            claimed, "message.deferred", now, server, provider, {**data, "retry_in": round(delay, 3)}
        )
        return Decision(status="queued", events=[deferred], retry_at=now + delay, server_fault=server_fault)
    if following is not None:
        moved = event(claimed, "message.deferred", now, server, provider, {**data, "failover_to": following})
        return Decision(status="queued", events=[moved], failover_to=following, server_fault=server_fault)
    failed = event(
        claimed, "message.failed", now, server, provider, {**data, "reason": f"gave up: {outcome.reason}"}
    )
    return Decision(status="failed", events=[failed], server_fault=server_fault)


def server_down(claimed: Claimed, *, server_id: str, provider: str, now: float) -> Decision | None:
    """The server's circuit is open: move the message to the next candidate, if there is one."""
    following = next_candidate(claimed.meta.candidates, server_id)
    if following is None:
        return None
    moved = event(
        claimed,
        "message.deferred",
        now,
        server_id,
        provider,
        {"reason": "server down", "failover_to": following, "attempt": claimed.attempts},
    )
    return Decision(status="queued", events=[moved], failover_to=following, success=False)


def next_candidate(candidates: list[str], current: str) -> str | None:
    if current not in candidates:
        return candidates[0] if candidates else None
    index = candidates.index(current)
    return candidates[index + 1] if index + 1 < len(candidates) else None


def _bounce_event(
    claimed: Claimed, refusal: RecipientRefusal, now: float, server: str, provider: str
) -> Event:
    data = {
        "bounce": {
            "type": "hard" if refusal.hard else "soft",
            "code": refusal.code,
            "diagnostic": refusal.diagnostic,
        }
    }
    return event(claimed, "message.bounced", now, server, provider, data, to=refusal.email)


def event(
    claimed: Claimed, kind: str, now: float, server: str, provider: str, data: dict, *, to: str | None = None
) -> Event:
    message = claimed.message
    first = message.to[0].email if message.to else (message.recipients[0].email if message.recipients else "")
    return Event(
        id=new_id("evt"),
        type=kind,
        created_at=datetime.fromtimestamp(now, UTC),
        workspace=message.workspace,
        data=data,
        message=EventMessage(
            id=message.id,
            to=to or first,
            from_=message.from_.email,
            provider=provider,
            server=server,
            tags=message.tags,
            metadata=message.metadata,
            campaign_id=message.campaign_id,
        ),
    )
