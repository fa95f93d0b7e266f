"""Events for the analytics tests: by hand, and a seeded random set with duplicates and late arrivals."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from schemas.events import Event, EventMessage

NOW = datetime(2026, 4, 19, 12, 0, tzinfo=UTC)
_counter = iter(range(1, 10**9))


def at(hhmm: str, day: datetime = NOW) -> datetime:
    hours, minutes = hhmm.split(":")
    return day.replace(hour=int(hours), minute=int(minutes), second=0, microsecond=0)


def event(
    type_: str,
    when: datetime,
    *,
    workspace: str = "acme",
    message_id: str | None = "msg_a",
    to: str = "ana@example.com",
    provider: str | None = "smtp",
    server: str | None = "srv_1",
    tags: list[str] | None = None,
    campaign_id: str | None = None,
    event_id: str | None = None,
    **data,
) -> Event:
    message = None
    if message_id is not None:
        message = EventMessage(
            id=message_id,
            to=to,
            from_="hello@acme.com",
            provider=provider,
            server=server,
            tags=tags or [],
            metadata={"user": "42"},
            campaign_id=campaign_id,
        )
    return Event(
        id=event_id or f"evt_{next(_counter):026d}",
        type=type_,
        created_at=when,
        workspace=workspace,
        message=message,
        data=data,
    )


TYPES = [
    "message.accepted",
    "message.sent",
    "message.delivered",
    "message.bounced",
    "message.complained",
    "message.opened",
    "message.clicked",
    "message.failed",
    "message.suppressed",
    "subscriber.unsubscribed",
    "message.deferred",
    "campaign.launched",
]
WEIGHTS = [3, 10, 9, 2, 1, 8, 5, 1, 1, 1, 1, 1]


def random_events(
    seed: int, count: int, *, start: datetime, days: int, workspaces: tuple[str, ...]
) -> list[Event]:
    """`count` events spread over `days` from `start`, in no particular time order."""
    rng = random.Random(seed)
    span_ms = days * 86_400_000
    found = []
    for n in range(count):
        type_ = rng.choices(TYPES, WEIGHTS)[0]
        data: dict = {}
        if type_ == "message.bounced":
            data["bounce"] = {
                "type": rng.choice(["hard", "soft"]),
                "code": "550",
                "diagnostic": "no such user",
            }
        if type_ == "message.clicked":
            data["url"] = rng.choice(["https://acme.com/a", "https://acme.com/b", "https://acme.com/c?x=1"])
        has_message = type_ != "campaign.launched"
        found.append(
            event(
                type_,
                start + timedelta(milliseconds=rng.randrange(span_ms)),
                workspace=rng.choice(workspaces),
                message_id=f"msg_{rng.randrange(60):04d}" if has_message else None,
                to=f"user{rng.randrange(8)}@{rng.choice(['example.com', 'Example.org', 'gmail.com'])}",
                provider=rng.choice(["smtp", "amazon-ses", "mailgun", None]),
                server=rng.choice(["srv_1", "srv_2", None]),
                tags=rng.sample(["a", "b", "c"], rng.randrange(3)),
                campaign_id=rng.choice([None, "cmp_1", "cmp_2"]),
                event_id=f"evt_{seed:04d}{n:022d}",
                **data,
            )
        )
    return found
