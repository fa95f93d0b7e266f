"""Per-key request rate limits with the draft-ietf-httpapi-ratelimit-headers fields on every answer."""

from __future__ import annotations

import math

from aiohttp import web

from ingress.context import PRINCIPAL, SERVICES
from ingress.problems import ApiError
from store import keyspace


@web.middleware
async def rate_limit(request: web.Request, handler) -> web.StreamResponse:
    principal = request.get(PRINCIPAL)
    if principal is None:
        return await handler(request)
    services = request.app[SERVICES]
    limiter = services.rate_limiter
    decision = await limiter.check(keyspace.rate_limit(principal.key.id))
    policy = f'"per-key";q={limiter.burst};w={limiter.window_seconds}'
    if not decision.allowed:
        services.metrics.rate_limited.inc()
        retry = max(1, math.ceil(decision.retry_after_ms / 1000))
        raise ApiError(
            "rate_limited",
            f"Too many requests for this key; retry in {retry} s",
            headers={
                "Retry-After": str(retry),
                "RateLimit-Policy": policy,
                "RateLimit": f'"per-key";r=0;t={retry}',
            },
        )
    response = await handler(request)
    if not response.prepared:
        response.headers["RateLimit-Policy"] = policy
        response.headers["RateLimit"] = (
            f'"per-key";r={decision.remaining};t={math.ceil(decision.reset_ms / 1000)}'
        )
    return response
