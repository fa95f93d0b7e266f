"""Events to rows and back: the one place that knows how an `Event` is laid out in the analytics tables.

Pure functions. Both backends store the same columns; absent values are empty strings (ClickHouse
discourages Nullable, and one convention keeps the backends' answers identical). Times are whole
milliseconds since the epoch, UTC, so sub-millisecond precision is dropped on the way in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from schemas.event_subjects import event_email
from schemas.events import Event, EventMessage

# The insert column order of the `events` table in both backends (migrations 0001, then 0005 appended
# `machine_open` and `campaign_variant`, then the campaign aggregates' migration the last seven,
# `AGGREGATE_COLUMNS`).
COLUMNS: tuple[str, ...] = (
    "id",
    "workspace",
    "created_at",
    "type",
    "message_id",
    "recipient",
    "recipient_domain",
    "sender",
    "provider",
    "server",
    "campaign_id",
    "tags",
    "metadata",
    "bounce_type",
    "url",
    "data",
    "pair_hash",
    "machine_open",
    "campaign_variant",
    "firsts",
    "demoted_open_ms",
    "demoted_click_ms",
    "demoted_open_provider",
    "demoted_open_server",
    "demoted_click_provider",
    "demoted_click_server",
)
# The last seven (campaign aggregates, ClickHouse migration 0009 / DuckDB 0006): `firsts` is a bitmask
# of FIRST_OPEN / FIRST_CLICK / FIRST_LINK, decided by the store before the insert
# (analytics/campaign_firsts.py); `demoted_*_ms` / `_provider` / `_server` are the time and the server
# of the open / click this event displaced as its pair's first (0: none). event_row leaves them empty.
AGGREGATE_COLUMNS: tuple[str, ...] = COLUMNS[COLUMNS.index("firsts") :]
# What a query reads back to rebuild an Event (created_at as epoch milliseconds).
READ_COLUMNS: tuple[str, ...] = (
    "id",
    "workspace",
    "created_at",
    "type",
    "message_id",
    "recipient",
    "sender",
    "provider",
    "server",
    "campaign_id",
    "tags",
    "metadata",
    "data",
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_json_encode = msgspec.json.Encoder(order="sorted").encode
_decode_object = msgspec.json.Decoder(dict[str, Any]).decode
_decode_metadata = msgspec.json.Decoder(dict[str, str]).decode


def epoch_ms(moment: datetime) -> int:
    """Whole milliseconds since the epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(milliseconds=1)


def from_epoch_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def recipient_domain(address: str) -> str:
    return address.rpartition("@")[2].lower() if "@" in address else ""


def _bounce_type(data: dict[str, Any]) -> str:
    bounce = data.get("bounce")
    kind = bounce.get("type") if isinstance(bounce, dict) else None
    return kind if isinstance(kind, str) else ""


def _url(data: dict[str, Any]) -> str:
    url = data.get("url")
    return url if isinstance(url, str) else ""


def _machine_open(data: dict[str, Any]) -> bool:
    """Tracking's flag for an open or click no person caused (docs/tracking.md, "Machine opens")."""
    return data.get("machine_open") is True


_BOUNCED, _CLICKED, _OPENED = "message.bounced", "message.clicked", "message.opened"


def pair_hash(message_id: str, recipient: str) -> int:
    """64 bits identifying a (message, recipient) pair: unique opens and clicks count distinct values of
    this integer column, several times cheaper to scan than the two strings. Never 0 (0 means "not an
    open or click"); two pairs collide with probability 2^-64, a million pairs with about 3e-8."""
    digest = hashlib.blake2b(f"{message_id}\x1f{recipient}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


def _json(value: dict[str, Any]) -> str:
    return _json_encode(value).decode() if value else "{}"


def event_row(event: Event) -> tuple[Any, ...]:
    """One row in COLUMNS order (created_at as epoch milliseconds)."""
    msg, data, type_ = event.message, event.data, event.type
    bounce_type = _bounce_type(data) if type_ == _BOUNCED else ""
    url = _url(data) if type_ == _CLICKED else ""
    created_ms = epoch_ms(event.created_at)
    if msg is None:
        # Custom and subscriber events: the address they are about is the row's recipient, so segment
        # event conditions and erasure find them like message events.
        email = event_email(event)
        return (
            event.id,
            event.workspace,
            created_ms,
            type_,
            "",
            email,
            recipient_domain(email),
            "",
            "",
            "",
            "",
            [],
            "{}",
            bounce_type,
            url,
            _json(data),
            0,
            _machine_open(data),
            "",
            0,
            0,
            0,
            "",
            "",
            "",
            "",
        )
    pair = pair_hash(msg.id, msg.to) if type_ in (_OPENED, _CLICKED) else 0
    return (
        event.id,
        event.workspace,
        created_ms,
        type_,
        msg.id,
        msg.to,
        recipient_domain(msg.to),
        msg.from_,
        msg.provider or "",
        msg.server or "",
        msg.campaign_id or "",
        msg.tags,
        _json(msg.metadata),
        bounce_type,
        url,
        _json(data),
        pair,
        _machine_open(data),
        msg.metadata.get("campaign_variant", "") if msg.campaign_id else "",
        0,
        0,
        0,
        "",
        "",
        "",
        "",
    )


def event_columns(events: Iterable[Event]) -> dict[str, list[Any]]:
    """Column-oriented rows for a batch insert, each event id once (first occurrence wins)."""
    seen: set[str] = set()
    rows = []
    for event in events:
        if event.id not in seen:
            seen.add(event.id)
            rows.append(event_row(event))
    columns = zip(*rows, strict=True) if rows else [()] * len(COLUMNS)
    return {name: list(values) for name, values in zip(COLUMNS, columns, strict=True)}


def row_event(row: Sequence[Any]) -> Event:
    """Rebuild an Event from a row in READ_COLUMNS order."""
    (
        event_id,
        workspace,
        created_ms,
        type_,
        message_id,
        recipient,
        sender,
        provider,
        server,
        campaign_id,
        tags,
        metadata,
        data,
    ) = row
    message = None
    if message_id:
        message = EventMessage(
            id=message_id,
            to=recipient,
            from_=sender,
            provider=provider or None,
            server=server or None,
            tags=list(tags),
            metadata=_decode_metadata(metadata),
            campaign_id=campaign_id or None,
        )
    return Event(
        id=event_id,
        type=type_,
        created_at=from_epoch_ms(created_ms),
        workspace=workspace,
        message=message,
        data=_decode_object(data),
    )


# --- NDJSON export: the same JSON as encoding an Event, without decoding the stored JSON first ----
class _ExportMessage(msgspec.Struct, kw_only=True):
    id: str
    to: str
    from_: str = msgspec.field(name="from")
    provider: str | None
    server: str | None
    tags: list[str]
    metadata: msgspec.Raw
    campaign_id: str | None


class _ExportEvent(msgspec.Struct, kw_only=True):
    id: str
    type: str
    created_at: datetime
    workspace: str
    message: _ExportMessage | None
    data: msgspec.Raw


_export_encoder = msgspec.json.Encoder()


def _export_event(row: Sequence[Any]) -> _ExportEvent:
    (
        event_id,
        workspace,
        created_ms,
        type_,
        message_id,
        recipient,
        sender,
        provider,
        server,
        campaign_id,
        tags,
        metadata,
        data,
    ) = row
    message = None
    if message_id:
        message = _ExportMessage(
            id=message_id,
            to=recipient,
            from_=sender,
            provider=provider or None,
            server=server or None,
            tags=tags,
            metadata=msgspec.Raw(metadata),
            campaign_id=campaign_id or None,
        )
    return _ExportEvent(
        id=event_id,
        type=type_,
        created_at=EPOCH + timedelta(milliseconds=created_ms),
        workspace=workspace,
        message=message,
        data=msgspec.Raw(data),
    )


def ndjson_lines(rows: Sequence[Sequence[Any]]) -> bytes:
    """Rows in READ_COLUMNS order as NDJSON, each line byte for byte what encoding `row_event(row)` gives."""
    return _export_encoder.encode_lines([_export_event(row) for row in rows])
