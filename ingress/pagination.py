"""Opaque cursors and list answers shared by every list endpoint (API.md, "Pagination")."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from aiohttp import web

from ingress.problems import ApiError
from ingress.routing import json_response

Limit = Annotated[int, msgspec.Meta(ge=1, le=100)]


class PageQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    limit: Limit = 20
    cursor: str | None = None


class _Cursor(msgspec.Struct, array_like=True):
    after: str
    filters: str


_encode_cursor = msgspec.msgpack.Encoder().encode
_decode_cursor = msgspec.msgpack.Decoder(_Cursor).decode


def filters_fingerprint(filters: Mapping[str, Any]) -> str:
    canonical = msgspec.json.encode({k: v for k, v in sorted(filters.items()) if v is not None})
    return hashlib.sha256(canonical).hexdigest()[:16]


def encode_cursor(after: str, filters: Mapping[str, Any]) -> str:
    raw = _encode_cursor(_Cursor(after, filters_fingerprint(filters)))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str | None, filters: Mapping[str, Any]) -> str | None:
    """The id to continue after, or None for the first page. A cursor from other filters → 400."""
    if cursor is None:
        return None
    try:
        decoded = _decode_cursor(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, msgspec.DecodeError):
        raise ApiError("invalid_cursor", "The cursor is not one this API issued") from None
    if decoded.filters != filters_fingerprint(filters):
        raise ApiError("invalid_cursor", "The cursor was issued for different filters")
    return decoded.after


def list_response(
    request: web.Request, data: list[Any], *, has_more: bool, last_id: str | None, filters: Mapping[str, Any]
) -> web.Response:
    next_cursor = encode_cursor(last_id, filters) if has_more and last_id else None
    headers = {}
    if next_cursor:
        url = request.url.update_query({"cursor": next_cursor})
        headers["Link"] = f'<{url.path_qs}>; rel="next"'
    body = {"object": "list", "data": data, "has_more": has_more, "next_cursor": next_cursor}
    return json_response(body, headers=headers)
