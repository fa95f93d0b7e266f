"""`POST /v1/events`: custom events (`order.completed`, ...) into the event stream (scope `send` or
`write:events`). One event or `{"events": [...]}` up to 1,000; all are valid or none is recorded."""

from __future__ import annotations

import asyncio
import weakref
from datetime import UTC, datetime

from aiohttp import web

from ingress.context import SERVICES, principal
from ingress.problems import ApiError, validation_error
from ingress.routing import RouteTable, json_response
from schemas.custom_events import (
    AcceptedEvent,
    AcceptedEvents,
    CustomEventsBody,
    ValidEvent,
    items,
    validate,
)
from schemas.events import Event
from schemas.ids import new_id
from schemas.problems import FieldError
from store.coalescer import Backpressure
from store.custom_events import CustomEventWriter

routes = RouteTable()
MAX_REPORTED_ERRORS = 100
YIELD_EVERY_BYTES = 64 * 1024  # of raw properties decoded between two turns of the event loop
# One writer per app: it coalesces the appends of concurrent requests.
_writers: weakref.WeakKeyDictionary[web.Application, CustomEventWriter] = weakref.WeakKeyDictionary()


@routes.route(
    "POST",
    "/v1/events",
    scope="send|write:events",
    body=CustomEventsBody,
    response=AcceptedEvents,
    status=202,
    summary="Record custom events (one, or `events`: up to 1,000); they feed analytics and segments",
    tag="events",
    responses={503: "Too many events are waiting to be written"},
)
async def record_events(request: web.Request, body: CustomEventsBody) -> web.Response:
    services = request.app[SERVICES]
    try:
        found, prefix = items(body)
    except ValueError as exc:
        raise validation_error("#", str(exc), "invalid_body") from None
    now = datetime.fromtimestamp(services.clock(), UTC)
    valid: list[ValidEvent] = []
    errors: list[FieldError] = []
    decoded = 0
    for index, item in enumerate(found):
        if decoded > YIELD_EVERY_BYTES:  # each event's properties decode in ≤ ~5 ms; the loop runs between
            decoded = 0
            await asyncio.sleep(0)
        decoded += len(item.properties)
        result = validate(item, prefix if prefix == "#" else f"{prefix}{index}", now)
        if isinstance(result, ValidEvent):
            valid.append(result)
        else:
            errors.extend(result)
    if errors:
        raise ApiError("validation_error", "Some events are invalid", errors=errors[:MAX_REPORTED_ERRORS])
    workspace = principal(request).workspace
    events = [_event(workspace, v) for v in valid]
    try:
        await _writer(request.app).append(events)
    except Backpressure:
        raise ApiError("unavailable", "Too many events waiting", headers={"Retry-After": "1"}) from None
    accepted = [AcceptedEvent(id=e.id, name=e.type, created_at=e.created_at) for e in events]
    return json_response(AcceptedEvents(data=accepted, accepted=len(accepted)), status=202)


def _event(workspace: str, valid: ValidEvent) -> Event:
    return Event(
        id=new_id("evt"),
        type=valid.name,
        created_at=valid.created_at.astimezone(UTC),
        workspace=workspace,
        data={"email": valid.email, "properties": valid.properties},
    )


def _writer(app: web.Application) -> CustomEventWriter:
    writer = _writers.get(app)
    if writer is None:
        writer = _writers[app] = CustomEventWriter(app[SERVICES].redis)
    return writer
