"""Bearer-key authentication and scope checks, decided before the body is read."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

from aiohttp import web

from ingress.context import PRINCIPAL, SERVICES, Principal
from ingress.problems import ApiError
from ingress.routing import route_spec
from schemas.api_keys import ApiKeyRecord, grants
from store.api_keys import hash_secret

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="mailers"'}


@web.middleware
async def authenticate(request: web.Request, handler) -> web.StreamResponse:
    spec = route_spec(request)
    if spec is None or not spec.auth:
        return await handler(request)
    record = await _key_from_header(request)
    principal = _principal(record)
    request[PRINCIPAL] = principal
    # `a|b`: either scope will do (custom events take `send` or `write:events`).
    if spec.scope is not None and not any(grants(principal.scopes, s) for s in spec.scope.split("|")):
        raise ApiError("forbidden", f"This key lacks the `{spec.scope}` scope")
    request.app[SERVICES].key_usage(record.id)
    return await handler(request)


async def _key_from_header(request: web.Request) -> ApiKeyRecord:
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError("unauthorized", "Send an API key as `Authorization: Bearer <key>`", headers=_CHALLENGE)
    secret = secret.strip()
    digest = key_digest(secret)
    record = await request.app[SERVICES].key_cache.lookup(digest)
    if (
        record is None
        or not hmac.compare_digest(record.hash, digest)
        or not usable(record, datetime.fromtimestamp(request.app[SERVICES].clock(), UTC))
    ):
        raise ApiError("unauthorized", "The API key is unknown, expired or revoked", headers=_CHALLENGE)
    remember_digest(secret, digest)
    return record


# The Principal of a cached key record, made once per record (the key cache hands out the same record
# object until it re-reads the key): held with its record, so an id() is never taken for another's.
_principals: dict[int, tuple[ApiKeyRecord, Principal]] = {}


def _principal(record: ApiKeyRecord) -> Principal:
    found = _principals.get(id(record))
    if found is not None and found[0] is record:
        return found[1]
    if len(_principals) >= _MAX_DIGESTS:
        _principals.clear()
    principal = Principal(key=record, scopes=frozenset(record.scopes))
    _principals[id(record)] = (record, principal)
    return principal


_digests: dict[str, str] = {}
_MAX_DIGESTS = 10_000


def key_digest(secret: str) -> str:
    """`hash_secret`, remembered for the secrets of valid keys: SHA-256 through OpenSSL 3 costs a provider
    lookup per call, ~6% of the ingress's CPU at 500 req/s (issue #14), for the same few keys every time.
    Only a secret that authenticated is remembered (`remember_digest`): wrong ones are hashed every time
    and never kept, so guessing keys neither fills the table nor leaves guesses in memory."""
    return _digests.get(secret) or hash_secret(secret)


def remember_digest(secret: str, digest: str) -> None:
    """The digest of a secret that just authenticated. The table holds what the key cache holds anyway (a
    key's digest) and is emptied when full."""
    if secret not in _digests:
        if len(_digests) >= _MAX_DIGESTS:
            _digests.clear()
        _digests[secret] = digest


def usable(record: ApiKeyRecord, now: datetime) -> bool:
    if record.state == "revoked":
        return False
    if record.expires_at is not None and record.expires_at <= now:
        return False
    return not (
        record.state == "rotating" and record.rotating_until is not None and record.rotating_until <= now
    )


def require_sending_domain(principal: Principal, domain: str) -> None:
    """A key restricted to sending domains may only send from those (and their subdomains)."""
    allowed = principal.key.domains
    domain = domain.lower()
    if allowed and not any(domain == d or domain.endswith("." + d) for d in allowed):
        raise ApiError("forbidden", f"This key may not send from {domain}")
