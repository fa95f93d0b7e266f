"""Outermost middleware: request ids, metrics, and RFC 9457 problem bodies for every error."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ingress.context import REQUEST_ID, SERVICES
from ingress.problems import ApiError, error_response
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


@web.middleware
async def problems_and_request_ids(request: web.Request, handler) -> web.StreamResponse:
    rid = new_id("req")
    request[REQUEST_ID] = rid
    started = time.perf_counter()
    try:
        response = await handler(request)
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
