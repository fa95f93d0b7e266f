"""Unauthenticated operations endpoints: liveness, readiness, metrics, the OpenAPI document."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ingress.context import SERVICES
from ingress.metrics import CONTENT_TYPE
from ingress.openapi import OPENAPI
from ingress.routing import RouteTable, json_response

routes = RouteTable()


@routes.route("GET", "/healthz", scope=None, auth=False, summary="The process is up", tag="ops")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.route(
    "GET",
    "/readyz",
    scope=None,
    auth=False,
    summary="Redis, Ray actors and stores reachable",
    tag="ops",
    responses={503: "A dependency is unreachable"},
)
async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    redis_ok, actors_ok, analytics_ok = await asyncio.gather(
        _redis_ok(services),
        _actors_ok(services),
        services.gateway.analytics_ready() if services.gateway is not None else asyncio.sleep(0),
    )
    status = {"redis": redis_ok, "actors": actors_ok}
    if analytics_ok is not None:  # the server runs the event sink (`mailers serve` does)
        status["analytics"] = analytics_ok
    ready = all(status.values())
    return json_response(
        {"status": "ready" if ready else "unavailable", "checks": status}, status=200 if ready else 503
    )


async def _redis_ok(services) -> bool:
    try:
        async with asyncio.timeout(2):
            return bool(await services.redis.ping())
    except Exception:
        return False


async def _actors_ok(services) -> bool:
    return services.gateway is not None and await services.gateway.ping()


@routes.route("GET", "/metrics", scope=None, auth=False, summary="Prometheus metrics", tag="ops")
async def metrics(request: web.Request) -> web.Response:
    body = request.app[SERVICES].metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


@routes.route(
    "GET", "/v1/openapi.json", scope=None, auth=False, summary="This API's OpenAPI 3.1 document", tag="ops"
)
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")
