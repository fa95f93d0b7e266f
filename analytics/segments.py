"""A segment CONDITION (schemas/segments.py) compiled to parameterised SQL over the subscriber mirror.

No user text ever reaches the SQL text: attribute names, values, list ids, event types and campaign ids
are all bound parameters (`Bound`), and the SQL for a condition depends only on its shape (ops, value
kinds, which fields), never on its strings. Both backends run the same shape; `JsonSQL` spells the JSON
extraction each engine offers (DuckDB `json_type`/`json_extract_string`, ClickHouse `JSONType`/
`JSONExtract*`). Every leaf is a two-valued boolean (DuckDB NULLs are folded to false), so `not`, `ne`
and `not_in` mean the same on both: a subscriber without the attribute matches `ne` and `not_in`.

Event conditions count the subscriber's events by (workspace, recipient = email): message events and
custom events alike. Counting distinct event ids keeps replays (not yet merged in ClickHouse) out.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from analytics.rows import epoch_ms
from analytics.sql import Bound, Dialect
from schemas.segments import All, AnyOf, AttributeIs, Condition, EventCount, Not, SegmentQuery

_COMPARE = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
MEMBER_COLUMNS = ("id", "email", "name", "attributes", "status", "created_ms")


class JsonSQL:
    """How one engine reads a typed value out of the `attributes` JSON text. `key` is a placeholder."""

    final = ""
    false = "false"
    not_deleted = "NOT s.deleted"
    settings = ""

    def key(self, bind: Bound, name: str) -> str:
        raise NotImplementedError

    def kind_is(self, key: str, kind: str) -> str:
        raise NotImplementedError

    def text(self, key: str) -> str:
        raise NotImplementedError

    def number(self, key: str) -> str:
        raise NotImplementedError

    def boolean(self, key: str, bind: Bound, value: bool) -> str:
        raise NotImplementedError

    def strings(self, key: str) -> str:
        raise NotImplementedError

    def has(self, array: str, placeholder: str) -> str:
        raise NotImplementedError

    def contains(self, text: str, placeholder: str) -> str:
        raise NotImplementedError

    def starts_with(self, text: str, placeholder: str) -> str:
        raise NotImplementedError

    def list_param(self, bind: Bound, values: tuple[Any, ...]) -> str:
        raise NotImplementedError

    def count_distinct(self, column: str) -> str:
        return f"count(DISTINCT {column})"

    def two_valued(self, expr: str) -> str:
        return expr


class DuckJson(JsonSQL):
    _kinds = {
        "string": "('VARCHAR')",
        "number": "('BIGINT', 'UBIGINT', 'DOUBLE')",
        "bool": "('BOOLEAN')",
        "array": "('ARRAY')",
        "present": "('VARCHAR', 'BIGINT', 'UBIGINT', 'DOUBLE', 'BOOLEAN', 'ARRAY', 'OBJECT')",
    }

    def key(self, bind: Bound, name: str) -> str:
        return bind('$."' + name + '"')  # a JSON path, bound like any value (names are validated too)

    def kind_is(self, key: str, kind: str) -> str:
        return f"json_type(s.attributes, {key}) IN {self._kinds[kind]}"

    def text(self, key: str) -> str:
        return f"json_extract_string(s.attributes, {key})"

    def number(self, key: str) -> str:
        return f"TRY_CAST(json_extract_string(s.attributes, {key}) AS DOUBLE)"

    def boolean(self, key: str, bind: Bound, value: bool) -> str:
        return f"json_extract_string(s.attributes, {key}) = {bind('true' if value else 'false')}"

    def strings(self, key: str) -> str:
        return f"TRY_CAST(json_extract(s.attributes, {key}) AS VARCHAR[])"

    def has(self, array: str, placeholder: str) -> str:
        return f"list_contains({array}, {placeholder})"

    def contains(self, text: str, placeholder: str) -> str:
        return f"contains({text}, {placeholder})"

    def starts_with(self, text: str, placeholder: str) -> str:
        return f"starts_with({text}, {placeholder})"

    def list_param(self, bind: Bound, values: tuple[Any, ...]) -> str:
        return bind(list(values))

    def two_valued(self, expr: str) -> str:
        return f"coalesce({expr}, false)"


class ClickHouseJson(JsonSQL):
    final = " FINAL"
    false = "0"
    not_deleted = "s.deleted = 0"
    # `s.id IN (memberships…)` would otherwise also turn the list's whole membership set (a million ids)
    # into primary-key ranges of `subscribers` before reading: measured 0.9-1.1 s of index analysis for
    # a read the FINAL scan does anyway (0.25 s without it, bench/segments.py).
    settings = " SETTINGS use_index_for_in_with_subqueries = 0"
    _kinds = {
        "string": "('String')",
        "number": "('Int64', 'UInt64', 'Double')",
        "bool": "('Bool')",
        "array": "('Array')",
        "present": "('String', 'Int64', 'UInt64', 'Double', 'Bool', 'Array', 'Object')",
    }

    def key(self, bind: Bound, name: str) -> str:
        return bind(name)

    def kind_is(self, key: str, kind: str) -> str:
        return f"toString(JSONType(s.attributes, {key})) IN {self._kinds[kind]}"

    def text(self, key: str) -> str:
        return f"JSONExtractString(s.attributes, {key})"

    def number(self, key: str) -> str:
        return f"JSONExtractFloat(s.attributes, {key})"

    def boolean(self, key: str, bind: Bound, value: bool) -> str:
        return f"JSONExtractBool(s.attributes, {key}) = {bind(int(value), 'UInt8')}"

    def strings(self, key: str) -> str:
        return f"JSONExtract(s.attributes, {key}, 'Array(String)')"

    def has(self, array: str, placeholder: str) -> str:
        return f"has({array}, {placeholder})"

    def contains(self, text: str, placeholder: str) -> str:
        return f"position({text}, {placeholder}) > 0"

    def starts_with(self, text: str, placeholder: str) -> str:
        return f"startsWith({text}, {placeholder})"

    def list_param(self, bind: Bound, values: tuple[Any, ...]) -> str:
        kind = "Float64" if isinstance(values[0], int | float) else "String"
        return bind([float(v) for v in values] if kind == "Float64" else list(values), f"Array({kind})")


def _kind(value: Any) -> str:
    return "bool" if isinstance(value, bool) else "number" if isinstance(value, int | float) else "string"


class SegmentCompiler:
    """Compiles one SegmentQuery for one workspace at one `now` (event windows end at `now`)."""

    def __init__(self, dialect: Dialect, json: JsonSQL, workspace: str, query: SegmentQuery, now: datetime):
        self.dialect, self.json, self.now = dialect, json, now
        self.bind = Bound(dialect)
        self.workspace, self.lists, self.subscriber = workspace, query.lists, query.subscriber

    def where(self, condition: Condition | None) -> str:
        parts = [f"s.workspace = {self.bind(self.workspace)}", self.json.not_deleted]
        if self.subscriber is not None:
            parts.append(f"s.id = {self.bind(self.subscriber)}")
        if self.lists:
            parts.append(f"s.id IN ({self._members()})")
        if condition is not None:
            parts.append(self.condition(condition))
        return " AND ".join(parts)

    def source(self) -> str:
        return f"FROM subscribers AS s{self.json.final}"

    def condition(self, node: Condition) -> str:
        if isinstance(node, All):
            return "(" + " AND ".join(self.condition(c) for c in node.items) + ")"
        if isinstance(node, AnyOf):
            return "(" + " OR ".join(self.condition(c) for c in node.items) + ")"
        if isinstance(node, Not):
            return f"(NOT {self.condition(node.item)})"
        if isinstance(node, EventCount):
            return self._event(node)
        return self._attribute(node)

    # --- leaves ------------------------------------------------------------------------------------
    def _members(self, statuses: tuple[Any, ...] | None = None) -> str:
        """Subscriber ids with a membership in the segment's lists (of `statuses`, when given). Both
        read the newest version of each membership (FINAL): a member removed from a list (`list.removed`)
        keeps a `removed` row at a newer version, so an older row alone would still count them."""
        where = [f"workspace = {self.bind(self.workspace)}"]
        if self.lists:
            where.append(self.json.has(self.json.list_param(self.bind, self.lists), "list_id"))
        if statuses is not None:
            where.append(self.json.has(self.json.list_param(self.bind, statuses), "status"))
        else:  # a `list.removed` row is the memory of a membership, not one
            where.append("status <> 'removed'")
        return f"SELECT subscriber_id FROM memberships{self.json.final} WHERE {' AND '.join(where)}"

    def _event(self, node: EventCount) -> str:
        where = [f"workspace = {self.bind(self.workspace)}", f"type = {self.bind(node.type)}"]
        if node.within_days is not None:
            since = epoch_ms(self.now - timedelta(days=node.within_days))
            where.append(f"created_at >= {self.dialect.time(self.bind, since)}")
        if node.campaign_id is not None:
            where.append(f"campaign_id = {self.bind(node.campaign_id)}")
        sql = f"SELECT recipient FROM events WHERE {' AND '.join(where)}"
        if node.count_gte > 1:
            threshold = self.bind(node.count_gte, "UInt64")
            sql += f" GROUP BY recipient HAVING {self.json.count_distinct('id')} >= {threshold}"
        return f"(s.email IN ({sql}))"

    def _attribute(self, node: AttributeIs) -> str:
        if node.name == "list_status":
            statuses = node.value if isinstance(node.value, tuple) else (node.value,)
            found = f"(s.id IN ({self._members(statuses)}))"
            return f"(NOT {found})" if node.op in ("ne", "not_in") else found
        if node.name == "created_at":
            assert isinstance(node.value, datetime)
            at = self.dialect.time(self.bind, epoch_ms(node.value))
            return f"(s.created_at {_COMPARE[node.op]} {at})"
        if node.name in ("email", "name"):
            return self._column(f"s.{node.name}", node)
        return self._json_attribute(node)

    def _column(self, column: str, node: AttributeIs) -> str:
        op, value = node.op, node.value
        if op == "exists":
            found = f"({column} <> {self.bind('')})"
        else:
            found = self.json.two_valued(self._positive(column, "string", op, value))
        return f"(NOT {found})" if _negative(node) else found

    def _json_attribute(self, node: AttributeIs) -> str:
        json, op, value = self.json, node.op, node.value
        key = json.key(self.bind, node.name)
        if op == "exists":
            found = f"({json.kind_is(key, 'present')})"
        elif op == "contains":
            needle = self.bind(value)
            in_text = f"{json.kind_is(key, 'string')} AND {json.contains(json.text(key), needle)}"
            in_array = f"{json.kind_is(key, 'array')} AND {json.has(json.strings(key), needle)}"
            found = f"(({in_text}) OR ({in_array}))"
        else:
            kind = _kind(value[0] if isinstance(value, tuple) else value)
            if kind == "bool":
                options = value if isinstance(value, tuple) else (value,)
                matched = " OR ".join(json.boolean(key, self.bind, bool(v)) for v in options)
            else:
                extracted = json.number(key) if kind == "number" else json.text(key)
                matched = self._positive(extracted, kind, op, value)
            found = f"({json.kind_is(key, kind)} AND ({matched}))"
        found = json.two_valued(found)  # before negating: NOT NULL would stay NULL in DuckDB
        return f"(NOT {found})" if _negative(node) else found

    def _positive(self, expr: str, kind: str, op: str, value: Any) -> str:
        """`expr op value` with ne read as eq and not_in as in (the caller negates the whole leaf, type
        check included, so a subscriber without the attribute satisfies ne and not_in)."""
        ch = "Float64" if kind == "number" else "String"
        if op in ("in", "not_in"):
            return self.json.has(self.json.list_param(self.bind, tuple(value)), expr)
        if op == "contains":
            return self.json.contains(expr, self.bind(value))
        if op == "starts_with":
            return self.json.starts_with(expr, self.bind(value))
        bound = self.bind(float(value) if kind == "number" else value, ch)
        return f"{expr} {_COMPARE['eq' if op == 'ne' else op]} {bound}"


def _negative(node: AttributeIs) -> bool:
    """ne, not_in and `exists: false` are the negation of eq, in and exists."""
    return node.op in ("ne", "not_in") or (node.op == "exists" and node.value is False)
