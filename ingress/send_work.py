"""A send request's own work (`/v1/send`, `/v1/send/bulk`), written once for the two places it runs:
inline on the event loop for a light request, and whole in the ingress's worker process for a heavy one
(ingress/worker_process.py, through `send_service.in_worker`).

A heavy request crosses to the worker process once, as the body's bytes (a pickled `bytes` is one
memcpy), with what only the loop knows (`SendCall`: the key, the idempotency header, the request's
audit entry); the process decodes, validates, renders, routes, tracks and enqueues it and answers the
finished 202 body's bytes, or the request's refusal. The loop keeps auth, rate limits, the idempotency
claim and the routing snapshot. Before, a bulk crossed as 1,000 validated items encoded one by one on
the ingress's worker thread (msgpack), decoded again in the process (~19 µs each, a fifth of its time),
and came back as 1,000 pickled outcomes for the loop to turn into the answer: a sequential client's bulk
throughput fell from 6,058-6,645 to 4,152-4,395 msgs/s. Sends with a template cost one more trip: the
process answers the versions it needs (`Answer.templates`), the loop reads them from Redis
(store/templates.py owns them) and asks again with them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime

import msgspec

from actors.outbound.compose import Accepted, Outcome, Rejected, build, settle
from actors.outbound.templating import TemplateRef, render_found, template_refs
from actors.outbound.tracking import tracking_for
from actors.outbound.validation import PreparedSend, prepare_send
from ingress.auth import require_sending_domain
from ingress.context import Principal
from ingress.off_loop import HEAVY_ITEMS
from ingress.problems import ApiError
from ingress.routing import decode_json, field_error
from schemas.ids import new_id
from schemas.problems import FieldError
from schemas.send import BulkAccepted, BulkEnvelope, BulkItem, SendAccepted, SendRequest
from schemas.settings import Settings
from schemas.templates import TemplateVersion
from store.ledger.blocking import BlockingLedger
from store.workspace_routing import RoutingSnapshot

MAX_BULK = 1000
# A body larger than this goes to the worker process undecoded. At most this many characters of content
# can be in it (a JSON string's characters never outnumber its bytes), so a light request is also under
# off_loop's content and tracked-HTML thresholds (only a template's render can grow it past them).
HEAVY_RAW_BYTES = 32 * 1024

_single_decoder = msgspec.json.Decoder(SendRequest)
_bulk_decoder = msgspec.json.Decoder(BulkEnvelope)
_encoder = msgspec.json.Encoder()


class SendCall(msgspec.Struct, frozen=True):
    """What the event loop knows of a request and the worker process needs."""

    principal: Principal
    header_key: str | None  # the Idempotency-Key header, when the idempotency middleware claimed it
    now: datetime
    request_id: str
    audit: bytes | None  # the request's audit entry, written with its messages
    message_id: str | None = None  # `/v1/send`: the id its audit entry names


class Refusal(msgspec.Struct, frozen=True):
    """An `ApiError` as it crosses the process boundary (an `ApiError` does not pickle: its constructor
    takes the code first, its `args` hold the detail)."""

    code: str
    detail: str
    errors: list[FieldError]
    headers: dict[str, str]
    status: int

    @classmethod
    def of(cls, error: ApiError) -> Refusal:
        return cls(error.code, error.detail, error.errors, error.headers, error.status)

    def error(self) -> ApiError:
        return ApiError(self.code, self.detail, errors=self.errors, headers=self.headers, status=self.status)


class Answer(msgspec.Struct):
    """The worker process's answer to a request: the 202's body, the refusal, or the templates it needs."""

    body: bytes = b""
    accepted: int = 0  # messages accepted (the request's audit entry was written with them)
    refusal: Refusal | None = None
    templates: list[TemplateRef] | None = None  # read these and ask again with them


Versions = dict[TemplateRef, TemplateVersion | None]


# The steps, shared by both places.


def decode_single(raw: bytes) -> SendRequest:
    request = decode_json(raw, _single_decoder)
    assert isinstance(request, SendRequest)
    return request


def decode_bulk(raw: bytes) -> BulkEnvelope:
    envelope = decode_json(raw, _bulk_decoder)
    assert isinstance(envelope, BulkEnvelope)
    if not 1 <= len(envelope.messages) <= MAX_BULK:
        raise ApiError(
            "validation_error",
            f"send between 1 and {MAX_BULK} messages",
            errors=[
                field_error(f"Expected 1 to {MAX_BULK} items, got {len(envelope.messages)}", "#/messages")
            ],
        )
    return envelope


def is_heavy(raw: bytes, envelope: BulkEnvelope | None = None) -> bool:
    """Whether a request goes to the worker process: a large body, or a bulk of many messages."""
    return len(raw) > HEAVY_RAW_BYTES or (envelope is not None and len(envelope.messages) > HEAVY_ITEMS)


def single_item(request: SendRequest, header_key: str | None) -> tuple[SendRequest, bool]:
    """The request, and whether it took the header's key: the header key also guards the message itself,
    so a retry racing a crash cannot send it twice (then the message's key is per API key, like the
    header's own record: `implicit_owner`)."""
    if header_key is not None and request.idempotency_key is None:
        return msgspec.structs.replace(request, idempotency_key=header_key), True
    return request, False


def implicit_owner(item: PreparedSend, principal: Principal) -> PreparedSend:
    return msgspec.structs.replace(item, item_key_owner=principal.key.id)


class BulkItems(msgspec.Struct):
    decoded: list[SendRequest | ApiError]
    prefixes: list[str]
    implicit: set[int]  # the indices given an implicit key `{header}#{index}` (per API key)


def bulk_items(envelope: BulkEnvelope, header_key: str | None) -> BulkItems:
    decoded: list[SendRequest | ApiError] = []
    implicit: set[int] = set()
    prefixes = [f"#/messages/{i}" for i in range(len(envelope.messages))]
    for index, raw in enumerate(envelope.messages):
        try:
            item = _single_decoder.decode(raw)
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
    return BulkItems(decoded, prefixes, implicit)


def prepare_items(
    requests: Sequence[SendRequest],
    principal: Principal,
    *,
    now: datetime,
    prefixes: Sequence[str],
    message_ids: Sequence[str] | None = None,
) -> list[PreparedSend | ApiError]:
    prepared: list[PreparedSend | ApiError] = []
    for index, (request, prefix) in enumerate(zip(requests, prefixes, strict=True)):
        try:
            item = prepare_send(
                request,
                workspace=principal.workspace,
                message_id=message_ids[index] if message_ids is not None else new_id("msg"),
                now=now,
                prefix=prefix,
            )
            require_sending_domain(principal, item.message.sending_domain)
            prepared.append(item)
        except ApiError as exc:
            prepared.append(exc)
    return prepared


def prepare_bulk(
    items: BulkItems, principal: Principal, *, now: datetime, strict: bool
) -> list[PreparedSend | ApiError]:
    """Every item validated; in strict mode any invalid item refuses the request (raised)."""
    valid = [d for d in items.decoded if isinstance(d, SendRequest)]
    valid_prefixes = [
        p for d, p in zip(items.decoded, items.prefixes, strict=True) if isinstance(d, SendRequest)
    ]
    prepared_valid = iter(prepare_items(valid, principal, now=now, prefixes=valid_prefixes))
    prepared = [next(prepared_valid) if isinstance(d, SendRequest) else d for d in items.decoded]
    prepared = [  # the keys derived from the header are per API key, like the header's own record
        implicit_owner(p, principal) if i in items.implicit and not isinstance(p, ApiError) else p
        for i, p in enumerate(prepared)
    ]
    errors = [p for p in prepared if isinstance(p, ApiError)]
    if errors and strict:
        refusal = next((e for e in errors if e.code != "validation_error"), None)
        if refusal is not None:
            raise refusal
        raise ApiError(
            "validation_error",
            f"{len(errors)} of {len(prepared)} messages are invalid; none was sent",
            errors=[e for err in errors for e in err.errors] or None,
        )
    return prepared


def bulk_answer(
    prepared: Sequence[PreparedSend | ApiError], outcomes: Sequence[Outcome], request_id: str
) -> bytes:
    """The 202's body: one entry per item, in order (`outcomes`: the valid items', in order)."""
    data, accepted = [], 0
    done = iter(outcomes)
    for index, item in enumerate(prepared):
        outcome = item if isinstance(item, ApiError) else next(done)
        if isinstance(outcome, Accepted):
            accepted += 1
            data.append(BulkItem(index=index, id=outcome.id, status=outcome.status))
        else:
            error = outcome if isinstance(outcome, ApiError) else outcome.error
            data.append(BulkItem(index=index, error=msgspec.to_builtins(error.problem(request_id))))
    return _encoder.encode(BulkAccepted(data=data, accepted=accepted, rejected=len(data) - accepted))


def single_answer(outcome: Accepted) -> bytes:
    return _encoder.encode(SendAccepted(id=outcome.id, status=outcome.status, created_at=outcome.created_at))


# In the worker process: each request whole (see the module's doc). Arguments and answers are pickled.

Enqueue = Callable[..., list[Outcome]]  # `enqueue_here` with the process's settings, Redis and snapshot
Work = Callable[[bytes, SendCall, Versions | None, Enqueue], Answer]  # `bulk` or `single`


def handle(
    work: Work,
    settings: Settings,
    redis_url: str,
    raw: bytes,
    snapshot: RoutingSnapshot,
    call: SendCall,
    versions: Versions | None,
) -> Answer:
    """`work` (`bulk` or `single`) for one request; its refusal, if any, as the answer."""
    try:
        return work(raw, call, versions, functools.partial(enqueue_here, settings, redis_url, snapshot))
    except ApiError as exc:
        return Answer(refusal=Refusal.of(exc))


def bulk(raw: bytes, call: SendCall, versions: Versions | None, enqueue: Enqueue) -> Answer:
    envelope = decode_bulk(raw)
    items = bulk_items(envelope, call.header_key)
    needed = template_refs(items.decoded)
    if needed and versions is None:
        return Answer(templates=needed)
    if needed:
        items.decoded = render_found(items.decoded, items.prefixes, versions or {})
    prepared = prepare_bulk(items, call.principal, now=call.now, strict=envelope.validation == "strict")
    ready = [(i, p) for i, p in enumerate(prepared) if not isinstance(p, ApiError)]
    outcomes = (
        enqueue(
            [p for _, p in ready],
            now=call.now,
            prefixes=[items.prefixes[i] for i, _ in ready],
            scope="item",
            audit=call.audit,
        )
        if ready
        else []
    )
    accepted = sum(isinstance(o, Accepted) for o in outcomes)
    return Answer(body=bulk_answer(prepared, outcomes, call.request_id), accepted=accepted)


def single(raw: bytes, call: SendCall, versions: Versions | None, enqueue: Enqueue) -> Answer:
    assert call.message_id is not None, "a single send's audit entry names its message"
    request, implicit = single_item(decode_single(raw), call.header_key)
    needed = template_refs([request])
    if needed and versions is None:
        return Answer(templates=needed)
    if needed:
        [rendered] = render_found([request], ["#"], versions or {})
        if isinstance(rendered, ApiError):
            raise rendered
        request = rendered
    [item] = prepare_items(
        [request], call.principal, now=call.now, prefixes=["#"], message_ids=[call.message_id]
    )
    if isinstance(item, ApiError):
        raise item
    if implicit:
        item = implicit_owner(item, call.principal)
    [outcome] = enqueue([item], now=call.now, prefixes=["#"], scope="send", audit=call.audit)
    if not isinstance(outcome, Accepted):
        raise outcome.error
    return Answer(body=single_answer(outcome), accepted=1)


def enqueue_here(
    settings: Settings,
    redis_url: str,
    snapshot: RoutingSnapshot,
    items: Sequence[PreparedSend],
    *,
    now: datetime,
    prefixes: Sequence[str],
    scope: str,
    audit: bytes | None,
) -> list[Outcome]:
    """compose.accept, blocking: routed, tracked and enqueued from this process, through
    store/ledger/blocking.py's client. 202 still means durable: the request is answered once this
    process's enqueue script has returned."""
    outcomes, batch = build(
        items, snapshot, tracking_for(settings), now=now, prefixes=prefixes, scope=scope, audit=audit
    )
    ledger = _ledger(redis_url, settings.idempotency_retention_seconds)
    prior_ids = ledger.enqueue([new for _, new in batch]) if batch else []
    return settle(outcomes, batch, prior_ids, now=now)


# A light request whose items grew heavy (a template rendered into a large body) on the loop: its items
# cross to the worker process as msgpack, one by one (pickled whole, 1,000 messages were one C call of
# ~20 ms holding the GIL; as msgpack, one of ~10 µs each).

_item_encoder = msgspec.msgpack.Encoder()
_item_decoder = msgspec.msgpack.Decoder(PreparedSend)


def pack_items(items: Sequence[PreparedSend]) -> list[bytes]:
    return [_item_encoder.encode(item) for item in items]


def accept_packed(
    settings: Settings,
    redis_url: str,
    packed: Sequence[bytes],
    snapshot: RoutingSnapshot,
    *,
    now: datetime,
    prefixes: Sequence[str],
    scope: str,
    audit: bytes | None,
) -> list[Accepted | Refusal]:
    items = [_item_decoder.decode(item) for item in packed]
    outcomes = enqueue_here(
        settings, redis_url, snapshot, items, now=now, prefixes=prefixes, scope=scope, audit=audit
    )
    return [o if isinstance(o, Accepted) else Refusal.of(o.error) for o in outcomes]


def unpacked(answers: Sequence[Accepted | Refusal]) -> list[Outcome]:
    """`accept_packed`'s answers as the send path's outcomes, in the ingress."""
    return [a if isinstance(a, Accepted) else Rejected(a.error()) for a in answers]


_ledgers: dict[tuple[str, int], BlockingLedger] = {}


def _ledger(url: str, retention: int) -> BlockingLedger:
    ledger = _ledgers.get((url, retention))
    if ledger is None:
        ledger = _ledgers[(url, retention)] = BlockingLedger(
            url, item_retention_seconds=retention, connections=1
        )
    return ledger
