"""`/t/…`: the open pixel, the click redirect and RFC 8058 one-click unsubscribe (no API key).

A token that does not read (forged, altered, another kind) is a 404 and nothing is recorded. Opens
and clicks need the message still stored (the redirect target comes from its link list, never from
the token); an unsubscribe does not, so it is honoured for as long as its token reads. A click is
`/t/c/{recipient token}/{index}`; `/t/c/{click token}` is what links issued before carry
(security/tracking.py).
Events go to the message's timeline and the event stream in one MULTI (`MessageLedger`).
"""

from __future__ import annotations

import base64
import html
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web
from redis.asyncio.client import Pipeline

from actors.outbound.tracking import tracking_for
from actors.policies.suppression import split_lists
from ingress.client_address import client_ip
from ingress.context import SERVICES
from ingress.problems import ApiError, not_found, validation_error
from ingress.routing import RouteTable
from schemas.events import Event, EventMessage
from schemas.ids import new_id
from schemas.suppressions import SuppressionEntry
from security.link_rewrite import MAX_TRACKED_LINKS, is_machine_open
from security.tracking import TOKEN_PATTERN, ClickToken, OpenToken, TrackingPayload, UnsubscribeToken
from security.unsubscribe import ONE_CLICK
from store import keyspace
from store.ledger import MessageLedger, StoredMessage
from store.subscribers import SubscriberStore
from store.suppressions import add_suppressions
from store.tracking_hits import RECORD, admit_hit

routes = RouteTable()
T = TypeVar("T", OpenToken, ClickToken, UnsubscribeToken)

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")  # 1×1 transparent GIF
NO_STORE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, private",
    "Pragma": "no-cache",
    "Expires": "0",
}
# The token is in the URL: keep it out of Referer headers, and keep the page out of frames (clickjacking).
PAGE_HEADERS = {
    **NO_STORE,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'",
}
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
UNSUBSCRIBE_RECORD_SECONDS = 400 * 24 * 3600
MAX_USER_AGENT = 512
_BAD_TOKEN = "tracking link"
# A link's index in its message: decimal, no leading zero, no more digits than MAX_TRACKED_LINKS - 1 has.
LINK_INDEX = f"0|[1-9][0-9]{{0,{len(str(MAX_TRACKED_LINKS - 1)) - 1}}}"
# The WHATWG URL parser drops ASCII tabs and newlines anywhere in a URL (an href may hold `&#10;`).
_URL_WHITESPACE = {ord("\t"): None, ord("\n"): None, ord("\r"): None}


@routes.route(
    "GET",
    "/t/o/{token}",
    texts=("token",),
    patterns={"token": TOKEN_PATTERN},
    scope=None,
    auth=False,
    idempotent=False,
    tag="tracking",
    summary="Open pixel: a 1×1 GIF, never cached; records message.opened",
    responses={404: "Unknown, altered or expired token"},
)
async def open_pixel(request: web.Request) -> web.Response:
    token = _token(request, "o", OpenToken)
    stored = await _stored(request, token.workspace, token.message_id)
    if await admit_hit(request.app[SERVICES].redis, request.app[SERVICES].settings, token) is RECORD:
        await _record(request, _event("message.opened", token, stored, _visit(request)))
    return web.Response(body=PIXEL, content_type="image/gif", headers=NO_STORE)


# What both click routes are: unauthenticated GETs answered with a redirect (or a 404).
_CLICK_ROUTE: dict[str, Any] = {
    "scope": None,
    "auth": False,
    "idempotent": False,
    "tag": "tracking",
    "status": 302,
    "responses": {404: "Unknown, altered or expired token, or no such link in the message"},
}


@routes.route(
    "GET",
    "/t/c/{token}/{index}",
    texts=("token", "index"),
    patterns={"token": TOKEN_PATTERN, "index": LINK_INDEX},
    summary="Click redirect to the message's link of that index; records message.clicked",
    **_CLICK_ROUTE,
)
async def click(request: web.Request) -> web.Response:
    token = _token(request, "o", OpenToken)
    link_index = int(request.match_info["index"])
    return await _click(request, ClickToken(token.workspace, token.message_id, token.recipient, link_index))


@routes.route(
    "GET",
    "/t/c/{token}",
    texts=("token",),
    patterns={"token": TOKEN_PATTERN},
    summary="Click redirect of a link issued before the recipient token served clicks (its index sealed in)",
    **_CLICK_ROUTE,
)
async def sealed_click(request: web.Request) -> web.Response:
    return await _click(request, _token(request, "c", ClickToken))


async def _click(request: web.Request, token: ClickToken) -> web.Response:
    stored = await _stored(request, token.workspace, token.message_id)
    if not 0 <= token.link_index < len(stored.meta.links):
        raise not_found(_BAD_TOKEN)
    url = stored.meta.links[token.link_index]
    if await admit_hit(request.app[SERVICES].redis, request.app[SERVICES].settings, token) is RECORD:
        await _record(request, _event("message.clicked", token, stored, {"url": url, **_visit(request)}))
    location = url.translate(_URL_WHITESPACE)  # what a browser would follow, and header-safe
    return web.Response(
        status=302, headers={**NO_STORE, "Location": location, "Referrer-Policy": "no-referrer"}
    )


@routes.route(
    "GET",
    "/t/u/{token}",
    texts=("token",),
    patterns={"token": TOKEN_PATTERN},
    scope=None,
    auth=False,
    idempotent=False,
    tag="tracking",
    summary="Unsubscribe page: a confirmation form (does not unsubscribe)",
    responses={404: "Unknown or altered token"},
)
async def unsubscribe_page(request: web.Request) -> web.Response:
    token = _token(request, "u", UnsubscribeToken)
    return _page(
        "Unsubscribe",
        f"<p>Stop emails like this one to <b>{html.escape(token.recipient)}</b>?</p>"
        f'<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        f'<button type="submit">Unsubscribe</button></form>',
    )


@routes.route(
    "POST",
    "/t/u/{token}",
    texts=("token",),
    patterns={"token": TOKEN_PATTERN},
    scope=None,
    auth=False,
    idempotent=False,
    tag="tracking",
    summary="RFC 8058 one-click unsubscribe (form body List-Unsubscribe=One-Click); 200, never a redirect",
    responses={
        404: "Unknown or altered token",
        415: "Not a form body",
        422: "The body lacks List-Unsubscribe=One-Click",
    },
)
async def unsubscribe(request: web.Request) -> web.Response:
    token = _token(request, "u", UnsubscribeToken)
    await _require_one_click(request)
    redis = request.app[SERVICES].redis
    # Campaign mail names the lists it was sent for (one id, or several joined by ","): the person is
    # unsubscribed from each, as a member (status `unsubscribed`) and by a list-scope suppression.
    lists = split_lists(token.list_id) if token.scope == "list" else []
    scope_values: list[str | None] = [*lists] or [None]
    await add_suppressions(
        redis,
        token.workspace,
        [
            SuppressionEntry(
                email=token.recipient,
                reason="unsubscribe",
                scope=token.scope,
                scope_value=scope_value,
                source="unsubscribe",
            )
            for scope_value in scope_values
        ],
    )
    subscribers = SubscriberStore(redis)
    subscriber_id = await subscribers.id_for(token.workspace, token.recipient.lower()) if lists else None
    for list_id in lists:
        if subscriber_id is not None:
            now_ms = int(datetime.now(UTC).timestamp() * 1000)
            await subscribers.set_status(token.workspace, subscriber_id, list_id, "unsubscribed", now_ms)
    stored = (await request.app[SERVICES].messages.get_many(token.workspace, [token.message_id]))[0]
    data = {"recipient": token.recipient, "scope": token.scope, "list_id": token.list_id}
    if stored is None:
        data["message_id"] = token.message_id
    await _record_once(request, token, _event("subscriber.unsubscribed", token, stored, data))
    return _page(
        "Unsubscribed", f"<p>{html.escape(token.recipient)} will get no more emails like this one.</p>"
    )


def _token(request: web.Request, kind: str, expected: type[T]) -> T:
    payload = tracking_for(request.app[SERVICES].settings).read(kind, request.match_info["token"])
    if not isinstance(payload, expected):
        raise not_found(_BAD_TOKEN)
    return payload


async def _stored(request: web.Request, workspace: str, message_id: str) -> StoredMessage:
    stored = (await request.app[SERVICES].messages.get_many(workspace, [message_id]))[0]
    if stored is None:
        raise not_found(_BAD_TOKEN)
    return stored


def _visit(request: web.Request) -> dict[str, Any]:
    agent = request.headers.get("User-Agent")
    agent = agent[:MAX_USER_AGENT] if agent else None
    ip = client_ip(request, getattr(request.app[SERVICES].settings, "trust_forwarded_for", False))
    return {"user_agent": agent, "ip": ip, "machine_open": is_machine_open(agent, ip)}


def _event(kind: str, token: TrackingPayload, stored: StoredMessage | None, data: dict[str, Any]) -> Event:
    """The event as the message's other events are reported, but under the token's recipient."""
    message = None
    if stored is not None:
        sent = stored.message
        message = EventMessage(
            id=sent.id,
            to=token.recipient,
            from_=sent.from_.email,
            provider=stored.provider,
            server=stored.server,
            tags=sent.tags,
            metadata=sent.metadata,
            campaign_id=sent.campaign_id,
        )
    return Event(
        id=new_id("evt"),
        type=kind,
        created_at=datetime.now(UTC),
        workspace=token.workspace,
        message=message,
        data=data,
    )


async def _record(request: web.Request, event: Event) -> None:
    await MessageLedger(request.app[SERVICES].redis).record_events([event])


async def _record_once(request: web.Request, token: UnsubscribeToken, event: Event) -> bool:
    """Record the unsubscribe event once per token, however often or concurrently it is posted."""
    redis = request.app[SERVICES].redis
    marker = keyspace.unsubscribe_recorded(
        token.workspace, token.message_id, token.scope, token.list_id, token.recipient
    )
    ledger = MessageLedger(redis)

    async def record_unless_recorded(pipe: Pipeline) -> bool:
        if await pipe.exists(marker):  # a concurrent POST of the same token recorded it
            return False
        # An archived message gets its hash back first (the WATCH on it then fails once, and the retry
        # finds it): the event goes into its timeline as into any message's.
        await ledger.archive.restore(token.workspace, [token.message_id])
        pipe.multi()
        pipe.set(marker, event.id, ex=UNSUBSCRIBE_RECORD_SECONDS)
        MessageLedger.append_events(pipe, [event])
        return True

    watched = [marker, *ledger.keys(token.workspace, [token.message_id])]
    return bool(await redis.transaction(record_unless_recorded, *watched, value_from_callable=True))


async def _require_one_click(request: web.Request) -> None:
    if request.content_type not in FORM_TYPES:
        raise ApiError("unsupported_media_type", f"Post the form body {ONE_CLICK} (RFC 8058)")
    form = await request.post()
    if "One-Click" not in form.getall("List-Unsubscribe", []):
        raise validation_error(
            "#/List-Unsubscribe", f"the body must contain {ONE_CLICK} (RFC 8058)", "one_click"
        )


def _page(title: str, body: str) -> web.Response:
    document = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
        f'<body style="font-family:sans-serif;max-width:32rem;margin:4rem auto">{body}</body></html>'
    )
    return web.Response(text=document, content_type="text/html", headers=PAGE_HEADERS)
