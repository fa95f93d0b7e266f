"""The one exception every handler raises for an error answer (schemas/problems.py), rendered here as
application/problem+json."""

from __future__ import annotations

from aiohttp import web

from schemas.problems import ApiError, not_found, problem_encoder, validation_error

__all__ = ["PROBLEM_CONTENT_TYPE", "ApiError", "error_response", "not_found", "validation_error"]

PROBLEM_CONTENT_TYPE = "application/problem+json"


def error_response(error: ApiError, request_id: str) -> web.Response:
    return web.Response(
        status=error.status,
        body=problem_encoder.encode(error.problem(request_id)),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=error.headers,
    )
