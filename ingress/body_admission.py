"""Middleware: every body is bounded by its route's cap before it is read, and charged to its key.

- The cap: `RouteSpec.max_body` (1 MiB unless the route declares more; the send routes take
  `MAILERS_MAX_BODY_BYTES`). A larger `Content-Length` is refused 413 before a byte is read; a chunked
  body is cut off at the cap while it is read.
- The key's byte budget and heavy slots (ingress/body_budget.py), and its worker-CPU budget
  (ingress/cpu_budget.py: the thread CPU of its heavy work, measured by ingress/off_loop.py and charged
  here when the request ends): over any, 429 `rate_limited` with `Retry-After`, before the body is read.
- Streamed routes (`RouteSpec.streamed`, a CSV import of any size): capped by `MAILERS_MAX_IMPORT_BYTES`
  instead, counted as the handler reads (ingress/streamed_body.py, chunked bodies too), not charged to
  the byte budget (bytes a second would refuse any large file) but holding one heavy slot throughout.
A refusal closes the connection: otherwise aiohttp reads and discards the unread body (up to 10 s of
"lingering") to keep the connection, and a refused 9 MB upload would cost the loop nearly what an
accepted one does. Runs after authentication (it needs the key) and before idempotency (which reads the
body).
"""

from __future__ import annotations

import math
import time

from aiohttp import web

from ingress.body_budget import BodyBudget
from ingress.context import PRINCIPAL, REQUEST_ID, SERVICES
from ingress.cpu_budget import CURRENT_METER, CpuBudget, CpuMeter
from ingress.off_loop import HEAVY_BODY_BYTES
from ingress.problems import ApiError, error_response
from ingress.routing import route_spec
from ingress.streamed_body import BodyTooLarge, CountedStream


@web.middleware
async def admit_body(request: web.Request, handler) -> web.StreamResponse:
    if not request.body_exists:
        return await handler(request)
    spec = route_spec(request)
    streamed = spec is not None and spec.streamed
    cap = body_cap(request)
    size = request.content_length
    if size is not None and size > cap:
        return _refuse(
            request, ApiError("payload_too_large", f"{size} bytes; this route takes at most {cap}")
        )
    # aiohttp has no public per-request limit short of clone(), whose copy would hide what handlers set
    # on the request from the outer middleware; this is the limit request.read() and post() enforce.
    request._client_max_size = cap
    if streamed:  # the handler reads request.content in chunks, which that limit does not guard
        _count_while_read(request, cap)
    principal = request.get(PRINCIPAL)
    if principal is None:
        return await _metered(request, handler, None)
    key, services, now = principal.key.id, request.app[SERVICES], time.monotonic()
    cpu_wait = services.cpu_budget.wait(key, now=now)
    if cpu_wait:
        return _refuse(request, _over_cpu(services.cpu_budget, cpu_wait))
    charged = size if size is not None else cap
    # A streamed body (an import of any size) is bounded by its own cap and its heavy slot, not by the
    # per-second byte budget, which a 50 MB file would exceed for half a minute.
    wait = 0.0 if streamed else services.body_budget.take(key, charged, now=now)
    if wait:
        return _refuse(request, _over_rate(services.body_budget, wait))
    if not (streamed or (spec is not None and spec.heavy) or charged > HEAVY_BODY_BYTES):
        return await _metered(request, handler, key)
    if not services.body_budget.enter_heavy(key):
        return _refuse(request, _over_heavy(services.body_budget))
    try:
        return await _metered(request, handler, key)
    finally:
        services.body_budget.leave_heavy(key)


async def _metered(request: web.Request, handler, key: str | None) -> web.StreamResponse:
    """Run the handler with a CPU meter that ingress/off_loop.py fills; the key is charged what it shows.
    A streamed body cut off at its cap is refused like any other over-cap body: with the connection closed.
    """
    meter = CpuMeter()
    token = CURRENT_METER.set(meter)
    try:
        return await handler(request)
    except BodyTooLarge as exc:
        return _refuse(request, exc)
    finally:
        CURRENT_METER.reset(token)
        if key is not None and meter.seconds:
            request.app[SERVICES].cpu_budget.charge(key, meter.seconds, now=time.monotonic())


def _count_while_read(request: web.Request, cap: int) -> None:
    # `content` is a cached property (aiohttp's reify, cached in `_cache` once read by an outer middleware)
    # over `_payload`, which read() and post() use: both must be the counting wrapper.
    counted = CountedStream(request.content, cap)
    request._payload = counted  # type: ignore[assignment]  # delegates every StreamReader method
    request._cache["content"] = counted


def body_cap(request: web.Request) -> int:
    settings = request.app[SERVICES].settings
    spec = route_spec(request)
    if spec is not None and spec.streamed:
        return settings.max_import_bytes
    limit = settings.max_body_bytes
    return min(spec.max_body or limit, limit) if spec is not None else limit


def _refuse(request: web.Request, error: ApiError) -> web.Response:
    response = error_response(error, request.get(REQUEST_ID, ""))
    response.force_close()
    return response


def _over_rate(budget: BodyBudget, wait: float) -> ApiError:
    return ApiError(
        "rate_limited",
        f"This key's request bodies exceed {budget.bytes_per_second:,.0f} bytes a second",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


def _over_cpu(budget: CpuBudget, wait: float) -> ApiError:
    return ApiError(
        "rate_limited",
        f"This key's requests used more than {budget.seconds_per_second:g} s of worker CPU a second",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


def _over_heavy(budget: BodyBudget) -> ApiError:
    return ApiError(
        "rate_limited",
        f"This key already has {budget.heavy_per_key} bulk or large requests in progress",
        headers={"Retry-After": "1"},
    )
