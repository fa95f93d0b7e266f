"""`/v1/messages`: a message's status and timeline, the list, and canceling scheduled sends."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from aiohttp import web

from ingress.context import SERVICES, principal
from ingress.pagination import decode_cursor, list_response
from ingress.problems import ApiError, not_found
from ingress.routing import RouteTable, json_response
from schemas.events import Event, EventMessage
from schemas.ids import new_id
from schemas.message_status import api_status
from schemas.send import (
    MessageEvent,
    MessageList,
    MessageListQuery,
    MessageStatus,
    MessageSummary,
    MessageView,
)
from store.ledger.listing import MessageFilter, MessageLister
from store.messages import MessageStore, StoredMessage, cancel_scheduled

routes = RouteTable()
_SCAN_CHUNK = 200
_SCAN_LIMIT = 5000


def view(stored: StoredMessage) -> MessageView:
    message = stored.message
    return MessageView(
        id=message.id,
        status=api_status(stored.status),
        created_at=stored.created_at,
        from_=message.from_.formatted(),
        to=[a.email for a in message.to],
        subject=message.subject,
        tags=message.tags,
        metadata=message.metadata,
        server=stored.server,
        provider=stored.provider,
        provider_message_id=stored.provider_message_id,
        attempts=stored.attempts,
        send_at=datetime.fromtimestamp(stored.meta.send_at_ms / 1000, UTC)
        if stored.meta.send_at_ms
        else None,
        campaign_id=message.campaign_id,
        # In the order recorded. Not re-sorted by time: providers stamp events in whole seconds (SendGrid),
        # which would put their events before our own `message.accepted`.
        events=[
            MessageEvent(id=e.id, type=e.type, created_at=e.created_at, data=e.data) for e in stored.events
        ],
    )


@routes.route(
    "GET",
    "/v1/messages/{id}",
    ids={"id": "msg"},
    scope="read:messages",
    response=MessageView,
    summary="A message's status, server, provider, attempts and ordered events",
    tag="messages",
)
async def get_message(request: web.Request) -> web.Response:
    workspace, message_id = principal(request).workspace, request.match_info["id"]
    stored = await MessageStore(request.app[SERVICES].redis).get(workspace, message_id)
    if stored is not None:
        return json_response(view(stored))
    # No longer held in Redis: rebuild what the analytics store remembers of it.
    from ingress.routes.analytics import reader_for

    try:
        events = await reader_for(request.app).message_events(workspace, message_id)
    except ApiError:
        events = []
    if not events:
        raise not_found("message")
    return json_response(view_from_events(message_id, events))


_STATUS_OF: dict[str, MessageStatus] = {
    "message.accepted": "queued",
    "message.scheduled": "scheduled",
    "message.sent": "sent",
    "message.delivered": "delivered",
    "message.deferred": "deferred",
    "message.bounced": "bounced",
    "message.complained": "complained",
    "message.failed": "failed",
    "message.suppressed": "suppressed",
    "message.canceled": "canceled",
}


def view_from_events(message_id: str, events: list[Event]) -> MessageView:
    ordered = sorted(events, key=lambda e: e.created_at)
    statuses = [_STATUS_OF[e.type] for e in ordered if e.type in _STATUS_OF]
    latest = next((e.message for e in reversed(ordered) if e.message and e.message.server), None)
    first = ordered[0].message
    return MessageView(
        id=message_id,
        status=statuses[-1] if statuses else "queued",
        created_at=ordered[0].created_at,
        from_=first.from_ if first else "",
        to=sorted({e.message.to for e in ordered if e.message and e.message.to}),
        subject="",
        tags=first.tags if first else [],
        metadata=first.metadata if first else {},
        server=latest.server if latest else None,
        provider=latest.provider if latest else None,
        provider_message_id=next(
            (e.data.get("provider_message_id") for e in ordered if e.type == "message.sent"), None
        ),
        attempts=sum(1 for e in ordered if e.type == "message.sent" or (e.type == "message.deferred")),
        send_at=None,
        campaign_id=first.campaign_id if first else None,
        events=[MessageEvent(id=e.id, type=e.type, created_at=e.created_at, data=e.data) for e in ordered],
    )


@routes.route(
    "GET",
    "/v1/messages",
    scope="read:messages",
    query=MessageListQuery,
    response=MessageList,
    summary="List messages, newest first, with filters",
    tag="messages",
)
async def list_messages(request: web.Request, query: MessageListQuery) -> web.Response:
    filters = {
        "status": query.status,
        "tag": query.tag,
        "campaign_id": query.campaign_id,
        "to": query.to,
        "from": query.from_.isoformat() if query.from_ else None,
        "until": query.until.isoformat() if query.until else None,
    }
    after = decode_cursor(query.cursor, filters)
    where = MessageFilter(
        status=query.status,
        tag=query.tag,
        campaign_id=query.campaign_id,
        to=query.to,
        from_ms=_millis(query.from_),
        until_ms=_millis(query.until),
    )
    lister = MessageLister(request.app[SERVICES].redis, chunk=_SCAN_CHUNK, scan_limit=_SCAN_LIMIT)
    page = await lister.page(principal(request).workspace, where, limit=query.limit, after=after)
    data = [
        MessageSummary(
            id=m.id,
            status=api_status(m.status),
            created_at=datetime.fromtimestamp(m.created_ms / 1000, UTC),
            to=m.to,
            subject=m.subject,
            tags=m.tags,
            server=m.server or None,
        )
        for m in page.messages
    ]
    return list_response(request, data, has_more=page.has_more, last_id=page.last_id, filters=filters)


def _millis(moment: datetime | None) -> int | None:
    return None if moment is None else math.ceil(moment.timestamp() * 1000)


@routes.route(
    "POST",
    "/v1/messages/{id}/cancel",
    ids={"id": "msg"},
    scope="send",
    response=MessageView,
    summary="Cancel a scheduled message",
    tag="messages",
    responses={409: "The message is not scheduled"},
)
async def cancel_message(request: web.Request) -> web.Response:
    services, workspace = request.app[SERVICES], principal(request).workspace
    store = MessageStore(services.redis)
    stored = await store.get(workspace, request.match_info["id"])
    if stored is None:
        raise not_found("message")
    message = stored.message
    event = Event(
        id=new_id("evt"),
        type="message.canceled",
        created_at=datetime.now(UTC),
        workspace=workspace,
        message=EventMessage(
            id=message.id,
            to=message.to[0].email if message.to else "",
            from_=message.from_.email,
            tags=message.tags,
            metadata=message.metadata,
        ),
    )
    result = await cancel_scheduled(
        services.redis, workspace, message.id, event, services.settings.message_retention_seconds
    )
    if result != "ok":
        raise ApiError("conflict", f"Only a scheduled message can be canceled; this one is {result}")
    canceled = await store.get(workspace, message.id)
    if canceled is None:  # expired in the moment since it was canceled
        raise not_found("message")
    return json_response(view(canceled))
