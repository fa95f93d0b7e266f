"""A hand-built audience: seven subscribers in two lists, their message and custom events, a replay,
a late older update, a deletion and a hostile record; and the exact members each condition must find."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.events import Event, EventMessage
from schemas.ids import new_id

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WS, OTHER = "acme", "beta"
L1, L2 = "lst_" + "1" * 26, "lst_" + "2" * 26
HOSTILE = "pro'); DROP TABLE events; --"
TRIAL = "trial.started"
WEBINAR = "webinar.joined"
IDS = {name: f"sub_{i:026d}" for i, name in enumerate(["ana", "bo", "cy", "di", "ed", "fay", "eve"], 1)}


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def subscriber(
    name: str,
    version: int,
    attributes: dict[str, Any],
    *,
    days: float = 10,
    ws: str = WS,
    kind: str = "subscriber.created",
    display: str | None = None,
) -> Event:
    record = {
        "id": IDS[name],
        "email": f"{name.upper()}@Example.com",
        "name": display if display is not None else name.title(),
        "attributes": attributes,
        "status": "active",
        "created_at": ago(days).isoformat().replace("+00:00", "Z"),
    }
    return Event(
        id=new_id("evt"),
        type=kind,
        created_at=ago(days),
        workspace=ws,
        data={"subscriber": record, "version": version},
    )


def member(name: str, list_id: str, status: str, version: int, ws: str = WS) -> Event:
    kind = {"subscribed": "list.subscribed", "unconfirmed": "list.unconfirmed"}.get(
        status, "subscriber.unsubscribed"
    )
    data = {
        "subscriber": IDS[name],
        "email": f"{name}@example.com",
        "list": list_id,
        "status": status,
        "version": version,
    }
    return Event(id=new_id("evt"), type=kind, created_at=ago(9), workspace=ws, data=data)


def message_event(name: str, kind: str, days: float, *, ws: str = WS, campaign: str | None = None) -> Event:
    message = EventMessage(
        id=new_id("msg"), to=f"{name}@example.com", from_="news@acme.com", campaign_id=campaign
    )
    data = {"bounce": {"type": "hard"}} if kind == "message.bounced" else {}
    return Event(id=new_id("evt"), type=kind, created_at=ago(days), workspace=ws, message=message, data=data)


def custom(name: str, event_name: str, days: float, ws: str = WS) -> Event:
    return Event(
        id=new_id("evt"),
        type=event_name,
        created_at=ago(days),
        workspace=ws,
        data={"email": f"{name}@example.com", "properties": {"total": 10}},
    )


def build() -> tuple[list[Event], list[Event]]:
    """(the events in order, the events delivered again later: replays and a late older update)."""
    ed_v1 = subscriber("ed", 1, {"plan": "pro"})
    ana_order = custom("ana", "order.completed", 10)
    cy_order = custom("cy", "order.completed", 15)
    trial_6_6 = custom("cy", TRIAL, 6.6)
    first = [
        subscriber("ana", 1, {"plan": "pro", "age": 34, "vip": True, "tags": ["a", "b"]}, days=100),
        subscriber("bo", 1, {"plan": "free", "age": 25}),
        subscriber("cy", 1, {"plan": "pro", "age": "34"}),
        subscriber("di", 1, {}),
        ed_v1,
        subscriber("ed", 2, {"plan": "enterprise"}, kind="subscriber.updated"),
        subscriber("fay", 1, {"plan": "pro"}),
        subscriber(
            "eve", 1, {"plan": HOSTILE, "we'ird": 1, "ü名": "x"}, display="'); DROP TABLE subscribers; --"
        ),
        member("ana", L1, "subscribed", 2),
        member("bo", L1, "subscribed", 2),
        member("cy", L1, "subscribed", 2),
        member("cy", L1, "unsubscribed", 3),
        member("di", L2, "subscribed", 2),
        member("ed", L1, "subscribed", 3),
        member("fay", L1, "subscribed", 2),
        member("eve", L1, "subscribed", 2),
        Event(
            id=new_id("evt"),
            type="subscriber.deleted",
            created_at=ago(1),
            workspace=WS,
            data={"subscriber": IDS["fay"], "version": 3},
        ),
        message_event("ana", "message.opened", 5),
        message_event("ana", "message.opened", 40),
        ana_order,
        custom("ana", "order.completed", 20),
        message_event("bo", "message.bounced", 100),
        message_event("bo", "message.opened", 31),
        cy_order,
        message_event("cy", "message.opened", 1),
        message_event("ed", "message.opened", 2, campaign="cmp_A"),
        message_event("fay", "message.opened", 2),
        # The first day of a 7-day window (NOW is 12:00, so it starts 2026-02-22 12:00): answered from the
        # events, not the day counts, so an event earlier that same day must not count. TRIAL_6_6 is
        # replayed in `later`; ed's events are whole days only.
        custom("ana", TRIAL, 7),  # the window's first instant: in
        custom("ana", TRIAL, 2),
        custom("di", TRIAL, 7.4),  # same calendar day as the window's start, 02:24: out
        trial_6_6,  # same calendar day, 21:36: in
        custom("cy", TRIAL, 7.4),
        custom("ed", TRIAL, 30),
        # di's newest open (38 days) is in no campaign, an older one (40 days) in cmp_A: a campaign's
        # window must see the campaign's own newest event.
        message_event("di", "message.opened", 38),
        message_event("di", "message.opened", 40, campaign="cmp_A"),
        # eve's only (so newest) webinar is at the first instant of a 7-day window: in.
        custom("eve", WEBINAR, 7),
        custom("ed", TRIAL, 3),
        # Another workspace: the same people, events that must never count in acme.
        subscriber("bo", 1, {"plan": "pro"}, ws=OTHER),
        message_event("bo", "message.opened", 1, ws=OTHER),
        custom("bo", "order.completed", 1, ws=OTHER),
        custom("bo", "order.completed", 2, ws=OTHER),
    ]
    later = [ana_order, cy_order, cy_order, ed_v1, member("cy", L1, "subscribed", 2), trial_6_6]
    return first, later


# (lists, filter) -> the exact members (names)
CASES: list[tuple[list[str], Any, set[str]]] = [
    (
        [L1],
        {
            "all": [
                {"attribute": "plan", "op": "eq", "value": "pro"},
                {
                    "any": [
                        {"event": "message.opened", "within_days": 30},
                        {"event": "order.completed", "within_days": 90, "count_gte": 2},
                    ]
                },
                {"not": {"event": "message.bounced", "within_days": 365}},
            ]
        },
        {"ana", "cy"},
    ),
    ([L1], {"attribute": "age", "op": "gte", "value": 30}, {"ana"}),
    ([L1], {"attribute": "age", "op": "ne", "value": 34}, {"bo", "cy", "ed", "eve"}),
    ([L1], {"attribute": "age", "op": "eq", "value": "34"}, {"cy"}),
    # A missing attribute reads as '' or 0 in ClickHouse's maps: equality to those must still need the key.
    ([], {"attribute": "age", "op": "eq", "value": 0}, set()),
    ([], {"attribute": "age", "op": "ne", "value": 0}, {"ana", "bo", "cy", "di", "ed", "eve"}),
    ([], {"attribute": "plan", "op": "eq", "value": ""}, set()),
    ([], {"attribute": "plan", "op": "ne", "value": ""}, {"ana", "bo", "cy", "di", "ed", "eve"}),
    ([L1], {"attribute": "tags", "op": "contains", "value": "b"}, {"ana"}),
    ([L1], {"attribute": "plan", "op": "contains", "value": "ro"}, {"ana", "cy", "eve"}),
    ([L1], {"attribute": "name", "op": "contains", "value": "o"}, {"bo"}),
    ([L1], {"attribute": "email", "op": "starts_with", "value": "a"}, {"ana"}),
    ([L1], {"attribute": "list_status", "op": "eq", "value": "unsubscribed"}, {"cy"}),
    ([L1], {"attribute": "list_status", "op": "ne", "value": "unsubscribed"}, {"ana", "bo", "ed", "eve"}),
    ([L1], {"not": {"event": "message.opened", "within_days": 30}}, {"bo", "eve"}),
    ([L1], {"event": "message.opened", "within_days": 30, "campaign_id": "cmp_A"}, {"ed"}),
    ([], {"event": "message.opened", "within_days": 39, "campaign_id": "cmp_A"}, {"ed"}),
    ([], {"event": "message.opened", "within_days": 45, "campaign_id": "cmp_A"}, {"di", "ed"}),
    ([], {"event": "message.opened", "within_days": 39}, {"ana", "bo", "cy", "di", "ed"}),
    ([L1], {"event": "order.completed", "within_days": 90, "count_gte": 2}, {"ana"}),
    ([L1], {"event": "order.completed", "within_days": 12}, {"ana"}),
    ([L1], {"event": "message.opened"}, {"ana", "bo", "cy", "ed"}),
    ([L1], {"attribute": "vip", "op": "eq", "value": True}, {"ana"}),
    ([L1], {"attribute": "vip", "op": "exists"}, {"ana"}),
    ([L1], {"attribute": "vip", "op": "exists", "value": False}, {"bo", "cy", "ed", "eve"}),
    ([L1], {"attribute": "plan", "op": "in", "value": ["free", "enterprise"]}, {"bo", "ed"}),
    ([L1], {"attribute": "plan", "op": "not_in", "value": ["free", "enterprise"]}, {"ana", "cy", "eve"}),
    ([L1], {"attribute": "age", "op": "lt", "value": 30.5}, {"bo"}),
    ([L1], {"attribute": "created_at", "op": "lt", "value": "2026-01-01T00:00:00Z"}, {"ana"}),
    ([L1], {"attribute": "plan", "op": "eq", "value": HOSTILE}, {"eve"}),
    ([L1], {"attribute": "plan", "op": "starts_with", "value": "pro'"}, {"eve"}),
    ([], {"attribute": "plan", "op": "exists"}, {"ana", "bo", "cy", "ed", "eve"}),
    # Window edges (see build): the first, partial day of a window, and counts across it and whole days.
    ([], {"event": TRIAL, "within_days": 7}, {"ana", "cy", "ed"}),
    ([], {"event": TRIAL, "within_days": 7, "count_gte": 2}, {"ana"}),
    ([], {"event": WEBINAR, "within_days": 7}, {"eve"}),
    ([], {"event": WEBINAR, "within_days": 6}, set()),
    ([], {"event": TRIAL, "within_days": 8, "count_gte": 2}, {"ana", "cy"}),
    ([], {"event": TRIAL, "within_days": 8, "count_gte": 3}, set()),
    ([], {"event": TRIAL, "count_gte": 2}, {"ana", "cy", "ed"}),
    ([], {"not": {"event": TRIAL, "within_days": 7}}, {"bo", "di", "eve"}),
    ([], None, {"ana", "bo", "cy", "di", "ed", "eve"}),
    ([L2], None, {"di"}),
    (
        [L1, L2],
        {
            "any": [
                {"attribute": "plan", "op": "eq", "value": "free"},
                {"not": {"attribute": "plan", "op": "exists"}},
            ]
        },
        {"bo", "di"},
    ),
]
