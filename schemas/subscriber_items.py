"""Raw subscriber input (a bulk item's JSON, a CSV row) → a normalised `SubscriberInput` or its problem.

Shared by the bulk endpoint (ingress) and the import runner (actors), so a row of a file and an item of
a request are held to the same rules: the `SubscriberInput` schema, then a normalised address.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from schemas.audience import ATTRIBUTE_KEY_PATTERN, ItemProblem, RowError, SubscriberInput, item_decoder
from schemas.domain_names import normalise_email
from schemas.problems import ERROR_CODES, ERROR_TYPE_BASE

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


def normalised(item: SubscriberInput, pointer: str) -> SubscriberInput | ItemProblem:
    try:
        email = normalise_email(item.email)
    except ValueError:
        return item_problem(pointer + "/email", "not an email address", "invalid_email")
    local, _, domain = email.rpartition("@")
    if "." not in domain or any(c in _NOT_IN_LOCAL for c in local):
        return item_problem(pointer + "/email", "not an email address", "invalid_email")
    return msgspec.structs.replace(item, email=email)


def _schema_problem(message: str, pointer: str) -> ItemProblem:
    detail, _, where = message.partition(" - at ")
    path = where.strip("`$").replace("[", "/").replace("]", "").replace(".", "/")
    return item_problem(pointer + path, detail, "invalid")


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
