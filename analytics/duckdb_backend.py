"""The embedded backend: one DuckDB file, owned by one process (DuckDB allows a single writer).

Inserts go through Arrow (`INSERT ... SELECT` from an Arrow table): executemany manages about 450
rows/s, Arrow well over 100k. The primary key on the event id makes a replay a no-op: a batch with a
stored event fails on it and is redone as INSERT OR IGNORE (`insert_new_first`).
Times are stored as naive TIMESTAMPs that mean UTC.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from analytics.campaign_firsts import FIRSTS_COLUMNS, Key, flag_batch, lookup_query
from analytics.errors import StoreUnavailable
from analytics.migrations import load
from analytics.mirror import (
    CHUNK_CONSTANTS,
    CHUNK_EVENT_COLUMNS,
    ERASED_VERSION,
    MEMBERSHIP_COLUMNS,
    SUBSCRIBER_COLUMNS,
    ChunkColumns,
    tombstone,
)
from analytics.queries import EventFilter, WindowPolicy
from analytics.rows import AGGREGATE_COLUMNS, COLUMNS, epoch_ms, from_epoch_ms
from analytics.segments import DuckJson
from analytics.sql import Bound, Dialect
from analytics.sql_store import Rows, SqlAnalyticsStore, T
from schemas.campaign_report import COUNTS

log = logging.getLogger(__name__)


# How DuckDB says it ran out of memory when the error is not its OutOfMemoryException: a COMMIT's
# (TransactionException) or a checkpoint's (FatalException) allocation or pin that failed.
_OUT_OF_MEMORY = ("could not allocate block", "failed to pin block", "Out of Memory Error")


def _out_of_memory(error: BaseException | None) -> bool:
    """DuckDB's out-of-memory error, or another error a failed allocation caused."""
    return isinstance(error, duckdb.OutOfMemoryException) or (
        isinstance(error, duckdb.Error) and any(mark in str(error) for mark in _OUT_OF_MEMORY)
    )


_INSERTED = (
    "workspace",
    "type",
    "recipient",
    "created_at",
    "campaign_id",
    "recipient_domain",
    "provider",
    "server",
    "campaign_variant",
    "url",
    *AGGREGATE_COLUMNS,
)
_ARROW_TYPES = {
    "created_at": pa.timestamp("ms"),
    "tags": pa.list_(pa.string()),
    "pair_hash": pa.uint64(),
    "machine_open": pa.bool_(),
    "firsts": pa.uint8(),
    "demoted_open_ms": pa.int64(),
    "demoted_click_ms": pa.int64(),
}
ARROW_SCHEMA = pa.schema([(c, _ARROW_TYPES.get(c, pa.string())) for c in COLUMNS])
FIRSTS_SCHEMA = pa.schema(
    [
        ("workspace", pa.string()),
        ("campaign_id", pa.string()),
        ("kind", pa.uint8()),
        ("key", pa.uint64()),
        ("url", pa.string()),
        ("provider", pa.string()),
        ("server", pa.string()),
        ("created_at", pa.timestamp("ms")),
        ("event_id", pa.string()),
    ]
)
if tuple(FIRSTS_SCHEMA.names) != FIRSTS_COLUMNS:
    raise RuntimeError("FIRSTS_SCHEMA and analytics.campaign_firsts.FIRSTS_COLUMNS differ")
CHUNK_SCHEMA = pa.schema([(c, ARROW_SCHEMA.field(c).type) for c in CHUNK_EVENT_COLUMNS])
_MIRROR_TYPES = {"created_at": pa.timestamp("ms"), "version": pa.int64(), "deleted": pa.bool_()}
SUBSCRIBER_SCHEMA = pa.schema([(c, _MIRROR_TYPES.get(c, pa.string())) for c in SUBSCRIBER_COLUMNS])
MEMBERSHIP_SCHEMA = pa.schema([(c, _MIRROR_TYPES.get(c, pa.string())) for c in MEMBERSHIP_COLUMNS])


def _sql_constant(value: Any, kind: pa.DataType) -> str:
    """A CHUNK_CONSTANTS value as SQL (they are fixed literals, never input)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"CAST({value} AS UBIGINT)"
    if isinstance(value, list):
        return "CAST([] AS VARCHAR[])"
    return "'" + value.replace("'", "''") + "'"


def insert_new_first(cursor: duckdb.DuckDBPyConnection, into: str, otherwise: str | None = None) -> None:
    """`INSERT INTO {into}` (a table and its rows), one statement in its own transaction; when a row's key
    is stored already (a replay), `otherwise` instead (default: the same as INSERT OR IGNORE). OR IGNORE
    and ON CONFLICT cost a scan of the stored keys each time (24 us a row at 3M rows, against ~2 for the
    plain insert; `DuckDBStore._insert`)."""
    try:
        cursor.execute(f"INSERT INTO {into}")
    except duckdb.ConstraintException:
        cursor.execute(otherwise or f"INSERT OR IGNORE INTO {into}")


def _upsert(table: str, key: tuple[str, ...], names: tuple[str, ...]) -> str:
    """Replace a row only with a higher version: a replayed or late event changes nothing."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in names if c not in key)
    return (
        f"INSERT INTO {table} SELECT * FROM incoming_{table} ON CONFLICT ({', '.join(key)}) "
        f"DO UPDATE SET {updates} WHERE excluded.version > {table}.version"
    )


_CHUNK_EVENTS_INTO = (
    "events SELECT "
    + ", ".join(
        c
        if c in CHUNK_EVENT_COLUMNS
        else f"{_sql_constant(CHUNK_CONSTANTS[c], ARROW_SCHEMA.field(c).type)} AS {c}"
        for c in COLUMNS
    )
    + " FROM incoming_members"
)
_UPSERT_SUBSCRIBERS = _upsert("subscribers", ("workspace", "id"), SUBSCRIBER_COLUMNS)
_UPSERT_MEMBERSHIPS = _upsert("memberships", ("workspace", "subscriber_id", "list_id"), MEMBERSHIP_COLUMNS)
# Overwrites the row in place (a DELETE then INSERT of one key inside a transaction trips DuckDB's
# index checks); the highest version means no event of the person can ever replace it.
_TOMBSTONE = (
    f"INSERT INTO subscribers VALUES ({', '.join('$' + c for c in SUBSCRIBER_COLUMNS)}) "
    "ON CONFLICT (workspace, id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in SUBSCRIBER_COLUMNS if c not in ("workspace", "id"))
)
_ERASE_EVENTS = (
    "UPDATE events SET recipient = '', recipient_domain = '', metadata = '{}', data = '{}' "
    "WHERE workspace = $workspace AND recipient = $email"
)
_ERASE_EVENT_DAYS = "DELETE FROM event_days WHERE workspace = $workspace AND recipient = $email"
# event_days (migration 0004): what segment event conditions read. Only the events a batch really adds
# (`inserted_events`, what the insert returned) are counted.
_EVENT_DAYS_KEY = "workspace, type, recipient, day, campaign_id"
_COUNT_NEW_EVENTS = (
    "INSERT INTO event_days SELECT workspace, type, recipient, CAST(created_at AS DATE) AS day, "
    "campaign_id, count(*) FROM inserted_events "
    f"GROUP BY ALL ON CONFLICT ({_EVENT_DAYS_KEY}) DO UPDATE SET events = event_days.events + excluded.events"
)


# The campaign aggregates (migration 0006) from the same inserted rows, flags decided before the insert
# (analytics/campaign_firsts.py): counters added up per key; a displaced first's unique count leaves its
# minute and its (provider, server) (the -1s; its domain and variant are the pair's). The sums are made in
# Python from the rows the insert returned (`campaign_counts`) and added with one plain upsert per table:
# DuckDB plans a statement in milliseconds, and the three GROUP BY / UNION statements this replaces were
# most of a small batch's insert (docs/analytics.md, "Campaign aggregates").
_REPORT_TYPES = (
    "'message.sent', 'message.delivered', 'message.bounced', 'message.complained', 'message.opened', "
    "'message.clicked', 'subscriber.unsubscribed', 'message.failed', 'message.suppressed'"
)
_COUNTERS = COUNTS  # the report's counters, each a column of the aggregate tables
_COUNTED = (
    "count(*) FILTER (WHERE type = 'message.sent') AS sent, "
    "count(*) FILTER (WHERE type = 'message.delivered') AS delivered, "
    "count(*) FILTER (WHERE type = 'message.bounced') AS bounced, "
    "count(*) FILTER (WHERE type = 'message.complained') AS complained, "
    "count(*) FILTER (WHERE type = 'message.opened') AS opened, "
    "{ou} AS opened_unique, "
    "count(*) FILTER (WHERE type = 'message.clicked') AS clicked, "
    "{cu} AS clicked_unique, "
    "count(*) FILTER (WHERE type = 'subscriber.unsubscribed') AS unsubscribed, "
    "count(*) FILTER (WHERE type = 'message.failed') AS failed, "
    "count(*) FILTER (WHERE type = 'message.suppressed') AS suppressed"
)
# The counter each report type adds to (its index in COUNTS).
_COUNTER_OF = {
    "message.sent": COUNTS.index("sent"),
    "message.delivered": COUNTS.index("delivered"),
    "message.bounced": COUNTS.index("bounced"),
    "message.complained": COUNTS.index("complained"),
    "message.opened": COUNTS.index("opened"),
    "message.clicked": COUNTS.index("clicked"),
    "subscriber.unsubscribed": COUNTS.index("unsubscribed"),
    "message.failed": COUNTS.index("failed"),
    "message.suppressed": COUNTS.index("suppressed"),
}
_OPENED_UNIQUE, _CLICKED_UNIQUE = COUNTS.index("opened_unique"), COUNTS.index("clicked_unique")


def _add_up(table: str, key: str) -> str:
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in _COUNTERS)
    return f"ON CONFLICT ({key}) DO UPDATE SET {updates}"


_GROUP_KEY = "workspace, campaign_id, recipient_domain, provider, server, campaign_variant"
_GROUP_COLUMNS = tuple(_GROUP_KEY.split(", "))
_MINUTE_COLUMNS = ("workspace", "campaign_id", "minute")
_LINK_COLUMNS = ("workspace", "campaign_id", "url")
# What `campaign_counts` reads of the inserted rows (the RETURNING clause adds `created_ms`).
_CAMPAIGN_INPUT = (
    "campaign_id",
    "type",
    "workspace",
    "recipient_domain",
    "provider",
    "server",
    "campaign_variant",
    "created_ms",
    "url",
    *AGGREGATE_COLUMNS,  # firsts, then the six demoted_* (unpacked in this order by campaign_counts)
)
_COUNTER_SCHEMA = [(c, pa.int64()) for c in _COUNTERS]
GROUPS_SCHEMA = pa.schema([(c, pa.string()) for c in _GROUP_COLUMNS] + _COUNTER_SCHEMA)
MINUTES_SCHEMA = pa.schema([("workspace", pa.string()), ("campaign_id", pa.string()), ("minute", pa.int64())])
MINUTES_SCHEMA = pa.schema(list(MINUTES_SCHEMA) + [pa.field(c, t) for c, t in _COUNTER_SCHEMA])
LINKS_SCHEMA = pa.schema(
    [(c, pa.string()) for c in _LINK_COLUMNS] + [("clicks", pa.int64()), ("clicked_unique", pa.int64())]
)
_ADD_GROUPS = "INSERT INTO campaign_groups SELECT * FROM incoming_groups " + _add_up(
    "campaign_groups", _GROUP_KEY
)
_ADD_MINUTES = "INSERT INTO campaign_minutes SELECT * FROM incoming_minutes " + _add_up(
    "campaign_minutes", "workspace, campaign_id, minute"
)
_ADD_LINKS = (
    "INSERT INTO campaign_links SELECT * FROM incoming_links "
    "ON CONFLICT (workspace, campaign_id, url) DO UPDATE SET "
    "clicks = campaign_links.clicks + excluded.clicks, "
    "clicked_unique = campaign_links.clicked_unique + excluded.clicked_unique"
)


class CampaignCounts:
    """The additions a batch's inserted rows make to `campaign_groups`, `campaign_minutes` and
    `campaign_links`: per key, the counters' sums (what a GROUP BY of the rows would give)."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, ...], list[int]] = {}
        self.minutes: dict[tuple[str, str, int], list[int]] = {}
        self.links: dict[tuple[str, str, str], list[int]] = {}

    def _group(self, key: tuple[str, ...]) -> list[int]:
        found = self.groups.get(key)
        if found is None:
            found = self.groups[key] = [0] * len(_COUNTERS)
        return found

    def _minute(self, key: tuple[str, str, int]) -> list[int]:
        found = self.minutes.get(key)
        if found is None:
            found = self.minutes[key] = [0] * len(_COUNTERS)
        return found

    def tables(self) -> list[tuple[str, pa.Table, str]]:
        """(name to register, rows, statement) for each table that gets rows."""
        found = []
        for name, rows, schema, statement in (
            ("incoming_groups", self.groups, GROUPS_SCHEMA, _ADD_GROUPS),
            ("incoming_minutes", self.minutes, MINUTES_SCHEMA, _ADD_MINUTES),
            ("incoming_links", self.links, LINKS_SCHEMA, _ADD_LINKS),
        ):
            if rows:
                table_rows = [(*key, *sums) for key, sums in rows.items()]
                columns = list(zip(*table_rows, strict=True))
                table = pa.Table.from_arrays(
                    [
                        pa.array(list(values), type=field.type)
                        for values, field in zip(columns, schema, strict=True)
                    ],
                    schema=schema,
                )
                found.append((name, table, statement))
        return found


def campaign_counts(rows: dict[str, list[Any]]) -> CampaignCounts:
    """The campaign aggregates' additions from inserted rows (`_CAMPAIGN_INPUT` columns). Each report-type
    event of a campaign counts in its group (domain, provider, server, variant) and its minute; a flagged
    first open / click also in `opened_unique` / `clicked_unique`; a click on a URL in its link; a first
    this event displaced is taken back (-1) from its own minute and (provider, server)."""
    counts = CampaignCounts()
    (
        campaign_ids,
        types,
        workspaces,
        domains,
        providers,
        servers,
        variants,
        created,
        urls,
        firsts,
        demoted_open,
        demoted_click,
        demoted_open_provider,
        demoted_open_server,
        demoted_click_provider,
        demoted_click_server,
    ) = (rows[c] for c in _CAMPAIGN_INPUT)
    for i, campaign_id in enumerate(campaign_ids):
        if not campaign_id:
            continue
        workspace, domain, variant = workspaces[i], domains[i], variants[i]
        counter = _COUNTER_OF.get(types[i])
        if counter is not None:
            kind, flags = types[i], firsts[i]
            group = counts._group((workspace, campaign_id, domain, providers[i], servers[i], variant))
            minute = counts._minute((workspace, campaign_id, created[i] // 60000 * 60000))
            group[counter] += 1
            minute[counter] += 1
            if kind == "message.opened" and flags % 2 == 1:
                group[_OPENED_UNIQUE] += 1
                minute[_OPENED_UNIQUE] += 1
            elif kind == "message.clicked":
                if flags % 4 >= 2:
                    group[_CLICKED_UNIQUE] += 1
                    minute[_CLICKED_UNIQUE] += 1
                if urls[i]:
                    link = counts.links.setdefault((workspace, campaign_id, urls[i]), [0, 0])
                    link[0] += 1
                    link[1] += flags >= 4
        if demoted_open[i]:
            key = (workspace, campaign_id, domain, demoted_open_provider[i], demoted_open_server[i], variant)
            counts._group(key)[_OPENED_UNIQUE] -= 1
            counts._minute((workspace, campaign_id, demoted_open[i] // 60000 * 60000))[_OPENED_UNIQUE] -= 1
        if demoted_click[i]:
            key = (
                workspace,
                campaign_id,
                domain,
                demoted_click_provider[i],
                demoted_click_server[i],
                variant,
            )
            counts._group(key)[_CLICKED_UNIQUE] -= 1
            counts._minute((workspace, campaign_id, demoted_click[i] // 60000 * 60000))[_CLICKED_UNIQUE] -= 1
    return counts


# Erasure moves the person's campaign counts from their domain to '' (what their events' domain becomes),
# in the erasure's transaction, before the events lose it: no per-domain row keeps a person's own domain.
_ERASED_COUNTS = (
    f"(SELECT {_GROUP_KEY}, "
    + _COUNTED.format(
        ou="count(DISTINCT pair_hash) FILTER (WHERE type = 'message.opened' AND NOT machine_open)",
        cu="count(DISTINCT pair_hash) FILTER (WHERE type = 'message.clicked' AND NOT machine_open)",
    )
    + " FROM events WHERE workspace = $workspace AND recipient = $email AND campaign_id <> '' "
    f"AND recipient_domain <> '' AND type IN ({_REPORT_TYPES}) GROUP BY ALL)"
)
_MOVE_ERASED = (
    f"INSERT INTO campaign_groups SELECT {_GROUP_KEY}, "
    + ", ".join(f"sum({c})" for c in _COUNTERS)
    + f" FROM (SELECT {_GROUP_KEY}, "
    + ", ".join(f"-{c} AS {c}" for c in _COUNTERS)
    + f" FROM {_ERASED_COUNTS} UNION ALL BY NAME "
    + f"SELECT * REPLACE ('' AS recipient_domain) FROM {_ERASED_COUNTS}) "
    + "GROUP BY ALL "
    + _add_up("campaign_groups", _GROUP_KEY)
)
_DROP_EMPTY_GROUPS = "DELETE FROM campaign_groups WHERE workspace = $workspace AND " + " AND ".join(
    f"{c} = 0" for c in _COUNTERS
)


_RETURNING = f" RETURNING {', '.join(_INSERTED)}, epoch_ms(created_at) AS created_ms"
_INSERT_NEW = "INSERT INTO events SELECT * FROM incoming_batch" + _RETURNING
_INSERT_IGNORING = "INSERT OR IGNORE INTO events SELECT * FROM incoming_batch" + _RETURNING


_RECOUNT_DAY = (
    "INSERT INTO event_days SELECT workspace, type, recipient, CAST(created_at AS DATE), campaign_id, "
    "count(*) FROM events WHERE created_at >= $cutoff "
    "AND created_at < CAST(CAST($cutoff AS DATE) AS TIMESTAMP) + INTERVAL 1 DAY GROUP BY ALL"
)


class DuckDialect(Dialect):
    created_ms = "epoch_ms(created_at)"

    def placeholder(self, name: str, ch_type: str) -> str:
        return f"${name}"

    def time(self, bind: Bound, ms: int) -> str:
        # A naive timestamp compares directly with the column, so zone maps still prune row groups.
        return bind(from_epoch_ms(ms).replace(tzinfo=None))

    def one_of(self, column: str, values: tuple[str, ...], bind: Bound) -> str:
        return f"list_contains({bind(list(values))}, {column})"

    def has_tag(self, placeholder: str) -> str:
        return f"list_contains(tags, {placeholder})"

    def unique_pairs(self) -> str:
        return "count(DISTINCT pair_hash) FILTER (WHERE pair_hash <> 0)"

    def source(self, where: str, with_tag: bool) -> str:
        if not with_tag:
            return f"FROM events WHERE {where}"
        return (
            "FROM (SELECT *, unnest(CASE WHEN len(tags) = 0 THEN [''] ELSE tags END) AS tag "
            f"FROM events WHERE {where}) AS tagged"
        )

    def bucket(self, width: str) -> str:
        return f"({self.created_ms} // {width}) * {width}"

    def int_div(self, dividend: str, divisor: str) -> str:
        return f"(({dividend}) // {divisor})"

    def export_lines(self, flt: EventFilter) -> tuple[str, dict[str, Any]]:
        """Each event as the JSON line msgspec writes for it (same keys, order, escaping and time format)."""
        bind = Bound(self)
        return (
            f"SELECT {_JSON_LINE} FROM events WHERE {self.where(flt, bind)} ORDER BY created_at, id",
            bind.values,
        )


def _text(column: str) -> str:
    return f"to_json({column})"


def _nullable(column: str) -> str:
    return f"coalesce(to_json(nullif({column}, '')), 'null')"


# msgspec writes a UTC datetime as ...T10:24:11Z, or ...T10:24:11.123000Z when it has a fraction.
_TIME = (
    "CASE WHEN strftime(created_at, '%f') = '000000' THEN strftime(created_at, '%Y-%m-%dT%H:%M:%SZ') "
    "ELSE strftime(created_at, '%Y-%m-%dT%H:%M:%S.%fZ') END"
)
_MESSAGE = (
    "CASE WHEN message_id = '' THEN 'null' ELSE "
    f"""'{{"id":' || {_text("message_id")} || ',"to":' || {_text("recipient")}"""
    f"""|| ',"from":' || {_text("sender")}"""
    f"""|| ',"provider":' || {_nullable("provider")} || ',"server":' || {_nullable("server")}"""
    f"""|| ',"tags":' || to_json(tags) || ',"metadata":' || metadata"""
    f"""|| ',"campaign_id":' || {_nullable("campaign_id")} || '}}' END"""
)
_JSON_LINE = (
    f"""'{{"id":' || {_text("id")} || ',"type":' || {_text("type")} || ',"created_at":"' || {_TIME} || '"'"""
    f"""|| ',"workspace":' || {_text("workspace")} || ',"message":' || {_MESSAGE}"""
    f"""|| ',"data":' || data || '}}'"""
)


def _tombstone(workspace: str, subscriber_id: str) -> tuple[Any, ...]:
    row = list(tombstone(workspace, subscriber_id, ERASED_VERSION))
    row[SUBSCRIBER_COLUMNS.index("created_at")] = from_epoch_ms(0).replace(tzinfo=None)
    return tuple(row)


class DuckDBStore(SqlAnalyticsStore):
    backend = "duckdb"
    dialect = DuckDialect()
    json = DuckJson()
    driver_errors = (duckdb.Error,)
    # Keep the campaign aggregates in the insert's transaction (migration 0006); the bench turns it off
    # for its baseline only.
    campaign_aggregates = True

    def __init__(
        self,
        path: str | Path,
        *,
        policy: WindowPolicy | None = None,
        checkpoint_threshold: str = "32MB",
        memory_limit_mib: int = 0,
    ) -> None:
        super().__init__(policy=policy, threads=1)
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Rows written since the last checkpoint stay in memory (with their part of the primary-key
        # index) until the WAL reaches this threshold, and each checkpoint rewrites the indexes; a restart
        # replays at most this much WAL. The blocks a checkpoint wrote stay cached up to `memory_limit`
        # (DuckDB's default: 80% of the machine's memory), so without one the sink's memory grows with
        # the table. With a limit, queries that need more working memory spill to `<path>.tmp`
        # (docs/analytics.md, "The memory limit"; `python -m bench.ingest_memory`). What DuckDB cannot
        # evict (its indexes as the table grows, the unflushed rows) may outgrow any fixed limit: a call
        # that runs out doubles it (`_run`). An in-memory database holds its tables in that memory and
        # is never limited.
        self.limit_mib = memory_limit_mib if self.path != ":memory:" else 0
        self.config: dict[str, str | bool | int | float | list[str]] = {
            "checkpoint_threshold": checkpoint_threshold
        }
        if self.limit_mib:
            self.config["memory_limit"] = f"{self.limit_mib}MiB"
        self._db = duckdb.connect(self.path, config=self.config)
        self._invalidated = False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Two DuckDB failures the store recovers from, the call itself failing (`StoreUnavailable`: the
        sink retries its batch, a query answers 503):
        - out of memory under the limit: the limit doubles (logged), so the retry finds room; what the
          store cannot evict grows with the table, and a limit must never stop the sink for good;
        - a fatal error (a checkpoint that could not get memory or disk) invalidates the database until
          it is opened again: the next call opens the file again first (replaying its WAL)."""
        if self._invalidated and fn != self._close:
            await super()._run(self._reopen)
        try:
            return await super()._run(fn, *args)
        except StoreUnavailable as exc:
            cause = exc.__cause__
            fatal = isinstance(cause, duckdb.FatalException) and self.path != ":memory:"
            if self.limit_mib and _out_of_memory(cause):
                self.limit_mib *= 2
                self.config["memory_limit"] = f"{self.limit_mib}MiB"
                log.warning("duckdb %s: out of memory; its limit is now %d MiB", self.path, self.limit_mib)
                if not fatal:
                    await super()._run(self._apply_limit)
            if fatal:
                self._invalidated = True
            raise

    def _apply_limit(self) -> None:
        self._db.execute(f"SET memory_limit = '{self.limit_mib}MiB'")

    def _reopen(self) -> None:
        log.warning("duckdb %s: a fatal error invalidated the database; opening it again", self.path)
        with contextlib.suppress(duckdb.Error):
            self._db.close()
        self._db = duckdb.connect(self.path, config=self.config)
        self._invalidated = False

    def _migrate(self, before: int | None = None) -> list[int]:
        db = self._db
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
        )
        applied = {row[0] for row in db.execute("SELECT version FROM schema_migrations").fetchall()}
        for migration in load(self.backend):
            if migration.version in applied or (before is not None and migration.version >= before):
                continue
            db.execute("BEGIN TRANSACTION")
            try:
                for statement in migration.statements:
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations VALUES ($version, $name, $at)",
                    {
                        "version": migration.version,
                        "name": migration.name,
                        "at": datetime.now(UTC).replace(tzinfo=None),
                    },
                )
                db.execute("COMMIT")
            except BaseException:
                # A failed COMMIT has ended the transaction already: its own error is the one to raise.
                with contextlib.suppress(duckdb.TransactionException):
                    db.execute("ROLLBACK")
                raise
            applied.add(migration.version)
        return sorted(applied)

    def _insert(self, columns: dict[str, list[Any]]) -> None:
        # First as if no event of the batch were stored (a plain INSERT: index probes only); a batch with
        # one stored already (a replay after a crash, an event twice in a batch) fails on the primary key
        # and is redone with INSERT OR IGNORE, which skips those. OR IGNORE alone cost a scan of the
        # stored ids a batch: 4.6 us an event at 300k events, 24 at 3M; the plain insert ~2 at both
        # (docs/analytics.md, "Ingest").
        saved = {c: list(columns[c]) for c in AGGREGATE_COLUMNS}  # the firsts' decision writes these
        try:
            self._insert_batch(columns, replayed=False)
        except duckdb.ConstraintException:
            columns.update(saved)
            self._insert_batch(columns, replayed=True)

    def _insert_batch(self, columns: dict[str, list[Any]], *, replayed: bool) -> None:
        cursor = self._db.cursor()
        try:
            # The firsts, the events, then the day counts and the campaign aggregates of the events really
            # inserted, in one transaction: a replayed batch adds nothing to any of them.
            cursor.execute("BEGIN TRANSACTION")
            try:
                campaign = self.campaign_aggregates and any(columns["campaign_id"])
                if campaign:
                    self._decide_firsts(cursor, columns, replayed=replayed)
                cursor.register("incoming_batch", pa.Table.from_pydict(columns, schema=ARROW_SCHEMA))
                # RETURNING gives the rows really inserted (not those ignored): no scan of the stored ids;
                # one statement, its rows straight into Arrow.
                inserted = cursor.sql(_INSERT_IGNORING if replayed else _INSERT_NEW).to_arrow_table()
                cursor.register("inserted_events", inserted)
                cursor.execute(_COUNT_NEW_EVENTS)
                if campaign:
                    counts = campaign_counts(inserted.select(_CAMPAIGN_INPUT).to_pydict())
                    for name, table, statement in counts.tables():
                        cursor.register(name, table)
                        cursor.execute(statement)
                cursor.execute("COMMIT")
            except BaseException:
                # A failed COMMIT has ended the transaction already: its own error is the one to raise.
                with contextlib.suppress(duckdb.TransactionException):
                    cursor.execute("ROLLBACK")
                raise
        finally:
            cursor.close()

    def _decide_firsts(
        self, cursor: duckdb.DuckDBPyConnection, columns: dict[str, list[Any]], *, replayed: bool
    ) -> None:
        """Flag the batch's first opens and clicks (analytics/campaign_firsts.py) among its events not
        stored yet, and add the new `campaign_firsts` rows; inside the insert's transaction. Not
        `replayed`: every event of the batch is taken as new (the insert fails if one is not)."""
        found = [i for i, c in enumerate(columns["campaign_id"]) if c and columns["pair_hash"][i]]
        if not found:
            return
        stored: set[str] = set()
        if replayed:
            ids = [columns["id"][i] for i in found]
            query = "SELECT id FROM events WHERE id IN (SELECT unnest($ids))"
            stored = {row[0] for row in cursor.execute(query, {"ids": ids}).fetchall()}
        new_rows = [i for i in found if columns["id"][i] not in stored]

        def lookup(keys: list[Key]) -> Rows:
            sql, params = lookup_query(keys, self.dialect)
            return cursor.execute(sql, params).fetchall()

        new = flag_batch(columns, new_rows, lookup)
        if new is not None and new["event_id"]:
            cursor.register("new_firsts", pa.Table.from_pydict(new, schema=FIRSTS_SCHEMA))
            cursor.execute("INSERT INTO campaign_firsts SELECT * FROM new_firsts")

    def _query(self, sql: str, params: dict[str, Any]) -> Rows:
        return self._db.execute(sql, params).fetchall()

    def _insert_chunk_events(self, found: ChunkColumns) -> None:
        """Subscriber chunks' events (`subscriber.created`, `list.*`): no `event_days` counts, which only
        segment event conditions read and which cannot name these types (schemas/segments.py). Only the
        columns that vary cross as Arrow; the rest are constants of the statement."""
        batch = pa.Table.from_pydict(found.events, schema=CHUNK_SCHEMA)
        cursor = self._db.cursor()
        try:
            cursor.register("incoming_members", batch)
            insert_new_first(cursor, _CHUNK_EVENTS_INTO)
        finally:
            cursor.close()

    def _upsert_mirror_columns(
        self, subscribers: dict[str, list[Any]], memberships: dict[str, list[Any]], *, new: bool = False
    ) -> None:
        # New subscribers' rows go in plainly first (`insert_new_first`): an upsert costs ~17 us a row at
        # 3M rows, against ~2 for the plain insert; a replayed chunk fails on the key and upserts.
        cursor = self._db.cursor()
        try:
            for table, found, schema, upsert in (
                ("subscribers", subscribers, SUBSCRIBER_SCHEMA, _UPSERT_SUBSCRIBERS),
                ("memberships", memberships, MEMBERSHIP_SCHEMA, _UPSERT_MEMBERSHIPS),
            ):
                if found[schema.names[0]]:
                    batch = pa.Table.from_pydict(found, schema=schema)
                    cursor.register(f"incoming_{table}", batch)
                    if new:
                        insert_new_first(cursor, f"{table} SELECT * FROM incoming_{table}", upsert)
                    else:
                        cursor.execute(upsert)
        finally:
            cursor.close()

    def _erase(self, workspace: str, email: str, subscriber_id: str) -> None:
        db, ids = self._db, {"workspace": workspace, "id": subscriber_id}
        db.execute("BEGIN TRANSACTION")
        try:
            db.execute(_MOVE_ERASED, {"workspace": workspace, "email": email})
            db.execute(_DROP_EMPTY_GROUPS, {"workspace": workspace})
            db.execute(_ERASE_EVENTS, {"workspace": workspace, "email": email})
            db.execute(_ERASE_EVENT_DAYS, {"workspace": workspace, "email": email})
            db.execute("DELETE FROM memberships WHERE workspace = $workspace AND subscriber_id = $id", ids)
            db.execute(
                _TOMBSTONE, dict(zip(SUBSCRIBER_COLUMNS, _tombstone(workspace, subscriber_id), strict=True))
            )
            db.execute("COMMIT")
        except BaseException:
            # A failed COMMIT has ended the transaction already: its own error is the one to raise.
            with contextlib.suppress(duckdb.TransactionException):
                db.execute("ROLLBACK")
            raise

    async def _export_chunks(self, flt: EventFilter, chunk_rows: int) -> AsyncIterator[bytes]:
        """One sorted query streamed through its own cursor (keyset pages would rescan the rest of the
        window for every page), DuckDB writing each JSON line: about five times faster than building
        them in Python. The cursor reads a snapshot, so inserts carry on meanwhile."""
        sql, params = self.dialect.export_lines(flt)
        cursor = await self._run(self._open_cursor, sql, params)
        try:
            while rows := await self._run(cursor.fetchmany, chunk_rows):
                yield ("\n".join([row[0] for row in rows]) + "\n").encode()
        finally:
            await self._run(cursor.close)

    def _open_cursor(self, sql: str, params: dict[str, Any]) -> duckdb.DuckDBPyConnection:
        cursor = self._db.cursor()
        cursor.execute(sql, params)
        return cursor

    def _purge(self, before_ms: int) -> int:
        cutoff = from_epoch_ms(before_ms).replace(tzinfo=None)
        db = self._db
        db.execute("BEGIN TRANSACTION")
        try:
            result = db.execute(
                "DELETE FROM events WHERE created_at < $cutoff", {"cutoff": cutoff}
            ).fetchone()
            # Whole days before the cutoff go; the cutoff's own day is counted again from what is left.
            db.execute("DELETE FROM event_days WHERE day <= CAST($cutoff AS DATE)", {"cutoff": cutoff})
            db.execute("DELETE FROM campaign_firsts WHERE created_at < $cutoff", {"cutoff": cutoff})
            db.execute(_RECOUNT_DAY, {"cutoff": cutoff})
            db.execute("COMMIT")
        except BaseException:
            # A failed COMMIT has ended the transaction already: its own error is the one to raise.
            with contextlib.suppress(duckdb.TransactionException):
                db.execute("ROLLBACK")
            raise
        return int(result[0]) if result else 0

    async def purge_expired(self, retention: timedelta, *, now: datetime) -> int:
        """DuckDB has no TTL: delete events older than `retention` (the sink calls this now and then)."""
        return await self._run(self._purge, epoch_ms(now - retention))

    async def memory(self) -> dict[str, Any]:
        """DuckDB's own account: the bytes it holds now (every tag of `duckdb_memory()`) and its limit."""
        return await self._run(self._memory)

    def _memory(self) -> dict[str, Any]:
        cursor = self._db.cursor()
        try:
            used = cursor.execute("SELECT sum(memory_usage_bytes)::BIGINT FROM duckdb_memory()").fetchone()
            limit = cursor.execute("SELECT current_setting('memory_limit')").fetchone()
        finally:
            cursor.close()
        return {"used_bytes": int(used[0] or 0) if used else 0, "limit": str(limit[0]) if limit else ""}

    def _close(self) -> None:
        self._db.close()
