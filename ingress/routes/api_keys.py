"""`/v1/api-keys`: create, list, get, rotate and revoke keys (scope `admin`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
from aiohttp import web

from ingress.context import SERVICES, principal
from ingress.pagination import PageQuery, decode_cursor, list_response
from ingress.problems import not_found, validation_error
from ingress.routing import RouteTable, json_response
from schemas.api_keys import (
    SCOPES,
    ApiKey,
    ApiKeyList,
    ApiKeyRecord,
    ApiKeyWithSecret,
    CreateApiKey,
    RotateApiKey,
)
from store.api_keys import generate_secret, new_record

routes = RouteTable()


def view(record: ApiKeyRecord, usage: tuple[int, int | None] = (0, None)) -> ApiKey:
    count, last_ms = usage
    fields = {f: getattr(record, f) for f in ApiKey.__struct_fields__ if hasattr(record, f)}
    fields.update(
        use_count=count, last_used_at=datetime.fromtimestamp(last_ms / 1000, UTC) if last_ms else None
    )
    return ApiKey(**fields)


def with_secret(record: ApiKeyRecord, secret: str) -> ApiKeyWithSecret:
    return ApiKeyWithSecret(**msgspec.structs.asdict(view(record)), secret=secret)


@routes.route(
    "POST",
    "/v1/api-keys",
    scope="admin",
    body=CreateApiKey,
    response=ApiKeyWithSecret,
    status=201,
    summary="Create a key; its secret is shown only in this answer",
    tag="api-keys",
)
async def create_key(request: web.Request, body: CreateApiKey) -> web.Response:
    for index, scope in enumerate(body.scopes):
        if scope not in SCOPES:
            raise validation_error(f"#/scopes/{index}", f"unknown scope {scope!r}", "invalid_scope")
    if body.expires_at is not None and body.expires_at <= datetime.now(UTC):
        raise validation_error("#/expires_at", "must be in the future", "in_the_past")
    secret = generate_secret()
    record = new_record(
        principal(request).workspace,
        body.name,
        body.scopes,
        secret=secret,
        domains=body.domains,
        expires_at=body.expires_at,
    )
    await request.app[SERVICES].keys.create(record)
    return json_response(with_secret(record, secret), status=201)


@routes.route(
    "GET",
    "/v1/api-keys",
    scope="admin",
    query=PageQuery,
    response=ApiKeyList,
    summary="List keys, newest first (secrets are never listed)",
    tag="api-keys",
)
async def list_keys(request: web.Request, query: PageQuery) -> web.Response:
    keys = request.app[SERVICES].keys
    after = decode_cursor(query.cursor, {})
    records, has_more = await keys.page(principal(request).workspace, limit=query.limit, after=after)
    usage = await keys.usage([r.id for r in records])
    data = [view(r, usage[r.id]) for r in records]
    return list_response(
        request, data, has_more=has_more, last_id=records[-1].id if records else None, filters={}
    )


@routes.route(
    "GET",
    "/v1/api-keys/{id}",
    ids={"id": "key"},
    scope="admin",
    response=ApiKey,
    summary="Get a key",
    tag="api-keys",
)
async def get_key(request: web.Request) -> web.Response:
    record = await _own_key(request)
    usage = await request.app[SERVICES].keys.usage([record.id])
    return json_response(view(record, usage[record.id]))


@routes.route(
    "POST",
    "/v1/api-keys/{id}/rotate",
    ids={"id": "key"},
    scope="admin",
    body=RotateApiKey,
    response=ApiKeyWithSecret,
    status=201,
    summary="Issue a replacement; the old key keeps working for a grace period",
    tag="api-keys",
)
async def rotate_key(request: web.Request, body: RotateApiKey) -> web.Response:
    services = request.app[SERVICES]
    old = await _own_key(request)
    if old.state != "active":
        raise validation_error(
            "#", f"only an active key can be rotated; this one is {old.state}", "key_not_active"
        )
    grace = body.grace_period_seconds
    grace = services.settings.key_rotation_grace_seconds if grace is None else grace
    secret = generate_secret()
    new = new_record(
        old.workspace, old.name, old.scopes, secret=secret, domains=old.domains, expires_at=old.expires_at
    )
    await services.keys.create(new)
    old.state, old.replaced_by = "rotating", new.id
    old.rotating_until = datetime.now(UTC) + timedelta(seconds=grace)
    await services.keys.save(old)
    return json_response(with_secret(new, secret), status=201)


@routes.route(
    "DELETE",
    "/v1/api-keys/{id}",
    ids={"id": "key"},
    scope="admin",
    response=ApiKey,
    summary="Revoke a key everywhere at once",
    tag="api-keys",
)
async def revoke_key(request: web.Request) -> web.Response:
    record = await _own_key(request)
    record.state = "revoked"
    await request.app[SERVICES].keys.save(record)
    return json_response(view(record))


async def _own_key(request: web.Request) -> ApiKeyRecord:
    record = await request.app[SERVICES].keys.get(request.match_info["id"])
    if record is None or record.workspace != principal(request).workspace:
        raise not_found("API key")
    return record
