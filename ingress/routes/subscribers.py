"""`/v1/subscribers/{id}`: one person (read/change/erase), and `/c/{token}`, the double opt-in link."""

from __future__ import annotations

import html
import time

import msgspec
from aiohttp import web

from analytics.errors import StoreUnavailable
from ingress.audience_views import subscriber_view
from ingress.confirmation import confirm_tokens
from ingress.context import SERVICES, principal
from ingress.problems import ApiError, not_found, validation_error
from ingress.routing import RouteTable, json_response
from schemas.audience import Deleted, Subscriber, UpdateSubscriber
from schemas.domain_names import normalise_email
from security.confirm_tokens import TOKEN_PATTERN
from store.lists import ListStore
from store.subscribers import AddressTaken, Conflict, SubscriberStore

routes = RouteTable()
TAG = "subscribers"
PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@routes.route(
    "GET",
    "/v1/subscribers/{id}",
    ids={"id": "sub"},
    scope="read:lists",
    response=Subscriber,
    summary="Get a subscriber with every list membership",
    tag=TAG,
)
async def get_subscriber(request: web.Request) -> web.Response:
    workspace = principal(request).workspace
    record = await SubscriberStore(request.app[SERVICES].redis).get(workspace, request.match_info["id"])
    if record is None:
        raise not_found("subscriber")
    live = await ListStore(request.app[SERVICES].redis).existing(workspace, list(record.lists))
    return json_response(subscriber_view(record, live))


@routes.route(
    "PATCH",
    "/v1/subscribers/{id}",
    ids={"id": "sub"},
    scope="write:lists",
    body=UpdateSubscriber,
    response=Subscriber,
    summary="Change a subscriber: email, name, attributes (merged; null deletes one) or status",
    tag=TAG,
)
async def update_subscriber(request: web.Request, body: UpdateSubscriber) -> web.Response:
    workspace = principal(request).workspace
    fields = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not msgspec.UNSET}
    if "email" in fields:
        try:
            fields["email"] = normalise_email(fields["email"])
        except ValueError:
            raise validation_error("#/email", "not an email address", "invalid_email") from None
    store = SubscriberStore(request.app[SERVICES].redis)
    try:
        record = await store.update(workspace, request.match_info["id"], fields, int(time.time() * 1000))
    except AddressTaken:
        raise ApiError("conflict", "Another subscriber of this workspace has that email") from None
    except Conflict:
        raise ApiError("conflict", "The subscriber changed under this request; retry it") from None
    if record is None:
        raise not_found("subscriber")
    live = await ListStore(request.app[SERVICES].redis).existing(workspace, list(record.lists))
    return json_response(subscriber_view(record, live))


@routes.route(
    "DELETE",
    "/v1/subscribers/{id}",
    ids={"id": "sub"},
    scope="write:lists",
    response=Deleted,
    summary="Erase a subscriber (GDPR): record, memberships and analytics rows; suppressions stay",
    tag=TAG,
)
async def erase_subscriber(request: web.Request) -> web.Response:
    """The analytics side first: if it is unavailable (503), the person is still in Redis and a retried
    DELETE finds them, instead of a 404 that would leave their analytics rows behind for good."""
    services = request.app[SERVICES]
    workspace, subscriber_id = principal(request).workspace, request.match_info["id"]
    store = SubscriberStore(services.redis)
    record = await store.get(workspace, subscriber_id)
    if record is None:
        raise not_found("subscriber")
    await _erase_analytics(services, workspace, record.email, record.id)
    erased = await store.erase(workspace, subscriber_id, int(time.time() * 1000))
    if erased is None:
        raise not_found("subscriber")
    if erased.email != record.email:  # the address changed meanwhile: erase that one too
        await _erase_analytics(services, workspace, erased.email, erased.id)
    return json_response(Deleted(id=erased.id, object="subscriber"))


async def _erase_analytics(services, workspace: str, email: str, subscriber_id: str) -> None:
    try:
        if services.gateway is None:
            raise StoreUnavailable("no gateway to the analytics store")
        await services.gateway.erase_subscriber(workspace, email, subscriber_id)
    except StoreUnavailable:
        raise ApiError(
            "unavailable",
            "The analytics store is unavailable; retry the erasure",
            headers={"Retry-After": "5"},
        ) from None


@routes.route(
    "GET",
    "/c/{token}",
    texts=("token",),
    patterns={"token": TOKEN_PATTERN},
    scope=None,
    auth=False,
    idempotent=False,
    tag="tracking",
    summary="Double opt-in link: a page with a confirm button (a scanner fetching links confirms nothing)",
    responses={404: "Unknown or altered token"},
)
async def confirm_page(request: web.Request) -> web.Response:
    _read_token(request)
    return _page(
        "Confirm your subscription",
        '<form method="post"><button type="submit">Confirm my subscription</button></form>',
    )


@routes.route(
    "POST",
    "/c/{token}",
    texts=("token",),
    patterns={"token": TOKEN_PATTERN},
    scope=None,
    auth=False,
    idempotent=False,
    tag="tracking",
    summary="Confirm a double opt-in subscription: the member becomes `subscribed` (`list.subscribed`)",
    responses={404: "Unknown or altered token, or no longer a pending member"},
)
async def confirm(request: web.Request) -> web.Response:
    token = _read_token(request)
    redis = request.app[SERVICES].redis
    store = SubscriberStore(redis)
    record = await store.get(token.workspace, token.subscriber_id)
    member = None if record is None else record.lists.get(token.list_id)
    target = await ListStore(redis).get(token.workspace, token.list_id)
    if member is None or target is None:
        raise not_found("pending subscription")
    if member.status == "unconfirmed":
        now = int(time.time() * 1000)
        await store.set_status(token.workspace, token.subscriber_id, token.list_id, "subscribed", now)
    elif member.status != "subscribed":  # unsubscribed since: an old link does not re-subscribe
        raise not_found("pending subscription")
    return _page("Subscribed", f"<p>You are subscribed to <b>{html.escape(target.name)}</b>.</p>")


def _read_token(request: web.Request):
    token = confirm_tokens(request.app[SERVICES].settings).read(request.match_info["token"])
    if token is None:
        raise not_found("confirmation link")
    return token


def _page(title: str, body: str) -> web.Response:
    document = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
        f'<body style="font-family:sans-serif;max-width:32rem;margin:4rem auto">{body}</body></html>'
    )
    return web.Response(text=document, content_type="text/html", headers=PAGE_HEADERS)
