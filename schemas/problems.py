"""RFC 9457 problem documents and the catalogue of every error code the API answers with."""

from __future__ import annotations

import re
from collections.abc import Mapping

import msgspec

ERROR_TYPE_BASE = "https://docs.mailers.dev/errors/"

# code -> (HTTP status, title). docs/errors.md documents each; a test keeps the two in step.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "Invalid JSON"),
    "invalid_idempotency_key": (400, "Invalid idempotency key"),
    "invalid_cursor": (400, "Invalid cursor"),
    "unauthorized": (401, "Unauthorized"),
    "invalid_signature": (401, "Invalid signature"),
    "forbidden": (403, "Forbidden"),
    "not_found": (404, "Not found"),
    "method_not_allowed": (405, "Method not allowed"),
    "not_acceptable": (406, "Not acceptable"),
    "conflict": (409, "Conflict"),
    "idempotency_key_in_use": (409, "Idempotency key in use"),
    "request_timeout": (408, "Request timeout"),
    "payload_too_large": (413, "Payload too large"),
    "unsupported_media_type": (415, "Unsupported media type"),
    "validation_error": (422, "Invalid request"),
    "idempotency_key_reused": (422, "Idempotency key reused"),
    "template_error": (422, "Template error"),
    "rate_limited": (429, "Too many requests"),
    "quota_exceeded": (429, "Quota exceeded"),
    "internal_error": (500, "Internal error"),
    "unavailable": (503, "Service unavailable"),
    "invalid_campaign_status": (409, "Invalid campaign status"),
}


class FieldError(msgspec.Struct, omit_defaults=True):
    pointer: str
    detail: str
    code: str = "invalid"


class Problem(msgspec.Struct, omit_defaults=True, kw_only=True):
    type: str
    title: str
    status: int
    code: str
    detail: str = ""
    request_id: str = ""
    errors: list[FieldError] = []


problem_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    """An error answer. `code` must be in ERROR_CODES. Raised by handlers and by the send path they share
    with actors (actors/outbound/); the ingress renders it as application/problem+json."""

    def __init__(
        self,
        code: str,
        detail: str = "",
        *,
        errors: list[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"undocumented error code {code!r}")
        super().__init__(detail or code)
        self.code = code
        self.status = status or ERROR_CODES[code][0]
        self.detail = detail
        self.errors = errors or []
        self.headers = dict(headers or {})

    def problem(self, request_id: str) -> Problem:
        return Problem(
            type=ERROR_TYPE_BASE + self.code,
            title=ERROR_CODES[self.code][1],
            status=self.status,
            code=self.code,
            detail=self.detail,
            request_id=request_id,
            errors=self.errors,
        )


def validation_error(pointer: str, detail: str, code: str = "invalid") -> ApiError:
    return ApiError(
        "validation_error", detail, errors=[FieldError(pointer=pointer, detail=detail, code=code)]
    )


def not_found(what: str = "resource") -> ApiError:
    return ApiError("not_found", f"No such {what}")


_LOCATION = re.compile(r"`\$([^`]*)`")
_STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]|\[\.\.\.\]")


def pointer_from_location(where: str) -> str:
    """msgspec's error location (`$.messages[3].to`, `$.attributes[...]`, "`key` in `$.attributes`") as
    a JSON pointer suffix (`/messages/3/to`). msgspec does not name dict keys (`[...]`), so a pointer into
    a dict ends at the dict."""
    found = _LOCATION.search(where)
    if found is None:
        return ""
    steps: list[str] = []
    for step in _STEP.finditer(found.group(1)):
        if step.group(0) == "[...]":
            break
        steps.append(step.group(1) or step.group(2))
    return "".join("/" + step for step in steps)
