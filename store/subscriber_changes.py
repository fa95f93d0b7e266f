"""What a batch of subscriber inputs changes: pure, given the current records and `now`.

`plan_upsert` merges inputs into records (attributes merged, a null deletes one, upsert by normalised
email, later items of the batch apply on top of earlier ones) and says what to write, which list
memberships move between status sets, which events to append and which members need a confirmation
mail. Re-planning the same inputs over the result changes nothing (every item `unchanged`), which is what
makes a re-applied import batch idempotent. `store/subscribers.py` does the I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from schemas.audience import ListRecord, Membership, SubscriberInput, SubscriberRecord
from schemas.ids import new_id, new_ids
from schemas.subscriber_chunks import MEMBER_EVENT, NewMembers, iso
from schemas.subscriber_chunks import moment as _moment


# --- events, built to be encoded at once ------------------------------------------------------------
# A change's events are encoded as msgpack into one stream entry (`store/subscribers.append_events`) and
# read back as `schemas.events.Event`. Building them as these small structs instead (fields in the same
# order as `Event` and its `data` dicts, so the bytes are the same: `tests/audience/test_change_events.py`)
# spares a dict, a copy and an `Event` per event: two events per new subscriber of a 10,000-item upsert.
class SubscriberFacts(msgspec.Struct):
    """The subscriber as `subscriber.created`/`subscriber.updated` carry it (the fixed interface)."""

    id: str
    email: str
    name: str | None
    attributes: dict[str, Any]
    status: str
    created_at: str


class SubscriberChange(msgspec.Struct):
    subscriber: SubscriberFacts
    version: int


class MemberChange(msgspec.Struct):
    subscriber: str
    email: str
    list_id: str = msgspec.field(name="list")
    status: str
    version: int


class ChangeEvent(msgspec.Struct):
    """Encodes as `schemas.events.Event` with no `message` does; `data` is one of the structs above or a
    dict (an erasure's)."""

    id: str
    type: str
    created_at: datetime
    workspace: str
    message: None = None
    data: Any = None


class EventIds:
    """Event ids for one change, made a thousand at a time (`schemas.ids.new_ids`)."""

    def __init__(self, prefix: str = "evt") -> None:
        self.prefix = prefix
        self._free: list[str] = []

    def __call__(self) -> str:
        if not self._free:
            self._free = new_ids(self.prefix, 1024)
        return self._free.pop()

    def reserve(self, count: int) -> list[str]:
        """The free ids, at least `count` of them (a hot loop pops them directly)."""
        if len(self._free) < count:
            self._free.extend(new_ids(self.prefix, count - len(self._free)))
        return self._free


@dataclass
class Plan:
    records: dict[str, SubscriberRecord] = field(default_factory=dict)  # changed, by id
    new_emails: dict[str, str] = field(default_factory=dict)  # email -> id of created subscribers
    # (list id, old status or None for a new member, new status) -> ids of the members that move so
    moves: dict[tuple[str, str | None, str], list[str]] = field(default_factory=dict)
    events: list[ChangeEvent] = field(default_factory=list)
    # the subscribers created, by membership status: their two events each as one columnar chunk
    # (`schemas/subscriber_chunks.py`), appended to the stream before `events`
    new_members: dict[str, NewMembers] = field(default_factory=dict)
    outcomes: list[str] = field(default_factory=list)  # per item: created | updated | unchanged
    confirmations: list[tuple[str, str]] = field(default_factory=list)  # (subscriber id, email)
    event_ids: EventIds = field(default_factory=EventIds)

    def count(self, outcome: str) -> int:
        return self.outcomes.count(outcome)

    def move(self, subscriber_id: str, list_id: str, old: str | None, new: str) -> None:
        key = (list_id, old, new)
        moved = self.moves.get(key)
        if moved is None:
            self.moves[key] = [subscriber_id]
        else:
            moved.append(subscriber_id)


# A batch shares one `now_ms` (and most records' created_ms), so the time conversions of a 10,000-item
# upsert are a handful, not 30,000 (they were a third of planning it): `iso` and `_moment` are cached.


def subscriber_data(record: SubscriberRecord) -> SubscriberFacts:
    """The subscriber as the events carry it, a snapshot (later changes of the batch do not show)."""
    return SubscriberFacts(
        record.id,
        record.email,
        record.name,
        dict(record.attributes),
        record.status,
        iso(record.created_ms),
    )


def subscriber_event(
    kind: str, record: SubscriberRecord, workspace: str, now_ms: int, ids: EventIds | None = None
) -> ChangeEvent:
    record.version += 1
    data = SubscriberChange(subscriber_data(record), record.version)
    return ChangeEvent(_event_id(ids), kind, _moment(now_ms), workspace, None, data)


def member_event(
    record: SubscriberRecord,
    workspace: str,
    list_id: str,
    status: str,
    now_ms: int,
    ids: EventIds | None = None,
) -> ChangeEvent:
    record.version += 1
    data = MemberChange(record.id, record.email, list_id, status, record.version)
    return ChangeEvent(_event_id(ids), MEMBER_EVENT[status], _moment(now_ms), workspace, None, data)


def _event_id(ids: EventIds | None) -> str:
    return new_id("evt") if ids is None else ids()


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
    plan.move(record.id, list_id, None if current is None else current.status, status)
    plan.events.append(member_event(record, workspace, list_id, status, now_ms, plan.event_ids))
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
    """`items` carry normalised emails; `current` maps email -> stored record (copies; mutated here).

    A new address (the whole of a first import) takes a straight path: its record is built whole, with
    `subscriber.created` at version 1 and its membership event at version 2, exactly what the general
    path (merge into an empty record, then `set_membership`) gives, without its per-field steps."""
    plan = Plan()
    state = dict(current)
    workspace, list_id, ids = target.workspace, target.id, plan.event_ids
    default_status = "unconfirmed" if target.opt_in == "double" else "subscribed"
    # per status of a new member: its (shared, frozen) membership, the ids moving into that status set,
    # the chunk its two events go into
    joins: dict[str, tuple[Membership, Callable[[str], None], NewMembers]] = {}
    new_subscriber_ids: list[str] = []
    events, outcomes, records = plan.events, plan.outcomes, plan.records
    for item in items:
        record = state.get(item.email)
        if record is None:
            if not new_subscriber_ids:
                new_subscriber_ids = new_ids("sub", 1024)
            subscriber_id, status = new_subscriber_ids.pop(), item.status or default_status
            patch = item.attributes
            if None in patch.values():
                patch = {k: v for k, v in patch.items() if v is not None}
            join = joins.get(status)
            if join is None:
                membership = Membership(status=status, updated_ms=now_ms)  # type: ignore[arg-type]
                moved = plan.moves.setdefault((list_id, None, status), [])
                chunk = plan.new_members[status] = NewMembers(workspace, list_id, status, now_ms)
                join = joins[status] = (membership, moved.append, chunk)
            membership, move, chunk = join
            record = SubscriberRecord(
                id=subscriber_id,
                email=item.email,
                name=item.name,
                attributes=dict(patch),
                created_ms=now_ms,
                version=2,
                lists={list_id: membership},
            )
            chunk.ids.append(subscriber_id)  # `NewMembers.add`, inlined: a call per row costs ~0.6 µs
            chunk.emails.append(item.email)
            chunk.names.append(item.name)
            chunk.attributes.append(patch)
            move(subscriber_id)
            if status == "unconfirmed":
                plan.confirmations.append((subscriber_id, item.email))
            state[item.email] = records[subscriber_id] = record
            plan.new_emails[item.email] = subscriber_id
            outcomes.append("created")
            continue
        outcome = "unchanged"
        if mode == "upsert" and merge_fields(record, item.name, item.attributes):
            events.append(subscriber_event("subscriber.updated", record, workspace, now_ms, ids))
            outcome = "updated"
        member_now = record.lists.get(list_id)
        wanted = item.status or (default_status if member_now is None else member_now.status)
        if (member_now is None or mode == "upsert") and set_membership(
            plan, record, workspace, list_id, wanted, now_ms
        ):
            outcome = "updated"
        if outcome != "unchanged":
            records[record.id] = record
        outcomes.append(outcome)
    return plan


def copy_record(record: SubscriberRecord) -> SubscriberRecord:
    return msgspec.structs.replace(record, attributes=dict(record.attributes), lists=dict(record.lists))
