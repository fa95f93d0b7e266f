"""Raw subscriber input (a bulk item's JSON, a CSV row) → a normalised `SubscriberInput` or its problem.

Shared by the bulk endpoint (ingress) and the import runner (actors), so a row of a file and an item of
a request are held to the same rules: the `SubscriberInput` schema, then a normalised address.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from schemas.audience import (
    ATTRIBUTE_KEY_PATTERN,
    MAX_ATTRIBUTE_LIST,
    MAX_ATTRIBUTE_TEXT,
    MAX_ATTRIBUTES,
    MAX_EMAIL,
    MAX_NAME,
    EmailText,
    ItemProblem,
    MemberStatus,
    Name,
    RowError,
    SubscriberInput,
    item_decoder,
)
from schemas.domain_names import normalise_domain
from schemas.problems import ERROR_CODES, ERROR_TYPE_BASE, pointer_from_location

_KEY = re.compile(ATTRIBUTE_KEY_PATTERN)
_NOT_IN_LOCAL = frozenset(' <>(),;:"[]\\\t')
FIXED_COLUMNS = ("email", "name")


def item_problem(pointer: str, detail: str, code: str) -> ItemProblem:
    status, title = ERROR_CODES["validation_error"]
    return ItemProblem(
        type=ERROR_TYPE_BASE + "validation_error",
        title=title,
        status=status,
        code="validation_error",
        detail=detail,
        errors=[{"pointer": pointer, "detail": detail, "code": code}],
    )


def checked_item(raw: bytes | msgspec.Raw, pointer: str) -> SubscriberInput | ItemProblem:
    """One bulk item decoded and its address normalised, or the problem with it."""
    try:
        item = item_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return _schema_problem(str(exc), pointer)
    except msgspec.DecodeError as exc:
        return item_problem(pointer, str(exc), "invalid_json")
    return normalised(item, pointer)


class _LooseInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`SubscriberInput` with its attributes decoded as any JSON (checked by `_plain_attributes`):
    msgspec checks an attribute name's pattern with a regex call per name, and a value against a
    four-way union, ~2 µs per attribute; most requests repeat the same few names."""

    email: EmailText
    name: Name | None = None
    attributes: dict[str, Any] = {}
    status: MemberStatus | None = None


_loose_items = msgspec.json.Decoder(list[_LooseInput])
_known_keys: set[str] = set()  # attribute names seen to match the pattern (bounded below)
_INT_RANGE = range(-(2**63), 2**63)  # `AttributeInt` (schemas/audience.py)


def checked_items(raws: list[msgspec.Raw]) -> list[SubscriberInput | ItemProblem]:
    """`checked_item` of each bulk item, in order, at a fraction of its cost: all items decoded in one
    call with loose attributes, which `_plain_attributes` then holds to the schema's rules. An item that
    fails anything goes through `checked_item` (the schema itself), for its problem and pointer."""
    try:
        decoded = _loose_items.decode(b"[" + b",".join(raws) + b"]")
    except msgspec.DecodeError:
        return [checked_item(raw, f"#/subscribers/{index}") for index, raw in enumerate(raws)]
    checked: list[SubscriberInput | ItemProblem] = []
    for index, loose in enumerate(decoded):
        pointer = f"#/subscribers/{index}"
        if _plain_attributes(loose.attributes):
            item = SubscriberInput(
                email=loose.email, name=loose.name, attributes=loose.attributes, status=loose.status
            )
            checked.append(normalised(item, pointer))
        else:
            checked.append(checked_item(raws[index], pointer))
    return checked


def _plain_attributes(attributes: dict[str, Any]) -> bool:
    """True only if `AttributePatch` accepts `attributes` (decoded as any JSON) as they are."""
    if len(attributes) > MAX_ATTRIBUTES:
        return False
    for key, value in attributes.items():
        if key not in _known_keys:
            if not _KEY.search(key):  # msgspec applies a pattern with `search`
                return False
            if len(_known_keys) >= 10_000:
                _known_keys.clear()
            _known_keys.add(key)
        if value is None or _plain_scalar(value):
            continue
        if (
            type(value) is not list
            or len(value) > MAX_ATTRIBUTE_LIST
            or not all(_plain_scalar(v) for v in value)
        ):
            return False
    return True


def _plain_scalar(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return len(value) <= MAX_ATTRIBUTE_TEXT
    if kind is int:
        return value in _INT_RANGE
    return kind is float or kind is bool


def normalised(item: SubscriberInput, pointer: str) -> SubscriberInput | ItemProblem:
    """`item` (fresh from a decoder: changed in place) with its address normalised, or the problem."""
    email = normal_address(item.email)
    if email is None:
        return item_problem(pointer + "/email", "not an email address", "invalid_email")
    item.email = email
    return item


# raw domain part → `normalise_domain` of it ("" where it is not a name); a bulk request or an import
# repeats a few domains thousands of times. Bounded: cleared when full.
_domains: dict[str, str] = {}
_DOMAINS_KEPT = 10_000


def normal_address(email: str) -> str | None:
    """`schemas.domain_names.normalise_email(email)` if that is an address we accept (its domain has a
    dot, its local part none of `_NOT_IN_LOCAL`), else None; each distinct domain normalised once."""
    local, at, domain = email.strip().rpartition("@")
    if not at or not local:
        return None
    normal = _domains.get(domain)
    if normal is None:
        try:
            normal = normalise_domain(domain)
        except ValueError:
            normal = ""
        if len(_domains) >= _DOMAINS_KEPT:
            _domains.clear()
        _domains[domain] = normal
    local = local.lower()
    if "." not in normal or not _NOT_IN_LOCAL.isdisjoint(local):
        return None
    return f"{local}@{normal}"


def _schema_problem(message: str, pointer: str) -> ItemProblem:
    detail, _, where = message.partition(" - at ")
    return item_problem(pointer + pointer_from_location(where), detail, "invalid")


def header_problem(columns: list[str]) -> str | None:
    """Why a CSV header cannot be imported, or None. Columns other than email and name are attributes."""
    if "email" not in columns:
        return "the header row has no `email` column"
    if len(set(columns)) != len(columns):
        return "the header row names a column twice"
    for column in columns:
        if column not in FIXED_COLUMNS and not _KEY.match(column):
            return f"column {column!r} is not an attribute name ([a-z][a-z0-9_]{{0,63}})"
    return None


def header_columns(cells: list[str]) -> list[str]:
    return [cell.strip().lower() for cell in cells]


def row_item(columns: list[str], line: int, cells: list[str]) -> SubscriberInput | RowError | None:
    """A CSV data row as an input (None for a blank line). An empty cell sets nothing."""
    if not any(cell.strip() for cell in cells):
        return None
    if len(cells) != len(columns):
        return RowError(line, "wrong_column_count", f"expected {len(columns)} cells, found {len(cells)}")
    values: dict[str, Any] = {"attributes": {}}
    for column, cell in zip(columns, cells, strict=True):
        if column in FIXED_COLUMNS:
            values[column] = cell.strip() or None
        elif cell != "":
            values["attributes"][column] = cell
    try:
        item = msgspec.convert(values, SubscriberInput)
    except msgspec.ValidationError as exc:
        return RowError(line, "invalid", str(exc))
    checked = normalised(item, "#")
    if isinstance(checked, ItemProblem):
        return RowError(line, "invalid_email", checked.detail)
    return checked


def row_items(
    columns: list[str], rows: list[tuple[int, list[str]]]
) -> tuple[list[SubscriberInput], list[RowError], int]:
    """`row_item` over many rows: (inputs, errors, how many were not blank), at a fraction of its cost.

    The header's shape is read once; a row whose cells are plainly within the schema's limits becomes
    an input directly (no dict, no `msgspec.convert`); any other row goes through `row_item` itself,
    for its error. Attribute names were checked with the header (`header_problem`)."""
    items: list[SubscriberInput] = []
    errors: list[RowError] = []
    counted = 0
    width = len(columns)
    email_at = columns.index("email") if "email" in columns else None
    name_at = columns.index("name") if "name" in columns else None
    attributes = [(i, c) for i, c in enumerate(columns) if c not in FIXED_COLUMNS]
    plain_header = (
        email_at is not None
        and len(attributes) <= MAX_ATTRIBUTES
        and all(_KEY.search(c) for _, c in attributes)
        and len(set(columns)) == width
    )
    for line, cells in rows:
        fast = plain_header and len(cells) == width
        email = cells[email_at].strip() if fast else ""  # type: ignore[index]
        if not email and not "".join(cells).strip():
            continue  # a blank line is not a row (a row with an address is not blank)
        counted += 1
        if fast:
            name = None if name_at is None else (cells[name_at].strip() or None)
            patch: dict[str, Any] = {c: cell for i, c in attributes if (cell := cells[i]) != ""}
            if (
                3 <= len(email) <= MAX_EMAIL
                and (name is None or len(name) <= MAX_NAME)
                and all(len(value) <= MAX_ATTRIBUTE_TEXT for value in patch.values())
            ):
                checked = normalised(SubscriberInput(email=email, name=name, attributes=patch), "#")
                if isinstance(checked, ItemProblem):
                    errors.append(RowError(line, "invalid_email", checked.detail))
                else:
                    items.append(checked)
                continue
        result = row_item(columns, line, cells)
        if isinstance(result, RowError):
            errors.append(result)
        elif result is not None:
            items.append(result)
    return items, errors, counted
