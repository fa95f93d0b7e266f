"""Subscriber events to mirror rows: the one place that knows how subscriber.* and list.* events (the
interface of issue #12) become rows of the `subscribers` and `memberships` tables. Pure functions.

Each change carries the subscriber's `version` (a counter bumped on every change); of several rows for
one key in a batch only the highest version is kept, and the backends only let a row replace a lower
version, so replays and late events change nothing. `subscriber.deleted` leaves a tombstone row.
Events that do not carry the interface's fields (e.g. a provider's `subscriber.unsubscribed` about a
message, without `data.list`) are not about the mirror and are skipped.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TypeGuard

import msgspec

from analytics.rows import COLUMNS, epoch_ms
from schemas.events import Event
from schemas.subscriber_chunks import CREATED, NewMembers, created_event_id, iso, member_event_id

SUBSCRIBER_COLUMNS = (
    "workspace",
    "id",
    "email",
    "name",
    "attributes",
    "status",
    "created_at",
    "version",
    "deleted",
)
MEMBERSHIP_COLUMNS = ("workspace", "subscriber_id", "list_id", "status", "version")
SUBSCRIBER_TYPES = ("subscriber.created", "subscriber.updated")
MEMBERSHIP_TYPES = ("list.subscribed", "list.unconfirmed", "subscriber.unsubscribed", "list.removed")
DELETED = "subscriber.deleted"
ERASED_VERSION = 2**62  # an erased subscriber's tombstone: no event of theirs can be newer
_SUBSCRIBER_VERSION = SUBSCRIBER_COLUMNS.index("version")
_MEMBERSHIP_VERSION = MEMBERSHIP_COLUMNS.index("version")
_json = msgspec.json.Encoder(order="sorted").encode


class MirrorRows(msgspec.Struct):
    subscribers: list[tuple[Any, ...]]
    memberships: list[tuple[Any, ...]]

    def __bool__(self) -> bool:
        return bool(self.subscribers or self.memberships)


def mirror_rows(events: Iterable[Event]) -> MirrorRows:
    """The newest row per subscriber and per (subscriber, list) among `events`."""
    subscribers: dict[tuple[str, str], tuple[Any, ...]] = {}
    memberships: dict[tuple[str, str, str], tuple[Any, ...]] = {}
    for event in events:
        if event.type in SUBSCRIBER_TYPES or event.type == DELETED:
            row = subscriber_row(event)
            if row is not None:
                _keep_newest(subscribers, (row[0], row[1]), row, _SUBSCRIBER_VERSION)
        elif event.type in MEMBERSHIP_TYPES:
            row = membership_row(event)
            if row is not None:
                _keep_newest(memberships, (row[0], row[1], row[2]), row, _MEMBERSHIP_VERSION)
    return MirrorRows(list(subscribers.values()), list(memberships.values()))


def _keep_newest(rows: dict[Any, tuple[Any, ...]], key: Any, row: tuple[Any, ...], at: int) -> None:
    held = rows.get(key)
    if held is None or row[at] > held[at]:
        rows[key] = row


def subscriber_row(event: Event) -> tuple[Any, ...] | None:
    """A row in SUBSCRIBER_COLUMNS order (created_at in epoch ms), or None if the event lacks fields."""
    data, version = event.data, event.data.get("version")
    if not _is_version(version):
        return None
    if event.type == DELETED:
        subscriber_id = data.get("subscriber")
        if not isinstance(subscriber_id, str):
            return None
        return tombstone(event.workspace, subscriber_id, version)
    record = data.get("subscriber")
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        return None
    attributes = record.get("attributes")
    return (
        event.workspace,
        record["id"],
        str(record.get("email") or "").lower(),
        str(record.get("name") or ""),
        _json(attributes).decode() if isinstance(attributes, dict) and attributes else "{}",
        str(record.get("status") or "active"),
        _created_ms(record.get("created_at"), event.created_at),
        version,
        False,
    )


def tombstone(workspace: str, subscriber_id: str, version: int) -> tuple[Any, ...]:
    """What remains of an erased subscriber: its ids, nothing about the person."""
    return (workspace, subscriber_id, "", "", "{}", "deleted", 0, version, True)


def membership_row(event: Event) -> tuple[Any, ...] | None:
    data = event.data
    subscriber_id, list_id, status = data.get("subscriber"), data.get("list"), data.get("status")
    version = data.get("version")
    if not (isinstance(subscriber_id, str) and isinstance(list_id, str) and isinstance(status, str)):
        return None
    if not _is_version(version):
        return None
    return (event.workspace, subscriber_id, list_id, status, version)


def _is_version(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < ERASED_VERSION


def _created_ms(value: Any, fallback: datetime) -> int:
    if isinstance(value, datetime):
        return epoch_ms(value)
    if isinstance(value, str):
        parsed = _iso_ms(value)
        if parsed is not None:
            return parsed
    return epoch_ms(fallback)


# The subscribers of one import or bulk request share a few `created_at` strings: parse each once.
@functools.lru_cache(maxsize=1024)
def _iso_ms(value: str) -> int | None:
    try:
        return epoch_ms(msgspec.convert(value, datetime))
    except msgspec.ValidationError:
        return None


def columns(rows: list[tuple[Any, ...]], names: tuple[str, ...]) -> dict[str, list[Any]]:
    """Column-oriented rows for a batch insert."""
    values = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return {name: list(column) for name, column in zip(names, values, strict=True)}


# --- new subscribers as columnar chunks (schemas/subscriber_chunks.py) --------------------------------
# A chunk stands for two events per subscriber (`subscriber.created`, then its membership event); the
# sink stores those events and their mirror rows straight from the chunk's columns, without building an
# `Event` or a row tuple per subscriber. `tests/audience/test_change_events.py` checks that the columns
# are exactly what `event_columns(expand(chunk))` and `mirror_rows(expand(chunk))` give.
_json_text = msgspec.json.Encoder().encode


# The `events` columns a chunk's rows fill; every other column holds the same value in all of them
# (CHUNK_CONSTANTS): a backend may send those as constants instead of a column (DuckDB does).
CHUNK_EVENT_COLUMNS = ("id", "workspace", "created_at", "type", "recipient", "recipient_domain", "data")
CHUNK_CONSTANTS: dict[str, Any] = {
    "message_id": "",
    "sender": "",
    "provider": "",
    "server": "",
    "campaign_id": "",
    "tags": [],
    "metadata": "{}",
    "bounce_type": "",
    "url": "",
    "pair_hash": 0,
    "machine_open": False,
    "campaign_variant": "",
    "firsts": 0,
    "demoted_open_ms": 0,
    "demoted_click_ms": 0,
    "demoted_open_provider": "",
    "demoted_open_server": "",
    "demoted_click_provider": "",
    "demoted_click_server": "",
}


class ChunkColumns(msgspec.Struct):
    """A batch's chunks as the columns of the `events` (CHUNK_EVENT_COLUMNS only), `subscribers` and
    `memberships` tables."""

    events: dict[str, list[Any]]
    subscribers: dict[str, list[Any]]
    memberships: dict[str, list[Any]]

    def all_event_columns(self) -> dict[str, list[Any]]:
        """Every column of the `events` rows, in COLUMNS order, the constants repeated."""
        rows = len(self.events["id"])
        return {c: self.events[c] if c in self.events else [CHUNK_CONSTANTS[c]] * rows for c in COLUMNS}


def chunk_columns(chunks: Sequence[NewMembers]) -> ChunkColumns:
    """The events (their CHUNK_EVENT_COLUMNS) and mirror rows of `chunks`, each subscriber once (a chunk
    read twice in one batch is stored once)."""
    if len(chunks) > 1:
        chunks = _unique_rows(chunks)
    events: dict[str, list[Any]] = {c: [] for c in CHUNK_EVENT_COLUMNS}
    subscribers: dict[str, list[Any]] = {c: [] for c in SUBSCRIBER_COLUMNS}
    memberships: dict[str, list[Any]] = {c: [] for c in MEMBERSHIP_COLUMNS}
    for chunk in chunks:
        _add_chunk(chunk, events, subscribers, memberships)
    return ChunkColumns(events, subscribers, memberships)


def _unique_rows(chunks: Sequence[NewMembers]) -> list[NewMembers]:
    seen: set[str] = set()
    kept = []
    for chunk in chunks:
        rows = [i for i, sid in enumerate(chunk.ids) if not (sid in seen or seen.add(sid))]  # type: ignore[func-returns-value]
        if len(rows) == len(chunk.ids):
            kept.append(chunk)
        elif rows:
            kept.append(chunk.only(rows))
    return kept


def _add_chunk(
    chunk: NewMembers,
    events: dict[str, list[Any]],
    subscribers: dict[str, list[Any]],
    memberships: dict[str, list[Any]],
) -> None:
    n, ids, emails = len(chunk.ids), chunk.ids, chunk.emails
    workspace, list_id, status, created_ms = chunk.workspace, chunk.list_id, chunk.status, chunk.created_ms
    created_at = iso(created_ms)
    quoted = [_json_text(e).decode() for e in emails]
    names = [_json_text(name).decode() for name in chunk.names]  # "null" for None
    attributes = [_json(a).decode() if a else "{}" for a in chunk.attributes]
    # subscriber.created's data, keys sorted as analytics/rows.py writes every event's data
    created = [
        f'{{"subscriber":{{"attributes":{a},"created_at":"{created_at}","email":{e},"id":"{i}",'
        f'"name":{m},"status":"active"}},"version":1}}'
        for a, e, i, m in zip(attributes, quoted, ids, names, strict=True)
    ]
    member = [
        f'{{"email":{e},"list":"{list_id}","status":"{status}","subscriber":"{i}","version":2}}'
        for e, i in zip(quoted, ids, strict=True)
    ]
    lowered = [e.lower() for e in emails]
    domains = [e.rpartition("@")[2] if "@" in e else "" for e in lowered]
    both = 2 * n
    events["id"] += [created_event_id(i) for i in ids] + [member_event_id(i) for i in ids]
    events["workspace"] += [workspace] * both
    events["created_at"] += [created_ms] * both
    events["type"] += [CREATED] * n + [chunk.member_type] * n
    events["recipient"] += lowered + lowered
    events["recipient_domain"] += domains + domains
    events["data"] += created + member
    subscribers["workspace"] += [workspace] * n
    subscribers["id"] += ids
    subscribers["email"] += lowered
    subscribers["name"] += [name or "" for name in chunk.names]
    subscribers["attributes"] += attributes
    subscribers["status"] += ["active"] * n
    subscribers["created_at"] += [created_ms] * n
    subscribers["version"] += [1] * n
    subscribers["deleted"] += [False] * n
    memberships["workspace"] += [workspace] * n
    memberships["subscriber_id"] += ids
    memberships["list_id"] += [list_id] * n
    memberships["status"] += [status] * n
    memberships["version"] += [2] * n
