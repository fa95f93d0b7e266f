"""What a batch of subscriber inputs changes: pure, given the current records and `now`.

`plan_upsert` merges inputs into records (attributes merged, a null deletes one, upsert by normalised
email, later items of the batch apply on top of earlier ones) and says what to write, which list
memberships move between status sets, which events to append and which members need a confirmation
mail. Re-planning the same inputs over the result changes nothing (every item `unchanged`), which is what
makes a re-applied import batch idempotent. `store/subscribers.py` does the I/O.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from schemas.audience import ListRecord, Membership, SubscriberInput, SubscriberRecord
from schemas.events import Event
from schemas.ids import new_id

MEMBER_EVENT = {
    "subscribed": "list.subscribed",
    "unconfirmed": "list.unconfirmed",
    "unsubscribed": "subscriber.unsubscribed",
    "removed": "list.removed",  # taken off the list without unsubscribing (no suppression)
}


@dataclass
class Move:
    """A membership leaving one status set of a list (None: it was not a member) for another."""

    subscriber_id: str
    list_id: str
    old: str | None
    new: str


@dataclass
class Plan:
    records: dict[str, SubscriberRecord] = field(default_factory=dict)  # changed, by id
    new_emails: dict[str, str] = field(default_factory=dict)  # email -> id of created subscribers
    moves: list[Move] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)  # per item: created | updated | unchanged
    confirmations: list[tuple[str, str]] = field(default_factory=list)  # (subscriber id, email)

    def count(self, outcome: str) -> int:
        return self.outcomes.count(outcome)


# A batch shares one `now_ms` (and most records' created_ms), so the time conversions of a 10,000-item
# upsert are a handful, not 30,000 (they were a third of planning it: bench/audience.py).
@functools.lru_cache(maxsize=256)
def iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat().replace("+00:00", "Z")


@functools.lru_cache(maxsize=256)
def _moment(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, UTC)


def subscriber_data(record: SubscriberRecord) -> dict[str, Any]:
    """The subscriber as `subscriber.created`/`subscriber.updated` carry it (the fixed interface)."""
    return {
        "id": record.id,
        "email": record.email,
        "name": record.name,
        "attributes": dict(record.attributes),
        "status": record.status,
        "created_at": iso(record.created_ms),
    }


def subscriber_event(kind: str, record: SubscriberRecord, workspace: str, now_ms: int) -> Event:
    record.version += 1
    data = {"subscriber": subscriber_data(record), "version": record.version}
    return _event(kind, workspace, now_ms, data)


def member_event(record: SubscriberRecord, workspace: str, list_id: str, status: str, now_ms: int) -> Event:
    record.version += 1
    data = {
        "subscriber": record.id,
        "email": record.email,
        "list": list_id,
        "status": status,
        "version": record.version,
    }
    return _event(MEMBER_EVENT[status], workspace, now_ms, data)


def _event(kind: str, workspace: str, now_ms: int, data: dict[str, Any]) -> Event:
    return Event(id=new_id("evt"), type=kind, created_at=_moment(now_ms), workspace=workspace, data=data)


def same(a: Any, b: Any) -> bool:
    """Equal in JSON terms: `True` is not `1`, `1` is not `1.0` (a change of type is a change)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def merge_fields(record: SubscriberRecord, name: str | None, patch: dict[str, Any]) -> bool:
    """Apply a name and an attribute patch in place; True if anything changed."""
    changed = False
    if name is not None and name != record.name:
        record.name, changed = name, True
    for key, value in patch.items():
        if value is None:
            if key in record.attributes:
                del record.attributes[key]
                changed = True
        elif key not in record.attributes or not same(record.attributes[key], value):
            record.attributes[key] = value
            changed = True
    return changed


def set_membership(
    plan: Plan, record: SubscriberRecord, workspace: str, list_id: str, status: str, now_ms: int
) -> bool:
    """Move `record` to `status` on `list_id`; False if it already was there."""
    current = record.lists.get(list_id)
    if current is not None and current.status == status:
        return False
    record.lists[list_id] = Membership(status=status, updated_ms=now_ms)  # type: ignore[arg-type]
    plan.moves.append(Move(record.id, list_id, None if current is None else current.status, status))
    plan.events.append(member_event(record, workspace, list_id, status, now_ms))
    if status == "unconfirmed":
        plan.confirmations.append((record.id, record.email))
    return True


def plan_upsert(
    target: ListRecord,
    items: list[SubscriberInput],
    current: dict[str, SubscriberRecord],
    *,
    mode: str,
    now_ms: int,
) -> Plan:
    """`items` carry normalised emails; `current` maps email -> stored record (copies; mutated here)."""
    plan = Plan()
    state = dict(current)
    default_status = "unconfirmed" if target.opt_in == "double" else "subscribed"
    for item in items:
        record = state.get(item.email)
        outcome = "unchanged"
        if record is None:
            record = SubscriberRecord(id=new_id("sub"), email=item.email, created_ms=now_ms, version=0)
            merge_fields(record, item.name, item.attributes)
            plan.events.append(subscriber_event("subscriber.created", record, target.workspace, now_ms))
            state[item.email] = record
            plan.new_emails[item.email] = record.id
            outcome = "created"
        elif mode == "upsert" and merge_fields(record, item.name, item.attributes):
            plan.events.append(subscriber_event("subscriber.updated", record, target.workspace, now_ms))
            outcome = "updated"
        member = record.lists.get(target.id)
        wanted = item.status or (default_status if member is None else member.status)
        if (member is None or mode == "upsert") and set_membership(
            plan, record, target.workspace, target.id, wanted, now_ms
        ):
            outcome = "updated" if outcome == "unchanged" else outcome
        if outcome != "unchanged":
            plan.records[record.id] = record
        plan.outcomes.append(outcome)
    return plan


def copy_record(record: SubscriberRecord) -> SubscriberRecord:
    return msgspec.structs.replace(record, attributes=dict(record.attributes), lists=dict(record.lists))
