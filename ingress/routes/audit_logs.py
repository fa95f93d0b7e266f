"""`/v1/audit-logs`: the workspace's chained audit entries, newest first or as an NDJSON export, the
public key that verifies their signatures, and the signed checkpoints of the chain's head (scope
`read:audit`). docs/audit.md.

Entries appear here once the AuditSink has chained and stored them (normally well under a second
after the request). The reads come from an `AuditReader`: set `AUDIT_READER` on the app before it
starts, or the first read picks one: the ClickHouse server directly, or, with an embedded backend
(one process owns the file), the audit sink actor that owns it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Protocol

import msgspec
from aiohttp import web

from analytics.audit import AuditFilter, AuditStore, audit_store_url, time_text
from analytics.errors import StoreUnavailable
from ingress.context import SERVICES, principal, request_id
from ingress.pagination import Limit, PageQuery, decode_cursor, encode_cursor, list_response
from ingress.problems import ApiError, validation_error
from ingress.routing import RouteTable, json_response
from security.audit_chain import AuditEntry, audit_signer
from security.audit_checkpoint import AuditCheckpoint
from store.audit_checkpoints import CheckpointLog
from store.audit_log import all_verifying_keys

routes = RouteTable()
NDJSON = "application/x-ndjson"


class AuditLogQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    limit: Limit = 20
    cursor: str | None = None
    key_id: str | None = None
    action: str | None = None  # "METHOD /route/template", e.g. "POST /v1/send"
    status: int | None = None
    from_: datetime | None = msgspec.field(default=None, name="from")
    to: datetime | None = None


class AuditLogList(msgspec.Struct, kw_only=True):
    data: list[AuditEntry]
    has_more: bool
    next_cursor: str | None
    object: str = "list"


class AuditVerifyingKey(msgspec.Struct, kw_only=True):
    key_id: str
    public_key_pem: str


class AuditPublicKey(msgspec.Struct, kw_only=True):
    algorithm: str
    public_key_pem: str
    public_key: str  # base64 of the 32 raw bytes
    key_id: str = ""
    # Keys of master secrets rotated away: entries sealed before a rotation verify with one of them.
    previous_keys: list[AuditVerifyingKey] = []


class AuditCheckpointList(msgspec.Struct, kw_only=True):
    latest: AuditCheckpoint | None  # the newest checkpoint, whatever page this is
    data: list[AuditCheckpoint]  # the history, newest first
    has_more: bool
    next_cursor: str | None
    object: str = "list"


class AuditReader(Protocol):
    async def page(
        self, flt: AuditFilter, *, limit: int, before_seq: int | None
    ) -> tuple[list[AuditEntry], bool]: ...

    def export(self, flt: AuditFilter) -> AsyncIterator[bytes]: ...


AUDIT_READER: web.AppKey[AuditReader] = web.AppKey("audit_reader")
# A started aiohttp app is frozen (adding a key then is deprecated), hence the side table of lazy readers.
_lazy_readers: weakref.WeakKeyDictionary[web.Application, asyncio.Task[AuditReader]] = (
    weakref.WeakKeyDictionary()
)


@routes.route(
    "GET",
    "/v1/audit-logs",
    scope="read:audit",
    query=AuditLogQuery,
    response=AuditLogList,
    summary="Audit entries, newest first; `Accept: application/x-ndjson` exports them all, oldest first",
    tag="audit-logs",
)
async def list_audit_logs(request: web.Request, query: AuditLogQuery) -> web.StreamResponse:
    flt = _filter(request, query)
    reader = await reader_for(request.app)
    if NDJSON in request.headers.get("Accept", ""):
        return await _export(request, reader, flt)
    filters = {
        "key_id": query.key_id,
        "action": query.action,
        "status": query.status,
        "from": flt.from_time,
        "to": flt.to_time,
    }
    after = decode_cursor(query.cursor, filters)
    try:
        entries, has_more = await reader.page(
            flt, limit=query.limit, before_seq=int(after) if after else None
        )
    except StoreUnavailable:
        raise ApiError(
            "unavailable", "The audit store cannot be reached", headers={"Retry-After": "5"}
        ) from None
    last = str(entries[-1].seq) if entries else None
    return list_response(request, entries, has_more=has_more, last_id=last, filters=filters)


@routes.route(
    "GET",
    "/v1/audit-logs/public-key",
    scope="read:audit",
    response=AuditPublicKey,
    summary="The Ed25519 key that verifies every audit entry's signature",
    tag="audit-logs",
)
async def audit_public_key(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if services.settings.secret_key is None:
        raise ApiError("unavailable", "No secret key is configured, so no audit signing key exists")
    signer = audit_signer(services.settings.secret_key)
    current = signer.key_id()
    known = await all_verifying_keys(services.settings, services.redis)
    return json_response(
        AuditPublicKey(
            algorithm="Ed25519",
            public_key_pem=signer.public_key_pem().decode(),
            public_key=signer.public_key_b64(),
            key_id=current,
            previous_keys=[
                AuditVerifyingKey(key_id=kid, public_key_pem=pem.decode())
                for kid, pem in sorted(known.items())
                if kid != current
            ],
        )
    )


@routes.route(
    "GET",
    "/v1/audit-logs/checkpoints",
    scope="read:audit",
    query=PageQuery,
    response=AuditCheckpointList,
    summary="Signed checkpoints of the audit chain's head: the latest, and the history newest first",
    tag="audit-logs",
)
async def list_audit_checkpoints(request: web.Request, query: PageQuery) -> web.Response:
    checkpoints = CheckpointLog(request.app[SERVICES].redis)
    workspace = principal(request).workspace
    after = decode_cursor(query.cursor, {})
    if after is not None and not after.isdigit():
        raise ApiError("invalid_cursor", "The cursor is not one this API issued")
    page, has_more = await checkpoints.page(
        workspace, limit=query.limit, before_seq=int(after) if after else None
    )
    next_cursor = encode_cursor(str(page[-1].seq), {}) if has_more and page else None
    headers = {}
    if next_cursor:
        headers["Link"] = f'<{request.url.update_query({"cursor": next_cursor}).path_qs}>; rel="next"'
    answer = AuditCheckpointList(
        latest=await checkpoints.latest(workspace), data=page, has_more=has_more, next_cursor=next_cursor
    )
    return json_response(answer, headers=headers)


def _filter(request: web.Request, query: AuditLogQuery) -> AuditFilter:
    start, end = _utc(query.from_), _utc(query.to)
    if start is not None and end is not None and start >= end:
        raise validation_error("#/query/from", "`from` must be earlier than `to`", "invalid_window")
    return AuditFilter(
        workspace=principal(request).workspace,
        key_id=query.key_id,
        action=query.action,
        status=query.status,
        from_time=time_text(start) if start else None,
        to_time=time_text(end) if end else None,
    )


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def _export(request: web.Request, reader: AuditReader, flt: AuditFilter) -> web.StreamResponse:
    """Streamed chunk by chunk; an error before the first chunk is still a problem answer."""
    chunks = reader.export(flt)
    try:
        try:
            first = await anext(chunks, b"")
        except StoreUnavailable:
            raise ApiError(
                "unavailable", "The audit store cannot be reached", headers={"Retry-After": "5"}
            ) from None
        response = web.StreamResponse(headers={"Content-Type": NDJSON, "Request-Id": request_id(request)})
        await response.prepare(request)
        await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


async def reader_for(app: web.Application) -> AuditReader:
    reader = app.get(AUDIT_READER)
    if reader is not None:
        return reader
    opening = _lazy_readers.get(app)
    if opening is None or (opening.done() and (opening.cancelled() or opening.exception() is not None)):
        opening = _lazy_readers[app] = asyncio.ensure_future(_default_reader(app))
    return await asyncio.shield(opening)


async def _default_reader(app: web.Application) -> AuditReader:
    settings = app[SERVICES].settings
    url = audit_store_url(settings.analytics_url, settings.data_dir)
    if url.startswith(("clickhouse://", "clickhouses://")):
        return await AuditStore.open(url, migrate=False)
    gateway = app[SERVICES].gateway  # the embedded store's owner, the audit-sink actor, answers its reads
    reader = gateway.audit_reader() if gateway is not None else None
    if reader is None:
        raise ApiError("unavailable", "The audit sink is not running", headers={"Retry-After": "5"})
    return reader
