"""`POST /v1/send` and `POST /v1/send/bulk` (scope `send`).

A light request (a body up to `send_work.HEAVY_RAW_BYTES`, a bulk of up to `off_loop.HEAVY_ITEMS`) runs on
the event loop; a heavy one is handed whole, as its body's bytes, to the worker process
(ingress/send_work.py), and its answer comes back finished.
"""

from __future__ import annotations

from aiohttp import web

from actors.outbound.templating import render_sends
from ingress import send_work
from ingress.audit import AUDITED, entry_bytes
from ingress.context import IDEMPOTENCY, REQUEST_ID, SERVICES, principal
from ingress.problems import ApiError
from ingress.routing import RouteTable
from ingress.send_service import Accepted, accept, in_worker, utc_now
from ingress.send_work import SendCall, bulk_answer, bulk_items, prepare_bulk, prepare_items, single_item
from schemas.ids import new_id
from schemas.send import BulkAccepted, BulkEnvelope, SendAccepted, SendRequest
from store.templates import TemplateStore

routes = RouteTable()
MAX_BULK = send_work.MAX_BULK


@routes.route(
    "POST",
    "/v1/send",
    scope="send",
    body=SendRequest,
    response=SendAccepted,
    status=202,
    summary="Send one message; 202 means it is durably queued",
    tag="sending",
    responses={403: "The key may not send from this domain"},
    max_body=0,
    raw_body=True,
)
async def send(request: web.Request, body: bytes) -> web.Response:
    caller, now = principal(request), utc_now()
    header_key = _header_key(request)
    if send_work.is_heavy(body):
        message_id = new_id("msg")
        call = SendCall(
            caller,
            header_key,
            now,
            request[REQUEST_ID],
            await entry_bytes(request, 202, message_id),
            message_id,
        )
        return _answered(request, await in_worker(request.app[SERVICES], send_work.single, body, call))
    decoded, implicit = single_item(send_work.decode_single(body), header_key)
    templates = TemplateStore(request.app[SERVICES].redis)
    [rendered] = await render_sends(templates, caller.workspace, [decoded], ["#"], heavy=False)
    if isinstance(rendered, ApiError):
        raise rendered
    item = prepare_items([rendered], caller, now=now, prefixes=["#"])[0]
    if isinstance(item, ApiError):
        raise item
    if implicit:  # per API key, like the header's own record
        item = send_work.implicit_owner(item, caller)
    audit = await entry_bytes(request, 202, item.message.id)
    outcome = (
        await accept(
            request.app[SERVICES], caller, [item], item_scope="send", prefixes=["#"], now=now, audit=audit
        )
    )[0]
    if not isinstance(outcome, Accepted):
        raise outcome.error
    request[AUDITED] = True
    return _json(send_work.single_answer(outcome))


@routes.route(
    "POST",
    "/v1/send/bulk",
    scope="send",
    body=BulkEnvelope,
    response=BulkAccepted,
    status=202,
    summary="Send up to 1,000 messages in one request",
    tag="sending",
    max_body=0,
    heavy=True,
    raw_body=True,
)
async def send_bulk(request: web.Request, body: bytes) -> web.Response:
    caller, now = principal(request), utc_now()
    header_key = _header_key(request)
    # A large body is not decoded here at all; a small one's envelope (its items stay raw) costs µs.
    envelope = None if send_work.is_heavy(body) else send_work.decode_bulk(body)
    if envelope is None or send_work.is_heavy(body, envelope):
        call = SendCall(caller, header_key, now, request[REQUEST_ID], await entry_bytes(request, 202, None))
        return _answered(request, await in_worker(request.app[SERVICES], send_work.bulk, body, call))
    items = bulk_items(envelope, header_key)
    templates = TemplateStore(request.app[SERVICES].redis)
    items.decoded = await render_sends(
        templates, caller.workspace, items.decoded, items.prefixes, heavy=False
    )
    prepared = prepare_bulk(items, caller, now=now, strict=envelope.validation == "strict")
    ready = [(i, p) for i, p in enumerate(prepared) if not isinstance(p, ApiError)]
    audit = await entry_bytes(request, 202, None) if ready else None
    outcomes = (
        await accept(
            request.app[SERVICES],
            caller,
            [p for _, p in ready],
            item_scope="item",
            prefixes=[items.prefixes[i] for i, _ in ready],
            now=now,
            audit=audit,
        )
        if ready
        else []
    )
    if any(isinstance(o, Accepted) for o in outcomes):
        request[AUDITED] = True
    return _json(bulk_answer(prepared, outcomes, request[REQUEST_ID]))


def _header_key(request: web.Request) -> str | None:
    """The Idempotency-Key header, when the idempotency middleware claimed it for this request."""
    return request.headers.get("Idempotency-Key") if request.get(IDEMPOTENCY) is not None else None


def _answered(request: web.Request, answer: send_work.Answer) -> web.Response:
    if answer.accepted:  # the request's audit entry was written with its messages
        request[AUDITED] = True
    return _json(answer.body)


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, status=202, content_type="application/json")
