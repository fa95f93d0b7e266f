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

    def _migrate(self) -> list[int]:
        client = self._client
        client.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
            "applied_at DateTime64(3, 'UTC')) ENGINE = ReplacingMergeTree ORDER BY version"
        )
        applied = {row[0] for row in client.query("SELECT version FROM schema_migrations FINAL").result_rows}
        for migration in load(self.backend):
            if migration.version in applied:
                continue
            for statement in migration.statements:
                client.command(statement)
            client.insert(
                "schema_migrations",
                [[migration.version, migration.name, datetime.now(UTC)]],
                column_names=["version", "name", "applied_at"],
            )
            applied.add(migration.version)
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
        self._client.insert(
            "events", [columns[c] for c in COLUMNS], column_names=list(COLUMNS), column_oriented=True
        )

    def _query(self, sql: str, params: dict[str, Any]) -> Rows:
        return self._client.query(sql, parameters=params).result_rows

    def _upsert_mirror_columns(
        self, subscribers: dict[str, list[Any]], memberships: dict[str, list[Any]]
    ) -> None:
        # ReplacingMergeTree(version) keeps the highest version per key; reads use FINAL.
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
