"""`create_app(settings, ...)`: the aiohttp application, its middleware and its routes."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from ingress import middleware, off_loop
from ingress.context import SERVICES
from ingress.import_confirmations import confirmation_sender_ctx
from ingress.openapi import OPENAPI, build_openapi
from ingress.routes import discover_route_tables
from ingress.routing import RouteTable
from ingress.services import Services
from schemas.settings import Settings

if TYPE_CHECKING:
    from actors.gateway import Gateway

VERSION = "0.1.0"
ROUTE_TABLES: tuple[RouteTable, ...] = discover_route_tables()


def create_app(settings: Settings, *, redis_url: str, gateway: Gateway | None) -> web.Application:
    app = web.Application(
        # One middleware: it runs the route's request steps (body deadline, audit, auth, rate limit, body
        # admission, idempotency), composed once per route (ingress/middleware.py).
        middlewares=[middleware.problems_and_request_ids],
        client_max_size=settings.max_body_bytes,
    )
    off_loop.share_the_gil()
    for table in ROUTE_TABLES:
        table.add_to(app)
    app[OPENAPI] = _openapi_bytes()

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        app[SERVICES] = await Services.open(settings, redis_url=redis_url, gateway=gateway)
        yield
        await app[SERVICES].close()

    app.cleanup_ctx.append(services_ctx)
    app.cleanup_ctx.append(confirmation_sender_ctx)  # imported double opt-in members' mails
    return app


@functools.cache
def _openapi_bytes() -> bytes:
    """Built once per process: the document depends only on the route tables (~0.1-0.4 s to build,
    which every app creation paid — a test suite builds ~900 apps)."""
    return msgspec.json.encode(openapi_document())


def openapi_document() -> dict:
    return build_openapi([spec for table in ROUTE_TABLES for spec in table.specs], version=VERSION)
