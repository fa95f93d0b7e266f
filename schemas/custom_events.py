"""Custom events (`POST /v1/events`, MARKETING.md "Custom events"): the request bodies and their checks.

A custom event becomes an ordinary `Event` on `m:events` whose `type` is the event's name, `message` is
None and `data` is `{"email": normalised email, "properties": {...}}`; the analytics row's `recipient`
is that email (analytics/rows.py), so segment event conditions match message events and custom events
by the same (workspace, recipient) pair.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec

from schemas.addresses import AddressError, parse_address
from schemas.problems import FieldError

NAME_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
RESERVED_PREFIXES = ("message.", "subscriber.", "list.", "campaign.", "automation.", "webhook.")
MAX_BATCH = 1000
MAX_PROPERTIES_BYTES = 16 * 1024
MAX_PROPERTIES_DEPTH = 5
# Clocks disagree a little; an event stamped further ahead than this is a client bug, not skew.
MAX_FUTURE = timedelta(minutes=5)
_NAME = re.compile(NAME_PATTERN)
_encode = msgspec.json.Encoder().encode

EventName = Annotated[str, msgspec.Meta(min_length=3, max_length=100)]


# Properties stay raw JSON until `validate` has bounded their size and decodes them one event at a time:
# decoded with the body as `dict[str, Any]`, 1 MiB of `[[],[],...]` (350,000 lists) held the loop
# ~100-180 ms in one C call (issue #11, the class of template variables).
Properties = Annotated[
    msgspec.Raw,
    msgspec.Meta(
        extra_json_schema={
            "type": "object",
            "description": f"A JSON object of at most {MAX_PROPERTIES_BYTES:,} bytes, nested at most "
            f"{MAX_PROPERTIES_DEPTH} levels (422 `invalid_properties`)",
        }
    ),
]
# The raw text may hold whitespace the stored (re-encoded) form does not: bounded at twice the limit.
MAX_RAW_PROPERTIES_BYTES = 2 * MAX_PROPERTIES_BYTES
_properties = msgspec.json.Decoder(dict[str, Any])


def no_properties() -> msgspec.Raw:
    return msgspec.Raw(b"{}")


class CustomEventIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: EventName
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
    properties: Properties = msgspec.field(default_factory=no_properties)
    timestamp: datetime | None = None


class CustomEventsBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One event (`name`, `email`, ...) or a batch (`events`), never both."""

    events: Annotated[list[CustomEventIn], msgspec.Meta(min_length=1, max_length=MAX_BATCH)] | None = None
    name: EventName | None = None
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=320)] | None = None
    # Raw cannot be in a union with None: absent is empty raw text (`_given`).
    properties: Properties = msgspec.field(default_factory=lambda: msgspec.Raw(b""))
    timestamp: datetime | None = None


class AcceptedEvent(msgspec.Struct, kw_only=True):
    id: str
    name: str
    created_at: datetime


class AcceptedEvents(msgspec.Struct, kw_only=True):
    data: list[AcceptedEvent]
    accepted: int
    object: str = "list"


class ValidEvent(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    email: str
    properties: dict[str, Any]
    created_at: datetime


def is_custom_name(name: str) -> bool:
    """A name a custom event may carry: dotted lowercase words, outside the reserved families."""
    return bool(_NAME.match(name)) and not name.startswith(RESERVED_PREFIXES)


def items(body: CustomEventsBody) -> tuple[list[CustomEventIn], str]:
    """The events of a body and the pointer prefix of each (`#/events/` + index, or `#` for one)."""
    given = _given(body.properties)
    single = (body.name, body.email, given, body.timestamp)
    if body.events is not None:
        if any(v is not None for v in single):
            raise ValueError("send either `events` or one event's fields, not both")
        return body.events, "#/events/"
    if body.name is None or body.email is None:
        raise ValueError("`name` and `email` are required (or `events`, a list of them)")
    one = CustomEventIn(
        name=body.name,
        email=body.email,
        properties=given or no_properties(),
        timestamp=body.timestamp,
    )
    return [one], "#"


def validate(item: CustomEventIn, pointer: str, now: datetime) -> ValidEvent | list[FieldError]:
    """The event ready to record, or why not (every problem, each with its pointer)."""
    errors: list[FieldError] = []
    base = pointer.rstrip("/")
    if not is_custom_name(item.name):
        detail = f"must match {NAME_PATTERN} and not start with one of {', '.join(RESERVED_PREFIXES)}"
        errors.append(FieldError(f"{base}/name", detail, "invalid_event_name"))
    email = ""
    try:
        email = parse_address(item.email).email.lower()
    except AddressError as exc:
        errors.append(FieldError(f"{base}/email", exc.detail, exc.code))
    properties, problem = decode_properties(item.properties)
    if problem is not None:
        errors.append(FieldError(f"{base}/properties", problem, "invalid_properties"))
    at = item.timestamp or now
    if at.tzinfo is None:
        errors.append(FieldError(f"{base}/timestamp", "must carry a time zone (e.g. Z)", "invalid"))
    elif at > now + MAX_FUTURE:
        errors.append(FieldError(f"{base}/timestamp", "must not be in the future", "invalid_timestamp"))
    if errors:
        return errors
    return ValidEvent(name=item.name, email=email, properties=properties, created_at=at)


def _given(raw: msgspec.Raw) -> msgspec.Raw | None:
    return None if bytes(raw) in (b"", b"null") else raw


def decode_properties(raw: msgspec.Raw) -> tuple[dict[str, Any], str | None]:
    """The properties, or why not: the size is checked before anything is decoded."""
    if len(raw) > MAX_RAW_PROPERTIES_BYTES:
        return {}, f"is larger than {MAX_PROPERTIES_BYTES} bytes as JSON"
    try:
        properties = _properties.decode(raw)
    except msgspec.ValidationError as exc:
        return {}, f"must be a JSON object ({exc})"
    return properties, properties_problem(properties)


def properties_problem(properties: dict[str, Any]) -> str | None:
    """Bounded size and depth: properties are stored with every event and scanned by segments."""
    if _depth(properties) > MAX_PROPERTIES_DEPTH:
        return f"nests deeper than {MAX_PROPERTIES_DEPTH} levels"
    if len(_encode(properties)) > MAX_PROPERTIES_BYTES:
        return f"is larger than {MAX_PROPERTIES_BYTES} bytes as JSON"
    return None


def _depth(value: Any) -> int:
    # Iterative: a hostile body nested 10,000 deep must not reach Python's recursion limit.
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_PROPERTIES_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest
