"""`POST /v1/send` and `POST /v1/send/bulk` (scope `send`)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from actors.outbound.templating import render_sends
from ingress.audit import AUDITED, entry_bytes
from ingress.context import IDEMPOTENCY, REQUEST_ID, SERVICES, principal
from ingress.off_loop import HEAVY_ITEMS, run_heavy
from ingress.problems import ApiError
from ingress.routing import RouteTable, field_error, json_response
from ingress.send_service import Accepted, Outcome, accept, prepare_items, utc_now
from schemas.send import BulkAccepted, BulkEnvelope, BulkItem, SendAccepted, SendRequest
from store.templates import TemplateStore

routes = RouteTable()
MAX_BULK = 1000
_item_decoder = msgspec.json.Decoder(SendRequest)


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
)
async def send(request: web.Request, body: SendRequest) -> web.Response:
    caller, now = principal(request), utc_now()
    claim = request.get(IDEMPOTENCY)
    implicit = claim is not None and body.idempotency_key is None
    if implicit:
        # The header key also guards the message itself, so a retry racing a crash cannot send it twice.
        body = msgspec.structs.replace(body, idempotency_key=request.headers["Idempotency-Key"])
    templates = TemplateStore(request.app[SERVICES].redis)
    [rendered] = await render_sends(templates, caller.workspace, [body], ["#"], heavy=False)
    if isinstance(rendered, ApiError):
        raise rendered
    item = prepare_items([rendered], caller, now=now, prefixes=["#"])[0]
    if isinstance(item, ApiError):
        raise item
    if implicit:  # per API key, like the header's own record
        item = msgspec.structs.replace(item, item_key_owner=caller.key.id)
    audit = await entry_bytes(request, 202, item.message.id)
    outcome = (
        await accept(
            request.app[SERVICES], caller, [item], item_scope="send", prefixes=["#"], now=now, audit=audit
        )
    )[0]
    if not isinstance(outcome, Accepted):
        raise outcome.error
    request[AUDITED] = True
    return json_response(
        SendAccepted(id=outcome.id, status=outcome.status, created_at=outcome.created_at), status=202
    )


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
)
async def send_bulk(request: web.Request, body: BulkEnvelope) -> web.Response:
    if not 1 <= len(body.messages) <= MAX_BULK:
        raise ApiError(
            "validation_error",
            f"send between 1 and {MAX_BULK} messages",
            errors=[field_error(f"Expected 1 to {MAX_BULK} items, got {len(body.messages)}", "#/messages")],
        )
    caller, now = principal(request), utc_now()
    header_key = request.headers.get("Idempotency-Key") if request.get(IDEMPOTENCY) is not None else None
    heavy = len(body.messages) > HEAVY_ITEMS
    decoded, prefixes, implicit = await run_heavy(heavy, _decode_items, body.messages, header_key)
    templates = TemplateStore(request.app[SERVICES].redis)
    decoded = await render_sends(templates, caller.workspace, decoded, prefixes, heavy=heavy, run=run_heavy)
    valid = [d for d in decoded if isinstance(d, SendRequest)]
    prepared_valid = iter(
        await run_heavy(
            heavy,
            prepare_items,
            valid,
            caller,
            now=now,
            prefixes=[p for d, p in zip(decoded, prefixes, strict=True) if isinstance(d, SendRequest)],
        )
    )
    prepared = [next(prepared_valid) if isinstance(d, SendRequest) else d for d in decoded]
    prepared = [  # the keys derived from the header are per API key, like the header's own record
        msgspec.structs.replace(p, item_key_owner=caller.key.id)
        if i in implicit and not isinstance(p, ApiError)
        else p
        for i, p in enumerate(prepared)
    ]
    errors = [p for p in prepared if isinstance(p, ApiError)]
    if errors and body.validation == "strict":
        refusal = next((e for e in errors if e.code != "validation_error"), None)
        if refusal is not None:
            raise refusal
        raise ApiError(
            "validation_error",
            f"{len(errors)} of {len(prepared)} messages are invalid; none was sent",
            errors=[e for err in errors for e in err.errors] or None,
        )
    ready = [(i, p) for i, p in enumerate(prepared) if not isinstance(p, ApiError)]
    audit = await entry_bytes(request, 202, None) if ready else None
    outcomes = (
        await accept(
            request.app[SERVICES],
            caller,
            [p for _, p in ready],
            item_scope="item",
            prefixes=[prefixes[i] for i, _ in ready],
            now=now,
            audit=audit,
        )
        if ready
        else []
    )
    if any(isinstance(o, Accepted) for o in outcomes):
        request[AUDITED] = True
    results: dict[int, Outcome | ApiError] = dict(zip([i for i, _ in ready], outcomes, strict=True))
    results.update({i: p for i, p in enumerate(prepared) if isinstance(p, ApiError)})
    return json_response(_bulk_answer(results, request[REQUEST_ID]), status=202)


def _decode_items(
    raws: list[msgspec.Raw], header_key: str | None
) -> tuple[list[SendRequest | ApiError], list[str], set[int]]:
    """The items, their error prefixes, and the indices given an implicit key `{header}#{index}`."""
    decoded: list[SendRequest | ApiError] = []
    implicit: set[int] = set()
    prefixes = [f"#/messages/{i}" for i in range(len(raws))]
    for index, raw in enumerate(raws):
        try:
            item = _item_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            decoded.append(
                ApiError(
                    "validation_error",
                    "The message is invalid",
                    errors=[field_error(str(exc), prefixes[index])],
                )
            )
            continue
        if item.idempotency_key is None and header_key is not None:
            item = msgspec.structs.replace(item, idempotency_key=f"{header_key}#{index}")
            implicit.add(index)
        decoded.append(item)
    return decoded, prefixes, implicit


def _bulk_answer(results: dict[int, Outcome | ApiError], request_id: str) -> BulkAccepted:
    data, accepted = [], 0
    for index in sorted(results):
        outcome = results[index]
        if isinstance(outcome, Accepted):
            accepted += 1
            data.append(BulkItem(index=index, id=outcome.id, status=outcome.status))
        else:
            error = outcome if isinstance(outcome, ApiError) else outcome.error
            data.append(BulkItem(index=index, error=msgspec.to_builtins(error.problem(request_id))))
    return BulkAccepted(data=data, accepted=accepted, rejected=len(data) - accepted)
