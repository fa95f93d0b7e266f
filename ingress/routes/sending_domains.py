"""`/v1/sending-domains`: register a domain (DKIM key generated, records to publish), list, get,
delete, and verify its DNS records (see docs/sending-domains.md for the rule)."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from ingress.context import SERVICES, principal
from ingress.pagination import PageQuery, decode_cursor, list_response
from ingress.problems import ApiError, not_found, validation_error
from ingress.routing import RouteTable, json_response
from providers.dns_check import verify_domain_records
from schemas.domains import (
    CreateSendingDomain,
    DeletedSendingDomain,
    DkimView,
    SendingDomain,
    SendingDomainList,
    SendingDomainRecord,
)
from store.domains import (
    DomainExists,
    DomainStore,
    InvalidDomain,
    dns_record_set,
    return_path_host,
    spf_include,
    with_checks,
)

routes = RouteTable()
TAG = "sending-domains"


def view(record: SendingDomainRecord) -> SendingDomain:
    return SendingDomain(
        id=record.id,
        domain=record.domain,
        status=record.status,
        records=record.records,
        dkim=DkimView(selector=record.selector),
        return_path=record.return_path,
        verified_at=record.verified_at,
        checked_at=record.checked_at,
        created_at=record.created_at,
    )


def domain_store(request: web.Request) -> DomainStore:
    services = request.app[SERVICES]
    try:
        return DomainStore.for_settings(services.redis, services.settings)
    except RuntimeError as exc:
        raise ApiError("unavailable", str(exc)) from None


@routes.route(
    "POST",
    "/v1/sending-domains",
    scope="write:settings",
    body=CreateSendingDomain,
    response=SendingDomain,
    status=201,
    responses={409: "The workspace already has this domain"},
    summary="Register a sending domain: a DKIM key is generated and the DNS records to publish returned",
    tag=TAG,
)
async def create_domain(request: web.Request, body: CreateSendingDomain) -> web.Response:
    store, settings = domain_store(request), request.app[SERVICES].settings
    try:
        record = await store.build(
            principal(request).workspace,
            body,
            return_path_host=return_path_host(settings),
            spf_include=spf_include(settings),
        )
    except InvalidDomain as exc:
        raise validation_error("#/domain", str(exc), "invalid_domain") from None
    try:
        await store.create(record)
    except DomainExists as exc:
        raise ApiError("conflict", f"This workspace already has {record.domain} as {exc.domain_id}") from None
    return json_response(view(record), status=201)


@routes.route(
    "GET",
    "/v1/sending-domains",
    scope="read:settings",
    query=PageQuery,
    response=SendingDomainList,
    summary="List sending domains, newest first",
    tag=TAG,
)
async def list_domains(request: web.Request, query: PageQuery) -> web.Response:
    after = decode_cursor(query.cursor, {})
    records, has_more = await domain_store(request).page(
        principal(request).workspace, limit=query.limit, after=after
    )
    return list_response(
        request,
        [view(r) for r in records],
        has_more=has_more,
        last_id=records[-1].id if records else None,
        filters={},
    )


@routes.route(
    "GET",
    "/v1/sending-domains/{id}",
    ids={"id": "dom"},
    scope="read:settings",
    response=SendingDomain,
    summary="Get a sending domain, its DNS records and their last check",
    tag=TAG,
)
async def get_domain(request: web.Request) -> web.Response:
    return json_response(view(await _own_domain(request, domain_store(request))))


@routes.route(
    "DELETE",
    "/v1/sending-domains/{id}",
    ids={"id": "dom"},
    scope="write:settings",
    response=DeletedSendingDomain,
    summary="Delete a sending domain and its DKIM key; its mail is no longer signed",
    tag=TAG,
)
async def delete_domain(request: web.Request) -> web.Response:
    domain_id = request.match_info["id"]
    if not await domain_store(request).delete(principal(request).workspace, domain_id):
        raise not_found("sending domain")
    return json_response(DeletedSendingDomain(id=domain_id))


@routes.route(
    "POST",
    "/v1/sending-domains/{id}/verify",
    ids={"id": "dom"},
    scope="write:settings",
    response=SendingDomain,
    summary="Look the domain's DNS records up now and record what was found",
    tag=TAG,
)
async def verify_domain(request: web.Request) -> web.Response:
    store, settings = domain_store(request), request.app[SERVICES].settings
    record = await _own_domain(request, store)
    checks = await verify_domain_records(
        dns_record_set(record), nameserver=settings.dns_nameserver, port=settings.dns_port
    )
    record = with_checks(record, checks, datetime.now(UTC))
    if not await store.save(record):
        raise not_found("sending domain")
    return json_response(view(record))


async def _own_domain(request: web.Request, store: DomainStore) -> SendingDomainRecord:
    record = await store.get(principal(request).workspace, request.match_info["id"])
    if record is None:
        raise not_found("sending domain")
    return record
