"""`/v1/webhooks`: endpoints, secret rotation, delivery history and replays (read:/write:webhooks)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import msgspec
from aiohttp import web

from ingress.context import SERVICES, principal
from ingress.pagination import PageQuery, decode_cursor, list_response
from ingress.problems import ApiError, not_found, validation_error
from ingress.routing import RouteTable, json_response
from schemas.ids import new_id
from schemas.settings import Settings
from schemas.webhooks import (
    CreateWebhook,
    DeletedWebhook,
    Delivery,
    DeliveryList,
    ReplayResult,
    ReplayWindow,
    UpdateWebhook,
    Webhook,
    WebhookList,
    WebhookRecord,
    WebhookWithSecret,
    invalid_filter,
)
from security.ssrf import ForbiddenUrl, check_webhook_url, resolve_and_check
from security.webhook_signing import new_webhook_secret
from store.webhooks import WebhookStore, seal_secret, secret_box

routes = RouteTable()
ROTATION_OVERLAP = timedelta(hours=24)
TAG = "webhooks"


def view(record: WebhookRecord) -> Webhook:
    return Webhook(**{f: getattr(record, f) for f in Webhook.__struct_fields__ if hasattr(record, f)})


def with_secret(record: WebhookRecord, secret: str) -> WebhookWithSecret:
    return WebhookWithSecret(**msgspec.structs.asdict(view(record)), secret=secret)


@routes.route(
    "POST",
    "/v1/webhooks",
    scope="write:webhooks",
    body=CreateWebhook,
    response=WebhookWithSecret,
    status=201,
    summary="Create an endpoint; its signing secret is shown only in this answer",
    tag=TAG,
)
async def create_webhook(request: web.Request, body: CreateWebhook) -> web.Response:
    services = request.app[SERVICES]
    await checked_url(body.url, services.settings)
    checked_filters(body.events)
    now = datetime.now(UTC)
    endpoint_id, secret = new_id("whk"), new_webhook_secret()
    record = WebhookRecord(
        id=endpoint_id,
        workspace=principal(request).workspace,
        url=body.url,
        events=list(dict.fromkeys(body.events)),
        enabled=body.enabled,
        description=body.description,
        created_at=now,
        updated_at=now,
        sealed_secret=seal_secret(_box(services.settings), endpoint_id, secret),
        disabled_at=None if body.enabled else now,
    )
    await WebhookStore(services.redis).create(record)
    return json_response(with_secret(record, secret), status=201)


@routes.route(
    "GET",
    "/v1/webhooks",
    scope="read:webhooks",
    query=PageQuery,
    response=WebhookList,
    summary="List endpoints, newest first (secrets are never listed)",
    tag=TAG,
)
async def list_webhooks(request: web.Request, query: PageQuery) -> web.Response:
    after = decode_cursor(query.cursor, {})
    store = WebhookStore(request.app[SERVICES].redis)
    records, has_more = await store.page(principal(request).workspace, limit=query.limit, after=after)
    return list_response(
        request,
        [view(r) for r in records],
        has_more=has_more,
        last_id=records[-1].id if records else None,
        filters={},
    )


@routes.route(
    "GET",
    "/v1/webhooks/{id}",
    ids={"id": "whk"},
    scope="read:webhooks",
    response=Webhook,
    summary="Get an endpoint",
    tag=TAG,
)
async def get_webhook(request: web.Request) -> web.Response:
    return json_response(view(await _own_endpoint(request)))


@routes.route(
    "PATCH",
    "/v1/webhooks/{id}",
    ids={"id": "whk"},
    scope="write:webhooks",
    body=UpdateWebhook,
    response=Webhook,
    summary="Change an endpoint; enabling a disabled one clears its failure history",
    tag=TAG,
)
async def update_webhook(request: web.Request, body: UpdateWebhook) -> web.Response:
    services = request.app[SERVICES]
    record = await _own_endpoint(request)
    if body.url is not msgspec.UNSET:
        await checked_url(body.url, services.settings)
        record.url = body.url
    if body.events is not msgspec.UNSET:
        checked_filters(body.events)
        record.events = list(dict.fromkeys(body.events))
    if body.description is not msgspec.UNSET:
        record.description = body.description
    now = datetime.now(UTC)
    enabling = body.enabled is True and not record.enabled
    if body.enabled is not msgspec.UNSET and body.enabled != record.enabled:
        record.enabled = body.enabled
        record.disabled_at, record.disabled_reason = (
            (None, None) if body.enabled else (now, "disabled through the API")
        )
    record.updated_at = now
    await WebhookStore(services.redis).save(record, reset_health=enabling)
    return json_response(view(record))


@routes.route(
    "DELETE",
    "/v1/webhooks/{id}",
    ids={"id": "whk"},
    scope="write:webhooks",
    response=DeletedWebhook,
    summary="Delete an endpoint; nothing more is delivered to it",
    tag=TAG,
)
async def delete_webhook(request: web.Request) -> web.Response:
    record = await _own_endpoint(request)
    await WebhookStore(request.app[SERVICES].redis).delete(record.workspace, record.id)
    return json_response(DeletedWebhook(id=record.id))


@routes.route(
    "POST",
    "/v1/webhooks/{id}/rotate-secret",
    ids={"id": "whk"},
    scope="write:webhooks",
    response=WebhookWithSecret,
    summary="New signing secret; the old one keeps signing too for 24 hours",
    tag=TAG,
)
async def rotate_secret(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    record = await _own_endpoint(request)
    secret, now = new_webhook_secret(), datetime.now(UTC)
    record.sealed_previous_secret, record.previous_secret_until = record.sealed_secret, now + ROTATION_OVERLAP
    record.sealed_secret = seal_secret(_box(services.settings), record.id, secret)
    record.updated_at = now
    await WebhookStore(services.redis).save(record)
    return json_response(with_secret(record, secret))


@routes.route(
    "GET",
    "/v1/webhooks/{id}/deliveries",
    ids={"id": "whk"},
    scope="read:webhooks",
    query=PageQuery,
    response=DeliveryList,
    summary="Deliveries to an endpoint, newest event first, each with its attempts",
    tag=TAG,
)
async def list_deliveries(request: web.Request, query: PageQuery) -> web.Response:
    record = await _own_endpoint(request)
    after = decode_cursor(query.cursor, {"endpoint": record.id})
    store = WebhookStore(request.app[SERVICES].redis)
    deliveries, has_more = await store.delivery_page(
        record.workspace, record.id, limit=query.limit, after=after
    )
    return list_response(
        request,
        deliveries,
        has_more=has_more,
        filters={"endpoint": record.id},
        last_id=deliveries[-1].id if deliveries else None,
    )


@routes.route(
    "POST",
    "/v1/webhooks/{id}/deliveries/{dlv}/replay",
    ids={"id": "whk", "dlv": "dlv"},
    scope="write:webhooks",
    response=Delivery,
    status=202,
    summary="Deliver a finished (dead-lettered or delivered) delivery again",
    tag=TAG,
)
async def replay_delivery(request: web.Request) -> web.Response:
    record = await _own_endpoint(request)
    store, delivery_id = WebhookStore(request.app[SERVICES].redis), request.match_info["dlv"]
    [delivery] = await store.deliveries(record.workspace, [delivery_id])
    if delivery is None or delivery.endpoint_id != record.id:
        raise not_found("delivery")
    outcome = await store.replay(record.workspace, record.id, delivery_id, int(time.time() * 1000))
    if outcome == 0:
        raise ApiError("conflict", "The delivery is still pending; it will be attempted again on its own")
    if outcome < 0:
        raise not_found("delivery")
    [delivery] = await store.deliveries(record.workspace, [delivery_id])
    return json_response(delivery, status=202)


@routes.route(
    "POST",
    "/v1/webhooks/{id}/replay",
    ids={"id": "whk"},
    scope="write:webhooks",
    body=ReplayWindow,
    response=ReplayResult,
    status=202,
    summary="Deliver again every dead letter whose event happened in [from, to]",
    tag=TAG,
)
async def replay_window(request: web.Request, body: ReplayWindow) -> web.Response:
    if body.to < body.from_:
        raise validation_error("#/to", "must not be before `from`", "invalid_window")
    record = await _own_endpoint(request)
    store = WebhookStore(request.app[SERVICES].redis)
    replayed = await store.replay_window(
        record.workspace, record.id, _ms(body.from_), _ms(body.to), int(time.time() * 1000)
    )
    return json_response(ReplayResult(endpoint_id=record.id, replayed=replayed), status=202)


async def checked_url(url: str, settings: Settings) -> None:
    """The SSRF guard at create/update time: syntax, literal addresses, and every address the name has."""
    try:
        parsed = check_webhook_url(
            url, allow_http=settings.allow_http_webhooks, allow_private=settings.allow_private_webhooks
        )
        if parsed.ip is None:
            await resolve_and_check(parsed.host, parsed.port, allow_private=settings.allow_private_webhooks)
    except ForbiddenUrl as exc:
        raise validation_error("#/url", exc.detail, exc.code) from None


def checked_filters(patterns: list[str]) -> None:
    for index, pattern in enumerate(patterns):
        problem = invalid_filter(pattern)
        if problem is not None:
            raise validation_error(f"#/events/{index}", problem, "unknown_event_type")


def _box(settings: Settings):
    if not settings.secret_key:
        raise ApiError("unavailable", "Webhook secrets cannot be sealed: MAILERS_SECRET_KEY is not set")
    return secret_box(settings.secret_key, settings.secret_keys_old)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def _own_endpoint(request: web.Request) -> WebhookRecord:
    record = await WebhookStore(request.app[SERVICES].redis).get(
        principal(request).workspace, request.match_info["id"]
    )
    if record is None:
        raise not_found("webhook endpoint")
    return record
