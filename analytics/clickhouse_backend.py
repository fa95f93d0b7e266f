"""The production backend: ClickHouse through clickhouse-connect, over HTTP or embedded (chDB).

Reads use FINAL, so rows the ReplacingMergeTree has not merged yet are still counted once. Inserts
are column-oriented (one `insert` per batch, created_at as epoch milliseconds).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError

from analytics.campaign_firsts import FIRSTS_COLUMNS, Key, flag_batch, lookup_query
from analytics.campaign_report import REPORT_TYPES
from analytics.errors import StoreUnavailable
from analytics.migrations import load
from analytics.mirror import (
    ERASED_VERSION,
    MEMBERSHIP_COLUMNS,
    SUBSCRIBER_COLUMNS,
    MirrorRows,
    tombstone,
)
from analytics.queries import WindowPolicy
from analytics.rows import COLUMNS
from analytics.segments import ClickHouseJson
from analytics.sql import Bound, Dialect
from analytics.sql_store import Rows, SqlAnalyticsStore

# Mutations run synchronously (on every replica): erasure is done when the API answers.
_SYNC_MUTATION = {"mutations_sync": 2}
_ERASE_EVENTS = (
    "ALTER TABLE events UPDATE recipient = '', recipient_domain = '', metadata = '{}', data = '{}' "
    "WHERE workspace = {workspace:String} AND recipient = {email:String}"
)
# The person's rows of the segment day table (migration 0006): keyed by the hash of the address, which
# is as personal as the address, so they go (a segment can no longer count an erased person anyway).
_ERASE_EVENT_DAYS = (
    "ALTER TABLE event_days DELETE WHERE workspace = {workspace:String} "
    "AND recipient_key = cityHash64({email:String})"
)
# And of the newest-event table (migration 0008), keyed the same way.
_ERASE_EVENT_LATEST = (
    "ALTER TABLE event_latest DELETE WHERE workspace = {workspace:String} "
    "AND recipient_key = cityHash64({email:String})"
)
_ERASE_SUBSCRIBER = "ALTER TABLE subscribers DELETE WHERE workspace = {workspace:String} AND id = {id:String}"
_ERASE_MEMBERSHIPS = (
    "ALTER TABLE memberships DELETE WHERE workspace = {workspace:String} AND subscriber_id = {id:String}"
)
# Their copies ordered for segment queries (migration 0007), keyed by the hash of the subscriber id.
_ERASE_SEGMENT_SUBSCRIBER = (
    "ALTER TABLE segment_subscribers DELETE WHERE workspace = {workspace:String} "
    "AND key = cityHash64({id:String}) AND deleted = 0"
)
_ERASE_SEGMENT_MEMBERSHIPS = (
    "ALTER TABLE segment_memberships DELETE WHERE workspace = {workspace:String} "
    "AND subscriber_key = cityHash64({id:String})"
)
# Erasure moves the person's campaign counts from their domain to '' (the events' erased domain), so no
# per-domain row of the campaign aggregates keeps a person's own domain (migration 0009).
_MOVED = [f"countIf(type = '{t}')" for t in ("message.sent", "message.delivered", "message.bounced")]
_MOVED += [f"countIf(type = '{t}')" for t in ("message.complained", "message.opened")]
_MOVED += ["uniqExactIf(pair_hash, type = 'message.opened' AND NOT machine_open)"]
_MOVED += ["countIf(type = 'message.clicked')"]
_MOVED += ["uniqExactIf(pair_hash, type = 'message.clicked' AND NOT machine_open)"]
_MOVED += [
    f"countIf(type = '{t}')" for t in ("subscriber.unsubscribed", "message.failed", "message.suppressed")
]
_MOVE_ERASED_DOMAIN = (
    "INSERT INTO campaign_groups SELECT workspace, campaign_id, moved.1, provider, server, campaign_variant, "
    + ", ".join(f"moved.2 * toInt64({expression})" for expression in _MOVED)
    + " FROM events FINAL ARRAY JOIN [(recipient_domain, toInt64(-1)), ('', toInt64(1))] AS moved "
    "WHERE workspace = {workspace:String} AND recipient = {email:String} AND campaign_id != '' "
    "AND recipient_domain != '' AND type IN {types:Array(String)} "
    "GROUP BY workspace, campaign_id, moved, provider, server, campaign_variant"
)
# The stored-id lookup reads at most this many time ranges: the batch's times split at its widest gaps.
MAX_RANGES = 16
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class ClickHouseDialect(Dialect):
    created_ms = "toUnixTimestamp64Milli(created_at)"
    final = " FINAL"

    def placeholder(self, name: str, ch_type: str) -> str:
        return f"{{{name}:{ch_type}}}"

    def time(self, bind: Bound, ms: int) -> str:
        return f"fromUnixTimestamp64Milli({bind(ms, 'Int64')}, 'UTC')"

    def one_of(self, column: str, values: tuple[str, ...], bind: Bound) -> str:
        return f"{column} IN {bind(list(values), 'Array(String)')}"

    def has_tag(self, placeholder: str) -> str:
        return f"has(tags, {placeholder})"

    def unique_pairs(self) -> str:
        return "uniqExactIf(pair_hash, pair_hash != 0)"

    def source(self, where: str, with_tag: bool) -> str:
        tag = " ARRAY JOIN if(empty(tags), [''], tags) AS tag" if with_tag else ""
        return f"FROM events FINAL{tag} WHERE {where}"

    def bucket(self, width: str) -> str:
        return f"intDiv({self.created_ms}, {width}) * {width}"

    def int_div(self, dividend: str, divisor: str) -> str:
        return f"intDiv({dividend}, {divisor})"


def time_ranges(times: list[int], max_ranges: int = MAX_RANGES) -> list[tuple[int, int]]:
    """[lo, hi] ranges (epoch ms, inclusive) covering every time, split at the widest gaps: a batch is
    mostly the last seconds' events, with the odd late one from long ago."""
    ordered = sorted(set(times))
    gaps = sorted(range(1, len(ordered)), key=lambda i: ordered[i] - ordered[i - 1], reverse=True)
    cuts = sorted(i for i in gaps[: max_ranges - 1] if ordered[i] - ordered[i - 1] > 1000)
    bounds = [0, *cuts, len(ordered)]
    return [(ordered[a], ordered[b - 1]) for a, b in zip(bounds, bounds[1:], strict=False)]


def connect(url: str) -> tuple[Any, str]:
    """A clickhouse-connect client on the URL's database (created if missing), and that database's name.

    `chdb:///abs/path` or `chdb://relative/path` (optional `?database=name`, default `mailers`) is the
    embedded engine; `clickhouse://user:pw@host:8123/db` (or `clickhouses://` for TLS) a server.
    """
    parts = urlsplit(url)
    if parts.scheme == "chdb":
        path = unquote(url[len("chdb://") :].partition("?")[0])
        database = parse_qs(parts.query).get("database", ["mailers"])[0]
        options: dict[str, Any] = {"interface": "chdb", "path": path}
    else:
        database = parts.path.lstrip("/") or "mailers"
        options = {
            "interface": "https" if parts.scheme == "clickhouses" else "http",
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or (8443 if parts.scheme == "clickhouses" else 8123),
            "username": unquote(parts.username or "default"),
            "password": unquote(parts.password or ""),
            "autogenerate_session_id": False,
        }
    if not _IDENTIFIER.match(database):
        raise ValueError(f"invalid ClickHouse database name {database!r}")
    bootstrap = clickhouse_connect.get_client(**options)
    try:
        bootstrap.command(f"CREATE DATABASE IF NOT EXISTS {database}")  # an identifier, checked above
    finally:
        bootstrap.close()
    return clickhouse_connect.get_client(database=database, **options), database


class ClickHouseStore(SqlAnalyticsStore):
    backend = "clickhouse"
    dialect = ClickHouseDialect()
    json = ClickHouseJson()
    driver_errors = (ClickHouseError,)
    # The campaign aggregates' write-time work (drop stored events, decide the firsts; migration 0009);
    # the bench turns it off for its baseline only.
    campaign_aggregates = True

    def __init__(
        self, url: str, *, policy: WindowPolicy | None = None, retention_days: int | None = None
    ) -> None:
        # chDB is one engine in this process: serialise on one thread. A server takes concurrent queries.
        super().__init__(policy=policy, threads=1 if url.startswith("chdb:") else 4)
        self.url = url
        self.retention_days = None if retention_days is None else int(retention_days)
        try:
            self._client, self.database = connect(url)
        except ClickHouseError as exc:
            raise StoreUnavailable(f"clickhouse: {exc}") from exc

    def _migrate(self, before: int | None = None) -> list[int]:
        client = self._client
        client.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
            "applied_at DateTime64(3, 'UTC')) ENGINE = ReplacingMergeTree ORDER BY version"
        )
        applied = {row[0] for row in client.query("SELECT version FROM schema_migrations FINAL").result_rows}
        for migration in load(self.backend):
            if migration.version in applied or (before is not None and migration.version >= before):
                continue
            for statement in migration.statements:
                client.command(statement)
            client.insert(
                "schema_migrations",
                [[migration.version, migration.name, datetime.now(UTC)]],
                column_names=["version", "name", "applied_at"],
            )
            applied.add(migration.version)
        if before is None:  # the retention names tables of every migration
            self._apply_retention()
        return sorted(applied)

    def _apply_retention(self) -> None:
        if self.retention_days is None:
            return
        # event_days keeps a day until its last event's time has passed the retention: one day more.
        for table, expression, days in (
            ("events", "toDateTime(created_at)", self.retention_days),
            ("event_days", "toDateTime(day)", self.retention_days + 1),
            # A row whose newest event has passed the retention holds only purged events.
            ("event_latest", "toDateTime(last)", self.retention_days),
            ("campaign_firsts", "toDateTime(created_at)", self.retention_days),
        ):
            clause = f"toIntervalDay({days})"
            engine = self._client.query(
                "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
                parameters={"db": self.database, "t": table},
            ).result_rows[0][0]
            if clause not in engine.replace(" ", ""):
                # DDL takes no bound parameters; the names are constants, retention_days an int.
                self._client.command(
                    f"ALTER TABLE {table} MODIFY TTL {expression} + {clause}",
                    settings={"materialize_ttl_after_modify": 0},
                )

    def _insert(self, columns: dict[str, list[Any]]) -> None:
        if self.campaign_aggregates and any(columns["campaign_id"]):
            # The aggregates' views count what is inserted: each campaign event must go in once, with
            # its first flags decided (analytics/campaign_firsts.py); the firsts' rows before the events.
            columns = self._not_stored(columns)
            if not columns["id"]:
                return
            new = flag_batch(columns, range(len(columns["id"])), self._lookup_firsts)
            if new is not None and new["event_id"]:
                self._client.insert(
                    "campaign_firsts",
                    [new[c] for c in FIRSTS_COLUMNS],
                    column_names=list(FIRSTS_COLUMNS),
                    column_oriented=True,
                )
        self._client.insert(
            "events", [columns[c] for c in COLUMNS], column_names=list(COLUMNS), column_oriented=True
        )

    def _lookup_firsts(self, keys: list[Key]) -> Rows:
        sql, params = lookup_query(keys, self.dialect)
        return self._client.query(sql, parameters=params).result_rows

    def _not_stored(self, columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """The batch without the events `events` already holds (a replayed batch).

        A stored copy of an event has its workspace and created_at, so one query reads the stored ids
        of the batch's workspaces at the batch's times, a few time ranges (the primary key skips every
        granule outside them), and the ids are compared here: sending the 5,000 ids as a parameter
        cost ten times the lookup itself (measured on the report2 branch)."""
        bind = Bound(self.dialect)
        ranges = " OR ".join(
            f"(created_at >= {self.dialect.time(bind, lo)} AND created_at <= {self.dialect.time(bind, hi)})"
            for lo, hi in time_ranges(columns["created_at"])
        )
        workspaces = bind(sorted(set(columns["workspace"])), "Array(String)")
        sql = f"SELECT id FROM events WHERE workspace IN {workspaces} AND ({ranges})"
        batch = set(columns["id"])
        stored = {row[0] for row in self._client.query(sql, parameters=bind.values).result_rows} & batch
        if not stored:
            return columns
        keep = [i for i, event_id in enumerate(columns["id"]) if event_id not in stored]
        return {name: [values[i] for i in keep] for name, values in columns.items()}

    def _query(self, sql: str, params: dict[str, Any]) -> Rows:
        return self._client.query(sql, parameters=params).result_rows

    def _upsert_mirror_columns(
        self, subscribers: dict[str, list[Any]], memberships: dict[str, list[Any]], *, new: bool = False
    ) -> None:
        # ReplacingMergeTree(version) keeps the highest version per key (new or not); reads use FINAL.
        for table, found, names in (
            ("subscribers", subscribers, SUBSCRIBER_COLUMNS),
            ("memberships", memberships, MEMBERSHIP_COLUMNS),
        ):
            if found[names[0]]:
                data = dict(found)
                if "deleted" in data:
                    data["deleted"] = [int(v) for v in data["deleted"]]
                self._client.insert(
                    table, [data[c] for c in names], column_names=list(names), column_oriented=True
                )

    def _erase(self, workspace: str, email: str, subscriber_id: str) -> None:
        ids = {"workspace": workspace, "id": subscriber_id}
        client = self._client
        about = {"workspace": workspace, "email": email}
        # Before the events lose their domain (it is read from them); a crash between the two and a
        # second erasure would move the counts twice (docs/analytics.md "Campaign aggregates").
        client.command(
            _MOVE_ERASED_DOMAIN,
            parameters={**about, "types": list(REPORT_TYPES)},
            settings=_SYNC_MUTATION,
        )
        # Merge the moved rows now: the rows under the person's domain sum to zero and a merge drops them
        # (SummingMergeTree); until then they would still name it. The table is small (groups, not events).
        client.command("OPTIMIZE TABLE campaign_groups FINAL")
        client.command(_ERASE_EVENTS, parameters=about, settings=_SYNC_MUTATION)
        client.command(_ERASE_EVENT_DAYS, parameters=about, settings=_SYNC_MUTATION)
        client.command(_ERASE_EVENT_LATEST, parameters=about, settings=_SYNC_MUTATION)
        client.command(_ERASE_MEMBERSHIPS, parameters=ids, settings=_SYNC_MUTATION)
        client.command(_ERASE_SEGMENT_MEMBERSHIPS, parameters=ids, settings=_SYNC_MUTATION)
        # The tombstone first, so no read between the two statements sees the old row as the newest.
        self._upsert_mirror(MirrorRows([tombstone(workspace, subscriber_id, ERASED_VERSION)], []))
        client.command(_ERASE_SUBSCRIBER + " AND deleted = 0", parameters=ids, settings=_SYNC_MUTATION)
        client.command(_ERASE_SEGMENT_SUBSCRIBER, parameters=ids, settings=_SYNC_MUTATION)

    def _close(self) -> None:
        self._client.close()
