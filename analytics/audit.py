"""The `audit_log` table on both backends: insert chained entries, page them, export them, verify them.

The table is created by the numbered migrations (`0002_audit_log.sql`). Rows hold exactly the fields
that were hashed and signed, so reading a row back gives the `AuditEntry` that `verify_chain` checks.

Embedded backends are single-process (DuckDB has one writer; chDB one engine path per process) and
the `EventSink` actor owns the events file, so the audit log gets a store of its own next to it
(`audit_store_url`); a ClickHouse server holds both tables in one database.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from analytics.errors import StoreUnavailable
from analytics.store import analytics_url, open_store
from security.audit_chain import GENESIS_HASH, AuditEntry, VerifyResult, verify_chain
from security.audit_checkpoint import AuditCheckpoint, checkpoint_problem

T = TypeVar("T")
COLUMNS: tuple[str, ...] = AuditEntry.__struct_fields__
_CH_TYPES = {"status": "UInt16", "before_seq": "UInt64", "after_seq": "UInt64"}
_encode_json = msgspec.json.Encoder().encode


class AuditFilter(msgspec.Struct, frozen=True, kw_only=True):
    """One workspace's entries, narrowed; `from_time`/`to_time` are RFC 3339 texts (`to` exclusive)."""

    workspace: str
    key_id: str | None = None
    action: str | None = None
    status: int | None = None
    from_time: str | None = None
    to_time: str | None = None


def audit_store_url(url: str | None, data_dir: str | Path) -> str:
    """Where the audit log lives: beside the embedded events store, or in the ClickHouse server's database."""
    url = analytics_url(url, data_dir)
    scheme, _, rest = url.partition("://")
    location, mark, query = rest.partition("?")
    if scheme == "duckdb":
        path = Path(location)
        return f"duckdb://{path.with_name(path.stem + '.audit' + (path.suffix or '.duckdb'))}"
    if scheme == "chdb":
        return f"chdb://{location.rstrip('/')}.audit{mark}{query}"
    return url


def time_text(value: Any) -> str:
    """A datetime as the fixed-width text the ingress stamps entries with (milliseconds, `Z`)."""
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _where(flt: AuditFilter, bind: Callable[[str, Any], str]) -> str:
    clauses = [f"workspace = {bind('workspace', flt.workspace)}"]
    for name in ("key_id", "action", "status"):
        value = getattr(flt, name)
        if value is not None:
            clauses.append(f"{name} = {bind(name, value)}")
    if flt.from_time is not None:
        clauses.append(f"time >= {bind('from_time', flt.from_time)}")
    if flt.to_time is not None:
        clauses.append(f"time < {bind('to_time', flt.to_time)}")
    return " AND ".join(clauses)


class AuditStore:
    """The audit table of one store URL. Every database call runs on the store's own thread."""

    def __init__(self, backend: _Backend) -> None:
        self._backend = backend
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-store")

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True, read_only: bool = False) -> AuditStore:
        if migrate:
            store = open_store(url)
            try:
                await store.migrate()
            finally:
                await store.close()
        loop = asyncio.get_running_loop()
        return cls(await loop.run_in_executor(None, functools.partial(_connect, url, read_only)))

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except self._backend.driver_errors as exc:
            raise StoreUnavailable(f"audit store: {exc}") from exc

    async def insert(self, entries: Sequence[AuditEntry]) -> int:
        """Store chained entries; an entry already stored (same id) is ignored."""
        if not entries:
            return 0
        columns = {name: [getattr(e, name) for e in entries] for name in COLUMNS}
        await self._run(self._backend.insert, columns)
        return len(entries)

    async def page(
        self, flt: AuditFilter, *, limit: int, before_seq: int | None
    ) -> tuple[list[AuditEntry], bool]:
        """Newest first (highest seq first), continuing below `before_seq`."""
        b = self._backend
        params: dict[str, Any] = {}
        where = _where(flt, b.binder(params))
        if before_seq is not None:
            where += f" AND seq < {b.binder(params)('before_seq', before_seq)}"
        columns = ", ".join(COLUMNS)
        sql = f"SELECT {columns} FROM {b.table} WHERE {where} ORDER BY seq DESC LIMIT {int(limit) + 1}"
        rows = await self._run(b.query, sql, params)
        return [_entry(r) for r in rows[:limit]], len(rows) > limit

    async def chunks(self, flt: AuditFilter, *, chunk_rows: int = 5000) -> AsyncIterator[list[AuditEntry]]:
        """Every matching entry, oldest first (seq order), `chunk_rows` at a time (keyset pages)."""
        b = self._backend
        after = 0
        while True:
            params: dict[str, Any] = {}
            bind = b.binder(params)
            where = f"{_where(flt, bind)} AND seq > {bind('after_seq', after)}"
            columns = ", ".join(COLUMNS)
            sql = f"SELECT {columns} FROM {b.table} WHERE {where} ORDER BY seq LIMIT {int(chunk_rows)}"
            rows = await self._run(b.query, sql, params)
            if rows:
                yield [_entry(r) for r in rows]
            if len(rows) < chunk_rows:
                return
            after = rows[-1][COLUMNS.index("seq")]

    async def export(self, flt: AuditFilter, *, chunk_rows: int = 5000) -> AsyncIterator[bytes]:
        """NDJSON (one entry per line, every field, as the API shows it), oldest first, in chunks."""
        async for entries in self.chunks(flt, chunk_rows=chunk_rows):
            yield b"".join(_encode_json(e) + b"\n" for e in entries)

    async def verify(
        self,
        workspace: str,
        public_keys: Sequence[bytes],
        *,
        checkpoint: AuditCheckpoint | None = None,
        chunk_rows: int = 5000,
    ) -> tuple[VerifyResult, int]:
        """Check a workspace's whole chain, `chunk_rows` entries at a time: the first broken entry, or
        ok, and how many entries were checked. `public_keys`: every key the log may be signed with.
        With a `checkpoint` (its signature already checked), the chain must also reach its seq with its
        hash: otherwise the newest entries were cut off."""
        count, prev_hash, prev_seq, hash_at_checkpoint = 0, GENESIS_HASH, 0, None
        async for entries in self.chunks(AuditFilter(workspace=workspace), chunk_rows=chunk_rows):
            result = verify_chain(entries, public_keys, prev_hash=prev_hash, prev_seq=prev_seq)
            if not result.ok:
                return result, count
            if checkpoint is not None and entries[0].seq <= checkpoint.seq <= entries[-1].seq:
                hash_at_checkpoint = entries[checkpoint.seq - entries[0].seq].hash
            count, prev_hash, prev_seq = count + len(entries), entries[-1].hash, entries[-1].seq
        if checkpoint is not None:
            problem = checkpoint_problem(checkpoint, prev_seq, hash_at_checkpoint)
            if problem is not None:
                return VerifyResult(False, checkpoint.seq, None, problem), count
        return VerifyResult(True, None, None, f"{count} entries verified"), count

    async def close(self) -> None:
        await self._run(self._backend.close)
        self._executor.shutdown(wait=True)


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    fields = dict(zip(COLUMNS, row, strict=True))
    fields["seq"], fields["status"] = int(fields["seq"]), int(fields["status"])
    return AuditEntry(**fields)


class _Backend:
    table = "audit_log"
    driver_errors: tuple[type[BaseException], ...] = ()

    def binder(self, params: dict[str, Any]) -> Callable[[str, Any], str]:
        raise NotImplementedError

    def insert(self, columns: dict[str, list[Any]]) -> None:
        raise NotImplementedError

    def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _DuckBackend(_Backend):
    def __init__(self, path: str, read_only: bool) -> None:
        import duckdb

        self.driver_errors = (duckdb.Error,)
        self._db = duckdb.connect(path, read_only=read_only)

    def binder(self, params: dict[str, Any]) -> Callable[[str, Any], str]:
        def bind(name: str, value: Any) -> str:
            params[name] = value
            return f"${name}"

        return bind

    def insert(self, columns: dict[str, list[Any]]) -> None:
        import pyarrow as pa

        from analytics.duckdb_backend import insert_new_first

        types = {c: pa.int64() if c in ("seq", "status") else pa.string() for c in COLUMNS}
        batch = pa.Table.from_pydict(columns, schema=pa.schema([(c, types[c]) for c in COLUMNS]))
        cursor = self._db.cursor()
        try:
            cursor.register("incoming_audit", batch)
            insert_new_first(
                cursor, f"audit_log ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM incoming_audit"
            )
        finally:
            cursor.close()

    def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        self._db.close()


class _ClickHouseBackend(_Backend):
    table = "audit_log FINAL"

    def __init__(self, url: str) -> None:
        from clickhouse_connect.driver.exceptions import ClickHouseError

        from analytics.clickhouse_backend import connect

        self.driver_errors = (ClickHouseError,)
        self._client, _ = connect(url)

    def binder(self, params: dict[str, Any]) -> Callable[[str, Any], str]:
        def bind(name: str, value: Any) -> str:
            params[name] = value
            return f"{{{name}:{_CH_TYPES.get(name, 'String')}}}"

        return bind

    def insert(self, columns: dict[str, list[Any]]) -> None:
        self._client.insert(
            "audit_log", [columns[c] for c in COLUMNS], column_names=list(COLUMNS), column_oriented=True
        )

    def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self._client.query(sql, parameters=params).result_rows

    def close(self) -> None:
        self._client.close()


def _connect(url: str, read_only: bool) -> _Backend:
    scheme, _, rest = url.partition("://")
    if scheme == "duckdb":
        return _DuckBackend(rest.partition("?")[0], read_only)
    if scheme in ("clickhouse", "clickhouses", "chdb"):
        return _ClickHouseBackend(url)
    raise ValueError(f"unsupported analytics URL scheme {scheme!r}")
