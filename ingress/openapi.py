"""The OpenAPI 3.1 document, generated from the route table and the msgspec schemas handlers decode with."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from aiohttp import web

from ingress.routing import RouteSpec
from schemas.ids import id_pattern
from schemas.problems import ERROR_CODES, Problem

OPENAPI: web.AppKey[bytes] = web.AppKey("openapi")
_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")
_REF = "#/components/schemas/{name}"


def build_openapi(specs: list[RouteSpec], *, version: str) -> dict[str, Any]:
    types = [Problem] + [t for s in specs for t in (s.body, s.response, s.query) if t is not None]
    _, components = msgspec.json.schema_components(types, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for spec in specs:
        path = _PATH_PARAM.sub(r"{\1}", spec.path)
        paths.setdefault(path, {})[spec.method.lower()] = _operation(spec, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Mailers API",
            "version": version,
            "description": "One API in front of every email provider. Errors are RFC 9457 problem documents; "
            "codes: " + ", ".join(sorted(ERROR_CODES)),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key (mk_…)"}
            },
        },
    }


def _operation(spec: RouteSpec, components: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": spec.handler.__name__,
        "summary": spec.summary,
        "tags": [spec.tag],
        "parameters": _parameters(spec, components),
        "responses": _responses(spec),
        "security": [{"bearer": []}] if spec.auth else [],
    }
    if spec.scope:
        operation["x-required-scope"] = spec.scope
    if spec.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(spec.body)}},
        }
    return operation


def _path_schema(spec: RouteSpec, name: str) -> dict[str, Any]:
    """A declared id states its format: anything else is answered 404 before the handler runs."""
    if name in spec.ids:
        return {"type": "string", "pattern": id_pattern(spec.ids[name])}
    if name in spec.patterns:
        return {"type": "string", "pattern": f"^(?:{spec.patterns[name]})$"}  # the whole value, as the router
    return {"type": "string"}


def _parameters(spec: RouteSpec, components: dict[str, Any]) -> list[dict[str, Any]]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(spec, name)}
        for name in _PATH_PARAM.findall(spec.path)
    ]
    if spec.query is not None:
        schema = components[spec.query.__name__]
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    if spec.auth and spec.idempotent and spec.method in ("POST", "DELETE"):
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": "Retry safely: the same key and body replay the first answer.",
            }
        )
    return params


def _responses(spec: RouteSpec) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "Success"}
    if spec.response is not None:
        success["content"] = {"application/json": {"schema": _ref(spec.response)}}
    responses: dict[str, Any] = {str(spec.status): success}
    problem = {"application/problem+json": {"schema": {"$ref": _REF.format(name="Problem")}}}
    extra = dict(spec.responses)
    if spec.ids:
        extra.setdefault(404, "No such resource, or a path id not of its declared pattern")
    if spec.auth:
        extra.update(
            {401: "Missing, unknown or revoked key", 403: "The key lacks the scope", 429: "Rate limited"}
        )
    if spec.body is not None:
        extra.update({400: "Invalid JSON", 413: "Body too large", 415: "Not JSON", 422: "Validation failed"})
    for status, description in sorted(extra.items()):
        responses[str(status)] = {"description": description, "content": problem}
    responses["default"] = {"description": "An error (RFC 9457 problem document)", "content": problem}
    return responses


def _ref(schema_type: Any) -> dict[str, str]:
    return {"$ref": _REF.format(name=schema_type.__name__)}
