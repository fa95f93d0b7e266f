"""`/v1/sending-servers`: connect providers (credentials sealed, never returned), quotas, health."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from ingress.context import SERVICES, principal
from ingress.pagination import PageQuery, decode_cursor, list_response
from ingress.problems import ApiError, not_found, validation_error
from ingress.routing import DEFINITION_MAX_BODY, RouteTable, field_error, json_response
from providers.egress import Egress, TargetRefused, check_server_config
from providers.inbound import operator_sns_trust, untrusted_prefixes
from providers.registry import UnknownProvider, provider_module
from schemas.servers import (
    CreateSendingServer,
    DeletedSendingServer,
    SendingServer,
    SendingServerList,
    ServerRecord,
    Status,
    UpdateSendingServer,
)
from store.servers import (
    InvalidServerConfig,
    InvalidServerField,
    ProviderUnavailable,
    ServerInUse,
    ServerStore,
)

routes = RouteTable()
TAG = "sending-servers"


def view(record: ServerRecord, status: Status) -> SendingServer:
    return SendingServer(
        id=record.id,
        name=record.name,
        provider=record.provider,
        config=record.config,
        secret_fields_set=record.secret_fields_set,
        inbound_fields_set=record.inbound_fields_set,
        priority=record.priority,
        quotas=record.quotas,
        recipient_domain_limits=record.recipient_domain_limits,
        domains=record.domains,
        status=status,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def server_store(request: web.Request) -> ServerStore:
    services = request.app[SERVICES]
    try:
        return ServerStore.for_settings(services.redis, services.settings)
    except RuntimeError as exc:
        raise ApiError("unavailable", str(exc)) from None


def require_adapter(provider: str) -> None:
    """The provider's adapter module must import (its SDK may be missing). Checked here, above the
    store: the store validates configs against `schemas.provider_configs` and imports no adapter."""
    try:
        provider_module(provider)
    except (UnknownProvider, ImportError):
        raise ProviderUnavailable(provider) from None


@contextmanager
def server_settings_errors() -> Iterator[None]:
    """Translate the store's validation errors into 422 answers with JSON pointers."""
    try:
        yield
    except ProviderUnavailable as exc:
        raise validation_error(
            "#/provider", f"provider {exc.args[0]!r} not available", "provider_unavailable"
        ) from None
    except InvalidServerConfig as exc:
        raise ApiError(
            "validation_error", "The request body is invalid", errors=[field_error(exc.message, exc.root)]
        ) from None
    except InvalidServerField as exc:
        raise validation_error(exc.pointer, exc.detail, exc.code) from None


async def check_outbound(request: web.Request, store: ServerStore, record: ServerRecord) -> None:
    """The operator's outbound rules (providers.egress) for the config about to be saved: 422 naming
    the field, so a tenant learns at once that a private target or borrowed credentials are refused."""
    settings = request.app[SERVICES].settings
    try:
        await check_server_config(store.open_config(record), Egress.from_settings(settings))
    except TargetRefused as exc:
        raise validation_error(f"#/config/{exc.field}", exc.detail, exc.code) from None
    outside = untrusted_prefixes(store.open_inbound(record).sns_trust, operator_sns_trust(settings))
    if outside:
        raise validation_error(
            "#/inbound/sns_trust/url_prefixes",
            f"not trusted by the operator (MAILERS_SNS_TRUSTED_URL_PREFIXES): {', '.join(outside)}",
            "sns_trust_not_allowed",
        )


@routes.route(
    "POST",
    "/v1/sending-servers",
    scope="write:settings",
    body=CreateSendingServer,
    response=SendingServer,
    status=201,
    summary="Connect a provider as a sending server",
    tag=TAG,
    max_body=DEFINITION_MAX_BODY,
)
async def create_server(request: web.Request, body: CreateSendingServer) -> web.Response:
    store = server_store(request)
    with server_settings_errors():
        require_adapter(body.provider)
        record = store.build(principal(request).workspace, body)
    await check_outbound(request, store, record)
    await store.create(record)
    return json_response(view(record, "healthy"), status=201)


@routes.route(
    "GET",
    "/v1/sending-servers",
    scope="read:settings",
    query=PageQuery,
    response=SendingServerList,
    summary="List sending servers, newest first (secrets are never listed)",
    tag=TAG,
)
async def list_servers(request: web.Request, query: PageQuery) -> web.Response:
    store = server_store(request)
    after = decode_cursor(query.cursor, {})
    records, has_more = await store.page(principal(request).workspace, limit=query.limit, after=after)
    statuses = await store.statuses([r.id for r in records])
    data = [view(r, statuses[r.id]) for r in records]
    return list_response(
        request, data, has_more=has_more, last_id=records[-1].id if records else None, filters={}
    )


@routes.route(
    "GET",
    "/v1/sending-servers/{id}",
    ids={"id": "srv"},
    scope="read:settings",
    response=SendingServer,
    summary="Get a sending server and its health",
    tag=TAG,
)
async def get_server(request: web.Request) -> web.Response:
    store = server_store(request)
    record = await _own_server(request, store)
    return json_response(view(record, (await store.statuses([record.id]))[record.id]))


@routes.route(
    "PATCH",
    "/v1/sending-servers/{id}",
    ids={"id": "srv"},
    scope="write:settings",
    body=UpdateSendingServer,
    response=SendingServer,
    summary="Change a sending server; config merges field by field",
    tag=TAG,
    max_body=DEFINITION_MAX_BODY,
)
async def update_server(request: web.Request, body: UpdateSendingServer) -> web.Response:
    store = server_store(request)
    record = await _own_server(request, store)
    with server_settings_errors():
        record = store.updated(record, body)
    await check_outbound(request, store, record)
    if not await store.save(record):
        raise not_found("sending server")
    return json_response(view(record, (await store.statuses([record.id]))[record.id]))


@routes.route(
    "DELETE",
    "/v1/sending-servers/{id}",
    ids={"id": "srv"},
    scope="write:settings",
    response=DeletedSendingServer,
    responses={409: "A routing rule still targets the server"},
    summary="Delete a sending server no routing rule targets",
    tag=TAG,
)
async def delete_server(request: web.Request) -> web.Response:
    server_id = request.match_info["id"]
    try:
        deleted = await server_store(request).delete(principal(request).workspace, server_id)
    except ServerInUse as exc:
        raise ApiError(
            "conflict",
            f"Routing rules {', '.join(exc.rule_ids)} target this server; change or delete them first",
        ) from None
    if not deleted:
        raise not_found("sending server")
    return json_response(DeletedSendingServer(id=server_id))


async def _own_server(request: web.Request, store: ServerStore) -> ServerRecord:
    record = await store.get(principal(request).workspace, request.match_info["id"])
    if record is None:
        raise not_found("sending server")
    return record
