"""The `audit` middleware: one audit entry per request to an authenticated route, refused ones included.

It sits directly inside `problems_and_request_ids`, so it sees every answer the client will get: a
handler's response, or the `ApiError`/`HTTPException` the outer middleware turns into one (401 and 403
from `authenticate` included). The entry is appended to the Redis stream `m:audit` before the
response leaves, so an answered request always has a durable entry; the AuditSink chains and signs it
later (docs/audit.md).

Cost: the append is awaited, but every concurrent request's entry shares one pipelined XADD round
trip (`store.audit_log.AuditWriter`); alone, a request pays one Redis round trip (~0.1-0.3 ms).

Requests refused without naming a workspace (no key, an unknown key) are sampled per client address
(`RefusedRequestSampler`), with a summary entry for what was left out: anyone can send them, and
each would otherwise cost a durable entry kept forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
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
from store.api_keys import KEY_PREFIX, display_prefix, hash_secret
from store.audit_log import AuditWriter, encode_entry
from store.coalescer import Backpressure

log = logging.getLogger("mailers.audit")

UNAUTHENTICATED = "_unauthenticated"  # the log of refused requests whose key names no workspace
MAX_USER_AGENT = 512
_MAX_ID_BODY = 64 * 1024


@dataclass
class _Bucket:
    """A token bucket: `rate` tokens a second up to `burst`; full when first seen."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass
class _Client:
    bucket: _Bucket
    suppressed: int = 0
    since: float = 0.0  # when the current run of suppressed requests began
    status: int = 401


@dataclass(frozen=True)
class Suppressed:
    """`count` refused requests from `ip` that got no entry of their own (the last one answered `status`).

    Not a NamedTuple: a field named `count` would shadow `tuple.count`."""

    ip: str
    count: int
    status: int


class RefusedRequestSampler:
    """Which unauthenticated requests get an audit entry (issue #11: they filled the log without limit).

    A token bucket per client address (`per_client_burst`, then `per_client_rate` a second) and one for
    all of them (`total_*`, so many addresses cannot flood it either). A request over either limit is
    only counted; the count becomes one summary entry, "N refused requests from X suppressed", when the
    address is next admitted, after `summary_after` seconds, or when the address leaves the table of
    the `max_clients` most recently seen. Pure: the caller passes `now` (seconds, monotonic)."""

    def __init__(
        self,
        *,
        per_client_rate: float = 1.0,
        per_client_burst: int = 10,
        total_rate: float = 20.0,
        total_burst: int = 200,
        summary_after: float = 60.0,
        max_clients: int = 10_000,
    ) -> None:
        self.per_client = (per_client_rate, float(per_client_burst))
        self.total = _Bucket(total_rate, total_burst, total_burst, 0.0)
        self.summary_after, self.max_clients = summary_after, max_clients
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._runs: deque[tuple[float, str]] = deque()  # (since, ip) of runs, oldest first

    def admit(self, ip: str, status: int, now: float) -> tuple[bool, list[Suppressed]]:
        """Whether this request gets its entry, and the summaries to write now."""
        client = self._client(ip, now)
        summaries = self._due(now)
        if client.bucket.take(now) and self.total.take(now):
            summaries += self._summarise(ip, client)
            return True, summaries
        if not client.suppressed:
            client.since = now
            self._runs.append((now, ip))
        client.suppressed, client.status = client.suppressed + 1, status
        return False, summaries

    def _client(self, ip: str, now: float) -> _Client:
        client = self._clients.pop(ip, None)
        if client is None:
            rate, burst = self.per_client
            client = _Client(_Bucket(rate, burst, burst, now))
        self._clients[ip] = client  # most recently seen last
        return client

    def _due(self, now: float) -> list[Suppressed]:
        """Summaries of runs older than `summary_after`, and of addresses pushed out of the table."""
        summaries: list[Suppressed] = []
        while len(self._clients) > self.max_clients:
            ip, client = self._clients.popitem(last=False)
            summaries += self._summarise(ip, client)
        while self._runs and now - self._runs[0][0] >= self.summary_after:
            since, ip = self._runs.popleft()
            current = self._clients.get(ip)
            if current is not None and current.suppressed and current.since == since:
                summaries += self._summarise(ip, current)
        return summaries

    @staticmethod
    def _summarise(ip: str, client: _Client) -> list[Suppressed]:
        if not client.suppressed:
            return []
        summary = Suppressed(ip, client.suppressed, client.status)
        client.suppressed = 0
        return [summary]


def summary_entry(summary: Suppressed) -> AuditEntry:
    return AuditEntry(
        id=new_id("aud"),
        workspace=UNAUTHENTICATED,
        time=time_text(datetime.now(UTC)),
        action=f"{summary.count} refused requests from {summary.ip} suppressed",
        status=summary.status,
        request_id="",
        ip=summary.ip,
    )


class AuditCapture:
    """One app's audit output: the `m:audit` writer, and the sampler of unauthenticated requests."""

    def __init__(
        self,
        *,
        sampler: RefusedRequestSampler | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sampler = sampler or RefusedRequestSampler()
        self.clock = clock
        self._writer: AuditWriter | None = None

    async def record(self, redis: aioredis.Redis, entry: AuditEntry) -> None:
        if self._writer is None:
            self._writer = AuditWriter(redis)
        entries = [entry]
        if entry.workspace == UNAUTHENTICATED:
            admitted, summaries = self.sampler.admit(entry.ip or "-", entry.status, self.clock())
            entries = [summary_entry(s) for s in summaries] + ([entry] if admitted else [])
        for item in entries:
            await self._writer.append(item)


# Set it before the app starts (tests do, through app_hook, to inject a clock). Otherwise each app gets
# one lazily: a started aiohttp app is frozen, and adding a key to it then is deprecated.
AUDIT_CAPTURE: web.AppKey[AuditCapture] = web.AppKey("audit_capture", AuditCapture)
_lazy_captures: weakref.WeakKeyDictionary[web.Application, AuditCapture] = weakref.WeakKeyDictionary()


def capture_for(app: web.Application) -> AuditCapture:
    capture = app.get(AUDIT_CAPTURE) or _lazy_captures.get(app)
    if capture is None:
        capture = _lazy_captures[app] = AuditCapture()
    return capture


# Set by a handler that wrote its own entry in the same Redis round trip as its writes (the send path).
AUDITED: web.RequestKey[bool] = web.RequestKey("audited", bool)


async def entry_bytes(request: web.Request, status: int, resource_id: str | None) -> bytes:
    """The request's entry, encoded, for a handler that appends it itself (then it sets AUDITED)."""
    spec = route_spec(request)
    entry = await build_entry(
        request, f"{request.method} {spec.path if spec else request.path}", status, None
    )
    return encode_entry(msgspec.structs.replace(entry, resource_id=resource_id))


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
        await capture_for(request.app).record(request.app[SERVICES].redis, entry)
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
        time=now_text(),
        action=action,
        status=status,
        request_id=request.get(REQUEST_ID, ""),
        key_id=key_id,
        key_prefix=prefix,
        resource_id=request.match_info.get("id") or _created_id(request, response),
        ip=client_ip(request, settings.trust_forwarded_for),
        user_agent=agent[:MAX_USER_AGENT] if agent else None,
    )


_now: tuple[int, str] = (-1, "")


def now_text() -> str:
    """`time_text(datetime.now(UTC))`, made once per millisecond (every audited request stamps one)."""
    global _now
    millis = time.time_ns() // 1_000_000
    found = _now  # one tuple, replaced whole
    if found[0] != millis:
        moment = datetime.fromtimestamp(millis // 1000, UTC).replace(microsecond=millis % 1000 * 1000)
        found = _now = (millis, time_text(moment))
    return found[1]


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
