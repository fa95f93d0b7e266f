"""Segments (MARKETING.md "Segments"): the CONDITION tree, its parser, and the segment records and bodies.

A CONDITION is one of
  {"all": [CONDITION, ...]}   {"any": [CONDITION, ...]}   {"not": CONDITION}
  {"attribute": NAME, "op": OP, "value": VALUE}
  {"event": TYPE, "within_days": N?, "count_gte": N?, "campaign_id": "cmp_…"?}
The shapes carry no tag, so `parse_condition` reads the JSON by hand: every unknown field, op or value
type is reported with a JSON pointer (`#/filter/all/1/op`), and depth and size are bounded before any
SQL is built from it (analytics/segments.py).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from schemas.custom_events import is_custom_name
from schemas.events import EVENT_TYPES

MAX_DEPTH = 8
MAX_NODES = 200
MAX_LIST_VALUES = 1000
MAX_TEXT = 1000
MAX_WITHIN_DAYS = 3650
ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
FIELDS = ("email", "name", "created_at", "list_status")  # addressable like attributes
LIST_STATUSES = ("subscribed", "unconfirmed", "unsubscribed")
Op = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "starts_with", "exists"]
OPS: tuple[str, ...] = Op.__args__  # type: ignore[attr-defined]
_FIELD_OPS = {
    "email": ("eq", "ne", "in", "not_in", "contains", "starts_with"),
    "name": ("eq", "ne", "in", "not_in", "contains", "starts_with", "exists"),
    "created_at": ("gt", "gte", "lt", "lte"),
    "list_status": ("eq", "ne", "in", "not_in"),
}
Scalar = str | int | float | bool


class ConditionError(ValueError):
    def __init__(self, pointer: str, detail: str, code: str = "invalid_condition") -> None:
        super().__init__(f"{pointer}: {detail}")
        self.pointer, self.detail, self.code = pointer, detail, code


class All(msgspec.Struct, frozen=True):
    items: tuple[Condition, ...]


class AnyOf(msgspec.Struct, frozen=True):
    items: tuple[Condition, ...]


class Not(msgspec.Struct, frozen=True):
    item: Condition


class AttributeIs(msgspec.Struct, frozen=True):
    """`name` is an attribute key or one of FIELDS. `value` is None for `exists`, a tuple for in/not_in;
    for `created_at` it is a UTC datetime."""

    name: str
    op: str
    value: Scalar | tuple[Scalar, ...] | datetime | None = None


class EventCount(msgspec.Struct, frozen=True):
    """At least `count_gte` events of `type` with this subscriber's email, in the last `within_days`."""

    type: str
    within_days: int | None = None
    count_gte: int = 1
    campaign_id: str | None = None


Condition = All | AnyOf | Not | AttributeIs | EventCount


def parse_condition(raw: Any, pointer: str = "#/filter") -> Condition:
    """The typed tree for `raw` (decoded JSON), or ConditionError with the first problem's pointer."""
    nodes = [0]
    return _parse(raw, pointer, 1, nodes)


def _parse(raw: Any, pointer: str, depth: int, nodes: list[int]) -> Condition:
    nodes[0] += 1
    if nodes[0] > MAX_NODES:
        raise ConditionError(pointer, f"a filter may hold at most {MAX_NODES} conditions", "filter_too_large")
    if depth > MAX_DEPTH:
        raise ConditionError(pointer, f"a filter may nest at most {MAX_DEPTH} levels", "filter_too_deep")
    if not isinstance(raw, dict):
        raise ConditionError(pointer, "a condition is a JSON object")
    for combinator in ("all", "any", "not"):
        if combinator in raw:
            _only(raw, (combinator,), pointer)
            return _combined(combinator, raw[combinator], f"{pointer}/{combinator}", depth, nodes)
    if "attribute" in raw:
        _only(raw, ("attribute", "op", "value"), pointer)
        return _attribute(raw, pointer)
    if "event" in raw:
        _only(raw, ("event", "within_days", "count_gte", "campaign_id"), pointer)
        return _event(raw, pointer)
    raise ConditionError(pointer, "expected one of `all`, `any`, `not`, `attribute` or `event`")


def _only(raw: dict[str, Any], allowed: tuple[str, ...], pointer: str) -> None:
    for key in raw:
        if key not in allowed:
            raise ConditionError(f"{pointer}/{key}", f"unknown field `{key}`", "unknown_field")


def _combined(kind: str, raw: Any, pointer: str, depth: int, nodes: list[int]) -> Condition:
    if kind == "not":
        return Not(_parse(raw, pointer, depth + 1, nodes))
    if not isinstance(raw, list) or not raw:
        raise ConditionError(pointer, f"`{kind}` takes a non-empty list of conditions")
    items = tuple(_parse(item, f"{pointer}/{i}", depth + 1, nodes) for i, item in enumerate(raw))
    return All(items) if kind == "all" else AnyOf(items)


def _attribute(raw: dict[str, Any], pointer: str) -> AttributeIs:
    name, op = raw.get("attribute"), raw.get("op")
    if not isinstance(name, str) or not ATTRIBUTE_NAME.match(name):
        raise ConditionError(f"{pointer}/attribute", "an attribute name matches [a-z][a-z0-9_]{0,63}")
    if op not in _FIELD_OPS.get(name, OPS):
        allowed = ", ".join(_FIELD_OPS.get(name, OPS))
        raise ConditionError(
            f"{pointer}/op", f"unknown op {op!r} for `{name}`: one of {allowed}", "unknown_op"
        )
    value = _value(name, op, raw.get("value"), "value" in raw, f"{pointer}/value")
    return AttributeIs(name, op, value)


def _value(name: str, op: str, value: Any, present: bool, pointer: str) -> Any:
    if op == "exists":
        if present and not isinstance(value, bool):
            raise ConditionError(pointer, "`exists` takes no value, or true/false")
        return None if not present or value else False
    if not present:
        raise ConditionError(pointer, f"`{op}` needs a value", "missing_field")
    if name == "created_at":
        return _time(value, pointer)
    if op in ("in", "not_in"):
        return _value_list(name, value, pointer)
    if op in ("contains", "starts_with"):
        if not isinstance(value, str):
            raise ConditionError(pointer, f"`{op}` takes a string", "invalid_value")
        return _text(value, pointer)
    if op in ("gt", "gte", "lt", "lte"):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConditionError(pointer, f"`{op}` takes a number or a string", "invalid_value")
    return _scalar(name, value, pointer)


def _value_list(name: str, value: Any, pointer: str) -> tuple[Scalar, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST_VALUES:
        raise ConditionError(pointer, f"a list of 1 to {MAX_LIST_VALUES} values", "invalid_value")
    found = tuple(_scalar(name, v, f"{pointer}/{i}") for i, v in enumerate(value))
    kinds = {_kind(v) for v in found}
    if len(kinds) > 1:
        raise ConditionError(pointer, "the values must all be strings, all numbers or all booleans")
    return found


def _scalar(name: str, value: Any, pointer: str) -> Scalar:
    if name == "list_status":
        if value not in LIST_STATUSES:
            raise ConditionError(pointer, f"one of {', '.join(LIST_STATUSES)}", "invalid_value")
        return str(value)
    if name in ("email", "name") and not isinstance(value, str):
        raise ConditionError(pointer, f"`{name}` is compared with strings", "invalid_value")
    if isinstance(value, str):
        return _text(value, pointer)
    if isinstance(value, bool | int | float):
        return value
    raise ConditionError(pointer, "a string, number or boolean", "invalid_value")


def _kind(value: Scalar) -> str:
    return "bool" if isinstance(value, bool) else "number" if isinstance(value, int | float) else "string"


def _text(value: str, pointer: str) -> str:
    if len(value) > MAX_TEXT:
        raise ConditionError(pointer, f"at most {MAX_TEXT} characters", "invalid_value")
    return value


def _time(value: Any, pointer: str) -> datetime:
    try:
        moment = msgspec.convert(value, datetime)
    except msgspec.ValidationError:
        raise ConditionError(
            pointer, "an RFC 3339 time, e.g. 2026-01-31T00:00:00Z", "invalid_value"
        ) from None
    if moment.tzinfo is None:
        raise ConditionError(pointer, "the time needs a zone (e.g. Z)", "invalid_value")
    return moment


def _event(raw: dict[str, Any], pointer: str) -> EventCount:
    kind = raw.get("event")
    if not isinstance(kind, str) or not (kind in EVENT_TYPES or is_custom_name(kind)):
        raise ConditionError(
            f"{pointer}/event", "a message event type or a custom event name", "unknown_event_type"
        )
    within = raw.get("within_days")
    if within is not None and (not _is_int(within) or not 1 <= within <= MAX_WITHIN_DAYS):
        raise ConditionError(
            f"{pointer}/within_days", f"an integer from 1 to {MAX_WITHIN_DAYS}", "invalid_value"
        )
    count = raw.get("count_gte", 1)
    if not _is_int(count) or not 1 <= count <= 1_000_000:
        raise ConditionError(f"{pointer}/count_gte", "an integer from 1 to 1000000", "invalid_value")
    campaign = raw.get("campaign_id")
    if campaign is not None and (not isinstance(campaign, str) or not 1 <= len(campaign) <= 100):
        raise ConditionError(f"{pointer}/campaign_id", "a campaign id", "invalid_value")
    return EventCount(kind, within, count, campaign)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- segment records and bodies -----------------------------------------------------------------
ListId = Annotated[str, msgspec.Meta(pattern=r"^lst_[0-9A-Z]{26}$")]
SegmentName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
ListIds = Annotated[list[ListId], msgspec.Meta(max_length=100)]


class SegmentRecord(msgspec.Struct, kw_only=True):
    """What Redis holds for one segment: `filter` is the CONDITION as the client sent it (validated)."""

    id: str
    workspace: str
    name: str
    lists: list[str]
    filter: Any
    created_at: datetime
    updated_at: datetime


class CreateSegment(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: SegmentName
    lists: ListIds = []
    filter: Any = None


class UpdateSegment(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: SegmentName | msgspec.UnsetType = msgspec.UNSET
    lists: ListIds | msgspec.UnsetType = msgspec.UNSET
    filter: Any = msgspec.UNSET


class Segment(msgspec.Struct, kw_only=True):
    id: str
    name: str
    lists: list[str]
    filter: Any
    created_at: datetime
    updated_at: datetime
    object: str = "segment"


class SegmentList(msgspec.Struct, kw_only=True):
    data: list[Segment]
    has_more: bool
    next_cursor: str | None
    object: str = "list"


class DeletedSegment(msgspec.Struct, kw_only=True):
    id: str
    deleted: bool = True
    object: str = "segment"


class SegmentCount(msgspec.Struct, kw_only=True):
    count: int
    object: str = "segment_count"


class SegmentQuery(msgspec.Struct, kw_only=True, frozen=True):
    """What the analytics store evaluates: the segment's lists (none: every subscriber) and its filter
    as sent (re-parsed where it is evaluated, so it crosses Ray as plain msgpack)."""

    lists: tuple[str, ...] = ()
    filter: Any = None
    # One subscriber only (an automation's branch step: does this subscriber match now?), or None.
    subscriber: str | None = None


class SegmentMember(msgspec.Struct, kw_only=True):
    """A subscriber as the analytics store's mirror holds it."""

    id: str
    email: str
    name: str
    attributes: dict[str, Any]
    status: str
    created_at: datetime
    object: str = "subscriber"


class MembersPage(msgspec.Struct, kw_only=True):
    data: list[SegmentMember]
    has_more: bool


segment_record_encoder = msgspec.msgpack.Encoder()
segment_record_decoder = msgspec.msgpack.Decoder(SegmentRecord)
