"""The `audit` middleware: one audit entry per request to an authenticated route, refused ones included.

It sits directly inside `problems_and_request_ids`, so it sees every answer the client will get: a
handler's response, or the `ApiError`/`HTTPException` the outer middleware turns into one (401 and 403
from `authenticate` included). The entry is appended to the Redis stream `m:audit` before the
response leaves, so an answered request always has a durable entry; the AuditSink chains and signs it
later (docs/audit.md).

Cost: the append is awaited, but every concurrent request's entry shares one pipelined XADD round
trip through a `Coalescer`; alone, a request pays one Redis round trip (~0.1-0.3 ms).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from datetime import UTC, datetime

import msgspec
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from analytics.audit import time_text
from ingress.client_address import client_ip
from ingress.context import PRINCIPAL, REQUEST_ID, SERVICES
from ingress.problems import ApiError
from ingress.routing import route_spec
from schemas.ids import new_id
from security.audit_chain import AuditEntry
from store import keyspace
from store.api_keys import KEY_PREFIX, display_prefix, hash_secret
from store.coalescer import Backpressure, Coalescer

log = logging.getLogger("mailers.audit")

UNAUTHENTICATED = "_unauthenticated"  # the log of refused requests whose key names no workspace
MAX_USER_AGENT = 512
_MAX_ID_BODY = 64 * 1024


class AuditWriter:
    """Appends unchained entries to `m:audit`; concurrent appends share one pipeline round trip."""

    def __init__(self, redis: aioredis.Redis, *, stream: str = keyspace.AUDIT_STREAM) -> None:
        self.redis, self.stream = redis, stream
        self._encode = msgspec.msgpack.Encoder().encode
        self._batches = Coalescer(self._xadd, max_in_flight=2, max_batch=2000, max_pending=100_000)

    async def append(self, entry: AuditEntry) -> None:
        await self._batches.submit(entry)

    async def _xadd(self, entries: list[AuditEntry]) -> list[None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.xadd(self.stream, {keyspace.AUDIT_FIELD: self._encode(entry)})
            await pipe.execute()
        return [None] * len(entries)

    async def drain(self) -> None:
        await self._batches.drain()


# Set it before the app starts (tests do, through app_hook). Otherwise each app gets one lazily: a
# started aiohttp app is frozen, and adding a key to it then is deprecated, hence the side table.
AUDIT_WRITER: web.AppKey[AuditWriter] = web.AppKey("audit_writer", AuditWriter)
_lazy_writers: weakref.WeakKeyDictionary[web.Application, AuditWriter] = weakref.WeakKeyDictionary()


def writer_for(app: web.Application) -> AuditWriter:
    writer = app.get(AUDIT_WRITER) or _lazy_writers.get(app)
    if writer is None:
        writer = _lazy_writers[app] = AuditWriter(app[SERVICES].redis)
    return writer


# Set by a handler that wrote its own entry in the same Redis round trip as its writes (the send path).
AUDITED: web.RequestKey[bool] = web.RequestKey("audited", bool)


async def entry_bytes(request: web.Request, status: int, resource_id: str | None) -> bytes:
    """The request's entry, encoded, for a handler that appends it itself (then it sets AUDITED)."""
    spec = route_spec(request)
    entry = await build_entry(
        request, f"{request.method} {spec.path if spec else request.path}", status, None
    )
    return msgspec.msgpack.encode(msgspec.structs.replace(entry, resource_id=resource_id))


@web.middleware
async def audit(request: web.Request, handler) -> web.StreamResponse:
    spec = route_spec(request)
    if spec is None or not spec.auth:
        return await handler(request)
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
    except (ApiError, web.HTTPException) as exc:
        status = exc.status
        await _record(request, f"{request.method} {spec.path}", status, None)
        raise
    except asyncio.CancelledError:
        raise  # the client went away: no answer was given, nothing to record
    except Exception:
        await _record(request, f"{request.method} {spec.path}", 500, None)
        raise
    if not request.get(AUDITED, False):
        await _record(request, f"{request.method} {spec.path}", status, response)
    return response


async def _record(
    request: web.Request, action: str, status: int, response: web.StreamResponse | None
) -> None:
    entry = await build_entry(request, action, status, response)
    try:
        await writer_for(request.app).append(entry)
    except (Backpressure, RedisError):
        log.exception("audit entry %s not written", entry.id)
        raise ApiError(
            "unavailable", "The audit log is not keeping up; retry shortly", headers={"Retry-After": "1"}
        ) from None


async def build_entry(
    request: web.Request, action: str, status: int, response: web.StreamResponse | None
) -> AuditEntry:
    workspace, key_id, prefix = await _who(request)
    agent = request.headers.get("User-Agent")
    settings = request.app[SERVICES].settings
    return AuditEntry(
        id=new_id("aud"),
        workspace=workspace,
        time=time_text(datetime.now(UTC)),
        action=action,
        status=status,
        request_id=request.get(REQUEST_ID, ""),
        key_id=key_id,
        key_prefix=prefix,
        resource_id=request.match_info.get("id") or _created_id(request, response),
        ip=client_ip(request, settings.trust_forwarded_for),
        user_agent=agent[:MAX_USER_AGENT] if agent else None,
    )


async def _who(request: web.Request) -> tuple[str, str | None, str | None]:
    """(workspace, key id, key prefix). A refused key that exists (revoked, expired) still names its
    workspace; an unknown one is logged under UNAUTHENTICATED, with its prefix if it looks like ours."""
    principal = request.get(PRINCIPAL)
    if principal is not None:
        return principal.workspace, principal.key.id, principal.key.prefix
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret.startswith(KEY_PREFIX):
        return UNAUTHENTICATED, None, None
    record = await request.app[SERVICES].key_cache.lookup(hash_secret(secret))
    if record is None:
        return UNAUTHENTICATED, None, display_prefix(secret)
    return record.workspace, record.id, record.prefix


class _Created(msgspec.Struct):
    id: str | None = None


_created_decoder = msgspec.json.Decoder(_Created)


def _created_id(request: web.Request, response: web.StreamResponse | None) -> str | None:
    """The id in a successful POST's JSON answer (`{"id": ...}`), when the body is small and at hand."""
    if request.method != "POST" or not isinstance(response, web.Response) or not 200 <= response.status < 300:
        return None
    body = response.body
    if not isinstance(body, bytes) or len(body) > _MAX_ID_BODY or response.content_type != "application/json":
        return None
    try:
        return _created_decoder.decode(body).id
    except msgspec.DecodeError:
        return None
