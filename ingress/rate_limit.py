"""Request rate limits with the draft-ietf-httpapi-ratelimit-headers fields on every answer.

Per API key on the authenticated routes; per client address on the public ones (tracking, health,
metrics, the OpenAPI document), which anyone can call as fast as they like. A public route that is
called by providers and verified by signature (`/v1/inbound/…`) declares `address_limit=False`: a
provider posts from few addresses at the rate mail is sent.
"""

from __future__ import annotations

import functools
import math

from aiohttp import web

from ingress.client_address import client_ip
from ingress.context import PRINCIPAL, SERVICES
from ingress.problems import ApiError
from ingress.routing import route_spec
from store import keyspace


@functools.cache
def _policy(name: str, burst: int, window: int) -> str:
    return f'"{name}";q={burst};w={window}'


@web.middleware
async def rate_limit(request: web.Request, handler) -> web.StreamResponse:
    services = request.app[SERVICES]
    principal = request.get(PRINCIPAL)
    if principal is not None:
        limiter, key, name = services.rate_limiter, keyspace.rate_limit(principal.key.id), "per-key"
    else:
        spec = route_spec(request)
        address = client_ip(request, services.settings.trust_forwarded_for)
        if spec is None or spec.auth or not spec.address_limit or address is None:
            return await handler(request)
        limiter, key, name = services.address_limiter, keyspace.address_rate_limit(address), "per-address"
    decision = await limiter.check(key)
    policy = _policy(name, limiter.burst, limiter.window_seconds)
    if not decision.allowed:
        services.metrics.rate_limited.inc()
        retry = max(1, math.ceil(decision.retry_after_ms / 1000))
        raise ApiError(
            "rate_limited",
            f"Too many requests {'for this key' if principal else 'from this address'}; retry in {retry} s",
            headers={
                "Retry-After": str(retry),
                "RateLimit-Policy": policy,
                "RateLimit": f'"{name}";r=0;t={retry}',
            },
        )
    response = await handler(request)
    if not response.prepared:
        response.headers["RateLimit-Policy"] = policy
        response.headers["RateLimit"] = (
            f'"{name}";r={decision.remaining};t={math.ceil(decision.reset_ms / 1000)}'
        )
    return response
