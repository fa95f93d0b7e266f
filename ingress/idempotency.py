"""Idempotency-Key handling that every POST and DELETE route gets for free (API.md, "Idempotency").

Scope is (API key, method, path, key): another key of the same workspace never sees a stored answer,
which may carry a secret shown once. The first request claims the key; a retry with the same body
gets the stored answer byte for byte with `Idempotent-Replayed: true`; a different body is refused
(422); a retry while the first is still running gets 409. Answers to requests that never began
executing (bad JSON, validation, auth, rate limits, 503) are not stored, so fixing the request works.
Sends need no more than this: every message also carries a per-message key (the header key, or
`{header key}#{index}` in a bulk; per API key like this record), checked inside the enqueue script, so a
retry that races a crash between the enqueue and the stored answer still sends nothing twice.
"""

from __future__ import annotations

import hashlib
import re

import msgspec
from aiohttp import web

from ingress import worker_process
from ingress.context import IDEMPOTENCY, PRINCIPAL, REQUEST_ID, SERVICES
from ingress.off_loop import HEAVY_BODY_BYTES
from ingress.problems import ApiError, error_response
from ingress.routing import route_spec
from store import keyspace
from store.idempotency import IdempotencyStore, StoredResponse

_KEY = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?$")
_QUOTED = re.compile(r'^"((?:[\x20-\x21\x23-\x5b\x5d-\x7e]|\\["\\]){1,255})"$')
NOT_STORED = {
    "invalid_json",
    "validation_error",
    "unsupported_media_type",
    "payload_too_large",
    "unavailable",
}
_REPLAYED_HEADERS = ("Content-Type", "Location")
_canonical = msgspec.json.Encoder(order="sorted")


class IdempotencyClaim(msgspec.Struct):
    store: IdempotencyStore
    key: str
    token: str


def parse_key(raw: str) -> str:
    """A key is 1-255 printable ASCII characters, bare or as an RFC 8941 quoted string."""
    if raw.startswith('"'):
        quoted = _QUOTED.match(raw)
        if quoted:
            return quoted.group(1).replace('\\"', '"').replace("\\\\", "\\")
    elif _KEY.match(raw):
        return raw
    raise ApiError("invalid_idempotency_key", "Idempotency-Key must be 1-255 printable ASCII characters")


def fingerprint(body: bytes) -> str:
    try:
        canonical = _canonical.encode(msgspec.json.decode(body)) if body else b""
    except msgspec.DecodeError:
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


@web.middleware
async def idempotency(request: web.Request, handler) -> web.StreamResponse:
    spec = route_spec(request)
    raw_key = request.headers.get("Idempotency-Key")
    if raw_key is None or spec is None or not spec.idempotent or request.method not in ("POST", "DELETE"):
        return await handler(request)
    key = parse_key(raw_key)
    principal = request[PRINCIPAL]
    store = request.app[SERVICES].idempotency
    record_key = keyspace.idempotency(
        principal.workspace, principal.key.id, request.method, request.path, key
    )
    body = await request.read()
    # A large body's canonical form and hash are C calls of tens of ms holding the GIL (issue #11): in the
    # worker process (ingress/worker_process.py).
    print_ = (
        await worker_process.run(fingerprint, body) if len(body) > HEAVY_BODY_BYTES else fingerprint(body)
    )
    if spec.own_idempotency:
        # The route's own script claims, writes and stores its answer in one round trip (an api trigger):
        # the handler takes this and says so (`taken`). What it refused before its script saw the key (a
        # malformed path id) is stored here as any route's answer would be.
        deferred = DeferredClaim(store, record_key, print_)
        request[IDEMPOTENCY] = deferred
        try:
            return await handler(request)
        except ApiError as exc:
            if deferred.taken or exc.code in NOT_STORED:
                raise
            failure = exc

        async def refuse(_: web.Request) -> web.StreamResponse:
            raise failure

        return await claim_and_run(request, deferred, refuse)
    return await _claim_and_run(request, handler, store, record_key, print_)


class DeferredClaim(msgspec.Struct):
    """An Idempotency-Key left to a route that declares `own_idempotency` (its script claims it)."""

    store: IdempotencyStore
    key: str
    fingerprint: str
    taken: bool = False  # set by the handler once its script saw the key: the middleware then stores nothing


async def claim_and_run(request: web.Request, deferred: DeferredClaim, handler) -> web.StreamResponse:
    """What the middleware does for every other route (claim, run, store the answer), for a deferred key
    the route's script does not take (an automation whose reentry rule needs the slower path)."""
    deferred.taken = True
    return await _claim_and_run(request, handler, deferred.store, deferred.key, deferred.fingerprint)


async def _claim_and_run(
    request: web.Request, handler, store: IdempotencyStore, record_key: str, print_: str
) -> web.StreamResponse:
    result = await store.claim(record_key, print_)
    if result.outcome == "mismatch":
        raise ApiError(
            "idempotency_key_reused", "This Idempotency-Key was used with a different request body"
        )
    if result.outcome == "running":
        raise ApiError(
            "idempotency_key_in_use",
            "A request with this Idempotency-Key is still running",
            headers={"Retry-After": "1"},
        )
    if result.outcome == "done":
        assert result.stored is not None, "a done claim carries the answer stored with it"
        return replay(result.stored)
    claim = IdempotencyClaim(store, record_key, result.token)
    request[IDEMPOTENCY] = claim
    return await _run_claimed(request, handler, claim)


async def _run_claimed(request: web.Request, handler, claim: IdempotencyClaim) -> web.StreamResponse:
    try:
        response = await handler(request)
    except ApiError as exc:
        if exc.code in NOT_STORED:
            await claim.store.release(claim.key, claim.token)
            raise
        response = error_response(exc, request[REQUEST_ID])
    except BaseException:
        # Nothing was answered, so the request may be retried as a new one once the claim is released.
        await claim.store.release(claim.key, claim.token)
        raise
    # Our handlers answer bytes; a streamed body (a Payload) could not be stored to replay.
    if isinstance(response, web.Response) and isinstance(response.body, (bytes, bytearray)):
        headers = {h: response.headers[h] for h in _REPLAYED_HEADERS if h in response.headers}
        await claim.store.complete(
            claim.key, claim.token, StoredResponse(response.status, bytes(response.body), headers)
        )
    return response


def replay(stored: StoredResponse) -> web.Response:
    headers = dict(stored.headers)
    content_type = headers.pop("Content-Type", "application/json")
    response = web.Response(status=stored.status, body=stored.body, headers=headers)
    response.headers["Content-Type"] = content_type
    response.headers["Idempotent-Replayed"] = "true"
    return response
