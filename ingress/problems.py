"""The one exception every handler raises for an error answer, rendered as application/problem+json."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from schemas.problems import ERROR_CODES, ERROR_TYPE_BASE, FieldError, Problem, problem_encoder

PROBLEM_CONTENT_TYPE = "application/problem+json"


class ApiError(Exception):
    """An error answer. `code` must be in schemas.problems.ERROR_CODES."""

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

    def response(self, request_id: str) -> web.Response:
        return web.Response(
            status=self.status,
            body=problem_encoder.encode(self.problem(request_id)),
            content_type=PROBLEM_CONTENT_TYPE,
            headers=self.headers,
        )


def validation_error(pointer: str, detail: str, code: str = "invalid") -> ApiError:
    return ApiError(
        "validation_error", detail, errors=[FieldError(pointer=pointer, detail=detail, code=code)]
    )


def not_found(what: str = "resource") -> ApiError:
    return ApiError("not_found", f"No such {what}")
