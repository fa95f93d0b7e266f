"""What callers may ask the analytics store: request structs, window validation, filters, cursors.

The ingress decodes query strings with `parse_query(EventsQuery, request.query)`; anything invalid raises
`InvalidQuery` carrying a JSON pointer (`#/from`, `#/type`, ...). Every time is UTC. A window is
half-open, `from <= created_at < to`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, overload

import msgspec

from analytics.errors import InvalidCursor, InvalidQuery
from analytics.rows import epoch_ms
from schemas.custom_events import is_custom_name
from schemas.events import EVENT_TYPES

Interval = Literal["hour", "day"]
GroupBy = Literal["provider", "server", "tag", "campaign", "recipient_domain"]
Limit = Annotated[int, msgspec.Meta(ge=1, le=100)]
INTERVAL_MS = {"hour": 3_600_000, "day": 86_400_000}
# group_by value -> the dimension the backends aggregate over
GROUP_DIMENSIONS = {
    "provider": "provider",
    "server": "server",
    "tag": "tag",
    "campaign": "campaign_id",
    "recipient_domain": "recipient_domain",
}


class WindowPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Limits on what one query may ask for; the ingress may build it from settings."""

    default_span: timedelta = timedelta(days=7)
    max_span: timedelta = timedelta(days=92)
    max_buckets: int = 24 * 31  # hourly over a month
    max_groups: int = 100


class _Filters(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    from_: datetime | None = msgspec.field(name="from", default=None)
    to: datetime | None = None
    campaign_id: str | None = None
    tag: str | None = None
    provider: str | None = None
    server: str | None = None
    recipient_domain: str | None = None


class ExportQuery(_Filters, kw_only=True, forbid_unknown_fields=True):
    """`GET /v1/analytics/events` with `Accept: application/x-ndjson`; `type` is comma-separated patterns."""

    type: str | None = None
    message_id: str | None = None
    recipient: str | None = None


class EventsQuery(ExportQuery, kw_only=True, forbid_unknown_fields=True):
    """`GET /v1/analytics/events`: newest first, `limit` per page, `cursor` from the previous page."""

    limit: Limit = 20
    cursor: str | None = None


class SummaryQuery(_Filters, kw_only=True, forbid_unknown_fields=True):
    """`GET /v1/analytics/summary`."""

    interval: Interval = "day"
    group_by: GroupBy | None = None


class CampaignReportQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`GET /v1/campaigns/:id/report`: the campaign's whole history unless a window is given."""

    from_: datetime | None = msgspec.field(name="from", default=None)
    to: datetime | None = None


class EventFilter(msgspec.Struct, frozen=True, kw_only=True):
    """A resolved filter the backends render as SQL; `None` means "no condition"."""

    workspace: str
    from_ms: int | None = None
    to_ms: int | None = None
    types: tuple[str, ...] | None = None
    message_id: str | None = None
    campaign_id: str | None = None
    tag: str | None = None
    recipient: str | None = None
    recipient_domain: str | None = None
    provider: str | None = None
    server: str | None = None


def parse_query(kind: type, params: Mapping[str, str]) -> Any:
    """Decode query-string parameters into `kind`; an invalid one raises InvalidQuery naming it."""
    try:
        return msgspec.convert(dict(params), kind, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = message.rpartition("at `$.")[2].rstrip("`") if "at `$." in message else ""
        field = field.split("[")[0] or _unknown_field(message)
        raise InvalidQuery(f"#/{field}" if field else "#", message.split(" - at ")[0]) from None


def _unknown_field(message: str) -> str:
    # msgspec: "Object contains unknown field `x`"
    return message.split("`")[1] if message.startswith("Object contains unknown field") else ""


@overload
def resolve_window(
    from_: datetime | None,
    to: datetime | None,
    *,
    now: datetime,
    policy: WindowPolicy,
    default: Literal[True] = True,
) -> tuple[int, int]: ...


@overload
def resolve_window(
    from_: datetime | None, to: datetime | None, *, now: datetime, policy: WindowPolicy, default: bool
) -> tuple[int | None, int | None]: ...


def resolve_window(
    from_: datetime | None, to: datetime | None, *, now: datetime, policy: WindowPolicy, default: bool = True
) -> tuple[int | None, int | None]:
    """(from_ms, to_ms). Without `default`, missing bounds stay open (a campaign's whole history)."""
    if default:
        to = to or now
        from_ = from_ or to - policy.default_span
    from_ms = epoch_ms(from_) if from_ is not None else None
    to_ms = epoch_ms(to) if to is not None else None
    if from_ms is not None and to_ms is not None:
        if from_ms >= to_ms:
            raise InvalidQuery("#/from", "`from` must be earlier than `to`", "invalid_window")
        if to_ms - from_ms > policy.max_span // timedelta(milliseconds=1):
            raise InvalidQuery("#/to", f"the window may span at most {policy.max_span}", "window_too_large")
    return from_ms, to_ms


def expand_types(patterns: str | None) -> tuple[str, ...] | None:
    """`message.*,subscriber.unsubscribed` -> the known event types those patterns name; a custom event's
    name (`order.completed`) names itself (custom names are open-ended, so they take no wildcard)."""
    if patterns is None:
        return None
    types: list[str] = []
    for pattern in (p.strip() for p in patterns.split(",")):
        matched = [t for t in EVENT_TYPES if _matches(pattern, t)]
        if not matched and is_custom_name(pattern):
            matched = [pattern]
        if not matched:
            raise InvalidQuery("#/type", f"{pattern!r} names no event type", "unknown_event_type")
        types.extend(t for t in matched if t not in types)
    return tuple(types)


def _matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def event_filter(workspace: str, query: _Filters, window: tuple[int | None, int | None]) -> EventFilter:
    export = query if isinstance(query, ExportQuery) else None
    return EventFilter(
        workspace=workspace,
        from_ms=window[0],
        to_ms=window[1],
        campaign_id=query.campaign_id,
        tag=query.tag,
        provider=query.provider,
        server=query.server,
        recipient_domain=query.recipient_domain.lower() if query.recipient_domain else None,
        types=expand_types(export.type) if export else None,
        message_id=export.message_id if export else None,
        recipient=export.recipient if export else None,
    )


def check_buckets(window: tuple[int, int], interval: str, policy: WindowPolicy) -> None:
    count = -(-(window[1] - window[0]) // INTERVAL_MS[interval])
    if count > policy.max_buckets:
        raise InvalidQuery(
            "#/interval", f"{count} {interval} buckets; at most {policy.max_buckets}", "too_many_buckets"
        )


# --- the opaque keyset cursor of /v1/analytics/events ----------------------------------------------
class PageCursor(msgspec.Struct, array_like=True, frozen=True):
    """Where the previous page ended, and the window it was read in (pinned, so `to=now` stays put)."""

    created_ms: int
    event_id: str
    from_ms: int
    to_ms: int
    filters: str


_encode_cursor = msgspec.msgpack.Encoder().encode
_decode_cursor = msgspec.msgpack.Decoder(PageCursor).decode


def filters_fingerprint(query: EventsQuery) -> str:
    """A hash of the filters the caller set (not limit or cursor): a cursor only fits the same filters."""
    values = msgspec.to_builtins(query)
    chosen = {k: v for k, v in sorted(values.items()) if v is not None and k not in ("limit", "cursor")}
    return hashlib.sha256(msgspec.json.encode(chosen)).hexdigest()[:16]


def encode_cursor(cursor: PageCursor) -> str:
    return base64.urlsafe_b64encode(_encode_cursor(cursor)).rstrip(b"=").decode()


def decode_cursor(query: EventsQuery) -> PageCursor | None:
    if query.cursor is None:
        return None
    try:
        cursor = _decode_cursor(base64.urlsafe_b64decode(query.cursor + "=" * (-len(query.cursor) % 4)))
    except (ValueError, msgspec.DecodeError):
        raise InvalidCursor("the cursor is not one this API issued") from None
    if cursor.filters != filters_fingerprint(query):
        raise InvalidCursor("the cursor was issued for different filters")
    return cursor
