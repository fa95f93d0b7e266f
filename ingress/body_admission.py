"""Middleware: every body is bounded by its route's cap before it is read, and charged to its key.

- The cap: `RouteSpec.max_body` (1 MiB unless the route declares more; the send routes take
  `MAILERS_MAX_BODY_BYTES`). A larger `Content-Length` is refused 413 before a byte is read; a chunked
  body is cut off at the cap while it is read.
- The key's byte budget and heavy slots (ingress/body_budget.py): over either, 429 `rate_limited` with
  `Retry-After`, before the body is read.
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
from ingress.problems import ApiError
from ingress.routing import route_spec

HEAVY_BODY_BYTES = 256 * 1024  # a body larger than this makes its request heavy


@web.middleware
async def admit_body(request: web.Request, handler) -> web.StreamResponse:
    if not request.body_exists:
        return await handler(request)
    cap = body_cap(request)
    size = request.content_length
    if size is not None and size > cap:
        return _refuse(
            request, ApiError("payload_too_large", f"{size} bytes; this route takes at most {cap}")
        )
    # aiohttp has no public per-request limit short of clone(), whose copy would hide what handlers set
    # on the request from the outer middleware; this is the limit request.read() and post() enforce.
    request._client_max_size = cap
    principal = request.get(PRINCIPAL)
    if principal is None:
        return await handler(request)
    key, budget = principal.key.id, request.app[SERVICES].body_budget
    charged = size if size is not None else cap
    wait = budget.take(key, charged, now=time.monotonic())
    if wait:
        return _refuse(request, _over_rate(budget, wait))
    spec = route_spec(request)
    if not ((spec is not None and spec.heavy) or charged > HEAVY_BODY_BYTES):
        return await handler(request)
    if not budget.enter_heavy(key):
        return _refuse(request, _over_heavy(budget))
    try:
        return await handler(request)
    finally:
        budget.leave_heavy(key)


def body_cap(request: web.Request) -> int:
    limit = request.app[SERVICES].settings.max_body_bytes
    spec = route_spec(request)
    return min(spec.max_body or limit, limit) if spec is not None else limit


def _refuse(request: web.Request, error: ApiError) -> web.Response:
    response = error.response(request.get(REQUEST_ID, ""))
    response.force_close()
    return response


def _over_rate(budget: BodyBudget, wait: float) -> ApiError:
    return ApiError(
        "rate_limited",
        f"This key's request bodies exceed {budget.bytes_per_second:,.0f} bytes a second",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


def _over_heavy(budget: BodyBudget) -> ApiError:
    return ApiError(
        "rate_limited",
        f"This key already has {budget.heavy_per_key} bulk or large requests in progress",
        headers={"Retry-After": "1"},
    )
