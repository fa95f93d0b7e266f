"""Routes declared once: method, path, scope and schemas feed aiohttp routing, auth and OpenAPI alike."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from ingress import worker_process
from ingress.off_loop import HEAVY_BODY_BYTES
from ingress.problems import ApiError, not_found
from schemas.ids import PREFIXES, is_id
from schemas.problems import FieldError, pointer_from_location

Handler = Callable[..., Awaitable[web.StreamResponse]]

_json_encoder = msgspec.json.Encoder()
_FIELD = re.compile(r"field `([^`]+)`")
_PATH_PARAM = re.compile(r"\{(\w+)\}")


# The body cap of routes that take a definition (a segment filter, a server config, an automation): none
# needs more, and the cap also bounds the cost of decoding their free-form JSON (issue #11).
DEFINITION_MAX_BODY = 64 * 1024


class RouteSpec(msgspec.Struct, kw_only=True):
    method: str
    path: str
    handler: Handler
    scope: str | None
    summary: str
    tag: str
    body: Any = None
    query: Any = None
    response: Any = None
    status: int = 200
    auth: bool = True
    idempotent: bool = True
    responses: dict[int, str] = {}
    # The largest body this route reads (ingress/body_admission.py); 0: MAILERS_MAX_BODY_BYTES.
    max_body: int = 1024 * 1024
    heavy: bool = False  # every request is heavy work (a bulk): counted against the key's heavy slots
    # The handler gets the body's bytes (JSON, checked by content type only) and decodes them itself, e.g.
    # in the worker process (ingress/send_work.py); `body` still names its type for OpenAPI.
    raw_body: bool = False
    # The handler streams `request.content` (a file of any size): capped by MAILERS_MAX_IMPORT_BYTES while
    # read instead of `max_body`, not charged to the byte budget, holding a heavy slot (body_admission.py).
    streamed: bool = False
    # Every path parameter is declared: `ids` maps one to its id kind (`{"id": "msg"}`), checked by the
    # router before the handler runs (404 otherwise, so no unchecked text reaches a Redis key);
    # `texts` names the others (an email, a token, a provider name), which their handler validates.
    ids: dict[str, str] = {}
    texts: tuple[str, ...] = ()
    # A text parameter's pattern (a regular expression its whole value must match): checked by the router
    # (404 otherwise) and stated in the OpenAPI document.
    patterns: dict[str, str] = {}
    address_limit: bool = True  # a route without auth is rate-limited per client address unless False
    # The handler's own Redis script claims the Idempotency-Key, writes and stores the answer in one round
    # trip (ingress/idempotency.py leaves it a `DeferredClaim`); the semantics are the middleware's.
    own_idempotency: bool = False

    def __post_init__(self) -> None:
        params = set(_PATH_PARAM.findall(self.path))
        if params != set(self.ids) | set(self.texts) or set(self.ids) & set(self.texts):
            raise ValueError(f"{self.method} {self.path}: declare each path parameter in ids or texts")
        unknown = set(self.ids.values()) - PREFIXES
        if unknown:
            raise ValueError(f"{self.method} {self.path}: unknown id kinds {sorted(unknown)}")
        if not set(self.patterns) <= set(self.texts):
            raise ValueError(f"{self.method} {self.path}: a pattern is for a parameter declared in texts")


class RouteTable:
    def __init__(self) -> None:
        self.specs: list[RouteSpec] = []

    def route(self, method: str, path: str, *, scope: str | None, summary: str, tag: str, **options: Any):
        def register(fn: Handler) -> Handler:
            spec = RouteSpec(
                method=method, path=path, handler=fn, scope=scope, summary=summary, tag=tag, **options
            )
            self.specs.append(spec)
            return fn

        return register

    def add_to(self, app: web.Application) -> None:
        for spec in self.specs:
            app.router.add_route(spec.method, spec.path, _endpoint(spec))


def route_spec(request: web.Request) -> RouteSpec | None:
    return getattr(request.match_info.handler, "route_spec", None)


def _endpoint(spec: RouteSpec) -> Handler:
    decoder = msgspec.json.Decoder(spec.body) if spec.body is not None else None
    patterns = {name: re.compile(pattern) for name, pattern in spec.patterns.items()}

    async def endpoint(request: web.Request) -> web.StreamResponse:
        check_path_ids(request, spec.ids)
        for name, pattern in patterns.items():
            if pattern.fullmatch(request.match_info[name]) is None:
                raise not_found(f"{name} (it must match {pattern.pattern})")
        kwargs: dict[str, Any] = {}
        if spec.raw_body:
            kwargs["body"] = await read_json(request)
        elif decoder is not None:
            kwargs["body"] = await decode_body(request, decoder, spec.body)
        if spec.query is not None:
            kwargs["query"] = decode_query(request, spec.query)
        return await spec.handler(request, **kwargs)

    # The spec rides on the handler aiohttp matches, for `route_spec`.
    endpoint.route_spec = spec  # type: ignore[attr-defined]  # a function declares no attributes
    return endpoint


def check_path_ids(request: web.Request, ids: dict[str, str]) -> None:
    """A path id not of its declared kind and format names nothing we hold: 404 before any key is built."""
    for name, kind in ids.items():
        if not is_id(request.match_info[name], kind):
            raise not_found(f"{kind}_… id")


async def read_json(request: web.Request) -> bytes:
    if request.content_type != "application/json":
        raise ApiError("unsupported_media_type", "Send the body as application/json")
    return await request.read()


async def decode_body(request: web.Request, decoder: msgspec.json.Decoder, body_type: Any) -> Any:
    """A body over HEAVY_BODY_BYTES is decoded in the worker process (ingress/worker_process.py): one C
    call of up to ~130 ms for 9 MB, holding the GIL, whatever thread made it."""
    raw = await read_json(request)
    if len(raw) > HEAVY_BODY_BYTES:
        decoded = await worker_process.run(worker_process.decode, body_type, raw)
        if decoded.invalid is not None:
            raise invalid_body(decoded.invalid)
        if decoded.not_json is not None:
            raise not_json(decoded.not_json)
        return decoded.value
    return decode_json(raw, decoder)


def decode_json(raw: bytes, decoder: msgspec.json.Decoder) -> Any:
    """The body decoded, or the problem a client gets for it (422 with its pointer, or 400)."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise invalid_body(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise not_json(str(exc)) from None


def invalid_body(message: str) -> ApiError:
    return ApiError("validation_error", "The request body is invalid", errors=[field_error(message)])


def not_json(message: str) -> ApiError:
    return ApiError("invalid_json", f"The body is not valid JSON: {message}")


def decode_query(request: web.Request, query_type: Any) -> Any:
    try:
        return msgspec.convert(dict(request.query), query_type, strict=False)
    except msgspec.ValidationError as exc:
        raise ApiError(
            "validation_error", "A query parameter is invalid", errors=[field_error(str(exc), "#/query")]
        ) from None


def field_error(message: str, root: str = "#") -> FieldError:
    """Turn msgspec's "Expected `int`, got `str` - at `$.messages[3].to`" into a JSON pointer entry."""
    detail, _, where = message.partition(" - at ")
    pointer = root + pointer_from_location(where)
    named = _FIELD.search(detail)
    if named and ("missing required field" in detail or "unknown field" in detail):
        pointer += "/" + named.group(1)
    code = (
        "unknown_field"
        if "unknown field" in detail
        else "missing_field"
        if "missing" in detail
        else "invalid"
    )
    return FieldError(pointer=pointer, detail=detail, code=code)


def json_response(payload: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_json_encoder.encode(payload), status=status, content_type="application/json", headers=headers
    )
