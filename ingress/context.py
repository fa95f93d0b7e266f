"""Typed keys for what the app and a request carry (aiohttp's AppKey / request-key habit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from schemas.api_keys import ApiKeyRecord

if TYPE_CHECKING:
    from ingress.services import Services


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the key, its workspace and what it may do."""

    key: ApiKeyRecord
    scopes: frozenset[str]

    @property
    def workspace(self) -> str:
        return self.key.workspace


SERVICES: web.AppKey[Services] = web.AppKey("services")
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
IDEMPOTENCY: web.RequestKey[object] = web.RequestKey("idempotency", object)


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def request_id(request: web.Request) -> str:
    return request.get(REQUEST_ID, "")
