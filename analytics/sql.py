"""The SQL both backends run, written once; a `Dialect` spells the few things DuckDB and ClickHouse differ on.

Every value reaches the database as a bound parameter: `Bound` collects them under generated names and
the dialect writes the placeholder (`$p0` for DuckDB, `{p0:String}` for ClickHouse).
"""

from __future__ import annotations

from typing import Any

from analytics.queries import EventFilter
from analytics.rows import READ_COLUMNS

# Dimensions an aggregate may group by: name -> column (tag and bucket are computed).
DIMENSIONS = ("bucket", "tag", "provider", "server", "campaign_id", "recipient_domain", "url")
_EQUALITY_FILTERS = ("message_id", "campaign_id", "recipient", "recipient_domain", "provider", "server")


class Bound:
    def __init__(self, dialect: Dialect) -> None:
        self.values: dict[str, Any] = {}
        self._dialect = dialect

    def __call__(self, value: Any, ch_type: str = "String") -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return self._dialect.placeholder(name, ch_type)


class Dialect:
    """The shared query shapes; subclasses fill in the hooks below."""

    created_ms = "created_at"  # an expression giving epoch milliseconds
    final = ""  # after a table name: read it deduplicated (ClickHouse's " FINAL")

    def placeholder(self, name: str, ch_type: str) -> str:
        raise NotImplementedError

    def time(self, bind: Bound, ms: int) -> str:
        raise NotImplementedError

    def one_of(self, column: str, values: tuple[str, ...], bind: Bound) -> str:
        raise NotImplementedError

    def has_tag(self, placeholder: str) -> str:
        raise NotImplementedError

    def unique_pairs(self) -> str:
        """Distinct (message, recipient) pairs among opens and clicks: distinct non-zero pair_hash."""
        raise NotImplementedError

    def source(self, where: str, with_tag: bool) -> str:
        """`FROM ... WHERE where`; with_tag adds a `tag` column, one row per tag ('' for none)."""
        raise NotImplementedError

    def bucket(self, width: str) -> str:
        """The start (epoch ms) of the `width`-millisecond bucket holding created_at."""
        raise NotImplementedError

    def int_div(self, dividend: str, divisor: str) -> str:
        """Integer division rounding toward minus infinity, of non-negative operands in our use."""
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------------------
    def where(self, flt: EventFilter, bind: Bound) -> str:
        parts = [f"workspace = {bind(flt.workspace)}"]
        if flt.from_ms is not None:
            parts.append(f"created_at >= {self.time(bind, flt.from_ms)}")
        if flt.to_ms is not None:
            parts.append(f"created_at < {self.time(bind, flt.to_ms)}")
        if flt.types is not None:
            parts.append(self.one_of("type", flt.types, bind))
        for column in _EQUALITY_FILTERS:
            value = getattr(flt, column)
            if value is not None:
                parts.append(f"{column} = {bind(value)}")
        if flt.tag is not None:
            parts.append(self.has_tag(bind(flt.tag)))
        return " AND ".join(parts)

    def _after(self, after: tuple[int, str], newest_first: bool, bind: Bound) -> str:
        at, event_id = self.time(bind, after[0]), bind(after[1])
        before, strictly = ("<=", "<") if newest_first else (">=", ">")
        return f"created_at {before} {at} AND (created_at {strictly} {at} OR id {strictly} {event_id})"

    def select_events(
        self, flt: EventFilter, after: tuple[int, str] | None, limit: int | None, newest_first: bool
    ) -> tuple[str, dict[str, Any]]:
        bind = Bound(self)
        where = self.where(flt, bind)
        if after is not None:
            where += " AND " + self._after(after, newest_first, bind)
        columns = ", ".join(
            self.created_ms + " AS created_ms" if c == "created_at" else c for c in READ_COLUMNS
        )
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT {columns} {self.source(where, False)} ORDER BY created_at {order}, id {order}"
        if limit is not None:
            sql += f" LIMIT {bind(limit, 'UInt32')}"
        return sql, bind.values

    def dimension(self, name: str, bind: Bound, width_ms: int | None) -> str:
        if name == "bucket":
            return self.bucket(bind(width_ms, "Int64"))
        if name not in DIMENSIONS:
            raise ValueError(f"unknown dimension {name!r}")
        return name

    def aggregate(
        self, flt: EventFilter, sets: list[tuple[str, ...]], width_ms: int | None
    ) -> tuple[str, dict[str, Any], list[str]]:
        """One scan answering several groupings (GROUPING SETS). Rows: (grouping id, *dims, type, hard,
        events, unique (message, recipient) pairs); `dims` (returned third) names the dimension columns,
        and a dimension absent from a row's grouping set holds a meaningless filler value."""
        dims = sorted({d for grouping in sets for d in grouping}, key=DIMENSIONS.index)
        bind = Bound(self)
        alias = {d: f"d{i}" for i, d in enumerate(dims)}
        selected = [f"grouping({', '.join(alias.values())}) AS g" if dims else "0 AS g"]
        selected += [f"{self.dimension(d, bind, width_ms)} AS {alias[d]}" for d in dims]
        selected += [
            "type",
            f"bounce_type = {bind('hard')} AS hard",
            "count(*) AS events",
            f"{self.unique_pairs()} AS uniq",
        ]
        source = self.source(self.where(flt, bind), "tag" in dims)
        grouping_sets = ", ".join(
            "(" + ", ".join([alias[d] for d in g] + ["type", "hard"]) + ")" for g in sets
        )
        return (
            f"SELECT {', '.join(selected)} {source} GROUP BY GROUPING SETS ({grouping_sets})",
            bind.values,
            dims,
        )


def split_sets(
    rows: list[tuple[Any, ...]], dims: list[str], sets: list[tuple[str, ...]]
) -> dict[tuple[str, ...], list[tuple[Any, ...]]]:
    """Rows of `aggregate` by grouping set: (*the set's dims in its order, type, hard, events, uniq)."""
    by_mask: dict[int, tuple[str, ...]] = {}
    for grouping in sets:
        mask = sum(1 << (len(dims) - 1 - i) for i, d in enumerate(dims) if d not in grouping)
        by_mask[mask] = grouping
    split: dict[tuple[str, ...], list[tuple[Any, ...]]] = {g: [] for g in sets}
    for row in rows:
        grouping = by_mask[int(row[0])]
        values = [row[1 + dims.index(d)] for d in grouping]
        split[grouping].append((*values, *row[1 + len(dims) :]))
    return split
