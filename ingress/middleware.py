"""The ingress's one aiohttp middleware: request ids, metrics and RFC 9457 problem bodies for every error,
around the route's own chain of request steps, composed once per route.

The steps, outermost first (each still its own function in its own module, and each sees the request
exactly as when they were separate aiohttp middlewares):
`body_deadline` → `audit` → `authenticate` → `rate_limit` → `admit_body` → `idempotency` → the handler.
A route's chain leaves out the steps that can do nothing for it, decided from its `RouteSpec` when the
route is first called: audit and authentication on a route without auth, idempotency on a route that
declares `idempotent=False`, everything but the body steps when no route matched (404/405). Issue #14:
seven nested aiohttp middlewares each re-read the route and re-entered a coroutine on every request.
"""

from __future__ import annotations

import functools
import logging
import time

from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ingress import audit, auth, body_admission, idempotency, rate_limit
from ingress.connection_limits import body_deadline
from ingress.context import REQUEST_ID, SERVICES
from ingress.problems import ApiError, error_response
from ingress.routing import Handler, RouteSpec
from schemas.ids import new_id

log = logging.getLogger("mailers.ingress")

_HTTP_STATUS_CODES = {
    400: "invalid_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


def steps(spec: RouteSpec | None) -> list[Handler]:
    """The request steps a route's requests take, outermost first (see the module's docstring)."""
    if spec is None:  # no route matched: nothing names a key, a scope or a stored answer
        return [body_deadline, body_admission.admit_body]
    chain: list[Handler] = [body_deadline]
    if spec.auth:
        chain += [audit.audit, auth.authenticate]
    chain += [rate_limit.rate_limit, body_admission.admit_body]
    if spec.idempotent:
        chain.append(idempotency.idempotency)
    return chain


def compose(spec: RouteSpec | None, handler: Handler) -> Handler:
    for step in reversed(steps(spec)):
        handler = functools.partial(step, handler=handler)
    return handler


def chain_for(handler: Handler) -> Handler:
    """The handler with its route's steps around it: composed on a route's first request and kept on the
    route's endpoint (one per app and route). aiohttp makes a new handler per request only for its system
    routes (404, 405), which have no spec and are composed afresh."""
    chain = getattr(handler, "request_chain", None)
    if chain is None:
        spec: RouteSpec | None = getattr(handler, "route_spec", None)
        chain = compose(spec, handler)
        if spec is not None:
            handler.request_chain = chain  # type: ignore[attr-defined]  # our endpoint function
    return chain


@web.middleware
async def problems_and_request_ids(request: web.Request, handler) -> web.StreamResponse:
    rid = new_id("req")
    request[REQUEST_ID] = rid
    started = time.perf_counter()
    try:
        response = await chain_for(handler)(request)
    except ApiError as exc:
        response = error_response(exc, rid)
    except web.HTTPException as exc:
        response = error_response(_from_http_exception(exc), rid)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        # Redis unreachable, or every pooled connection busy past MAILERS_REDIS_POOL_TIMEOUT_SECONDS.
        log.warning("redis unavailable: %s", exc, extra={"request_id": rid})
        detail = "The data store is busy or unreachable; retry shortly"
        unavailable = ApiError("unavailable", detail, headers={"Retry-After": "1"})
        response = error_response(unavailable, rid)
    except Exception:
        log.exception("unhandled error", extra={"request_id": rid})
        response = error_response(ApiError("internal_error", "Something went wrong on our side"), rid)
    if not response.prepared:
        response.headers["Request-Id"] = rid
    _observe(request, response.status, time.perf_counter() - started)
    return response


def _from_http_exception(exc: web.HTTPException) -> ApiError:
    code = _HTTP_STATUS_CODES.get(exc.status, "internal_error" if exc.status >= 500 else "invalid_json")
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    detail = {
        404: "No route matches this path",
        405: "This method is not allowed on this path",
        413: "The request body is too large",
    }.get(exc.status, exc.reason)
    return ApiError(code, detail, headers=headers, status=exc.status)


def _observe(request: web.Request, status: int, seconds: float) -> None:
    services = request.app.get(SERVICES)
    if services is None:
        return
    info = request.match_info
    route = info.route.resource.canonical if info.route.resource is not None else "unmatched"
    services.metrics.observe_request(request.method, route, status, seconds)
