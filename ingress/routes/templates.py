"""`/v1/templates`: immutable versions, preview renders (read:/write:templates).

Every save compiles the new version first (content/compile.py): a version that does not compile is
never stored, so nothing is half-saved. Compiling runs on the CPU worker (ingress/off_loop.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from aiohttp import web

from actors.outbound.templating import content_errors, resolve_partials, template_variables
from content.cache import compiled
from content.render import render_template
from ingress.context import SERVICES, principal
from ingress.off_loop import run_heavy
from ingress.pagination import PageQuery, decode_cursor, list_response
from ingress.problems import ApiError, not_found
from ingress.routing import RouteTable, json_response
from schemas.ids import new_id
from schemas.templates import (
    CreateTemplate,
    DeletedTemplate,
    RenderedView,
    RenderRequest,
    Template,
    TemplateList,
    TemplateVersion,
    UpdateTemplate,
)
from store.templates import TemplateStore, VersionConflict

routes = RouteTable()
TAG = "templates"
_SOURCE_FIELDS = ("name", "engine", "subject", "html", "mjml", "text", "variables")


def view(version: TemplateVersion) -> Template:
    return Template(
        id=version.id,
        name=version.name,
        engine=version.engine,
        subject=version.subject,
        html=version.html,
        mjml=version.mjml,
        text=version.text,
        variables=version.variables,
        version=version.version,
        created_at=version.template_created_at,
        updated_at=version.created_at,
    )


@routes.route(
    "POST",
    "/v1/templates",
    scope="write:templates",
    body=CreateTemplate,
    response=Template,
    status=201,
    summary="Create a template (version 1); it is compiled first and refused with template_error if it fails",
    tag=TAG,
)
async def create_template(request: web.Request, body: CreateTemplate) -> web.Response:
    workspace, now = principal(request).workspace, datetime.now(UTC)
    store = TemplateStore(request.app[SERVICES].redis)
    fields = {f: getattr(body, f) for f in _SOURCE_FIELDS}
    first = TemplateVersion(
        id=new_id("tpl"), workspace=workspace, version=1, created_at=now, template_created_at=now, **fields
    )
    first = await _compiled_version(store, first)
    await store.create(first)
    return json_response(view(first), status=201)


@routes.route(
    "GET",
    "/v1/templates",
    scope="read:templates",
    query=PageQuery,
    response=TemplateList,
    summary="List templates (each at its newest version), newest first",
    tag=TAG,
)
async def list_templates(request: web.Request, query: PageQuery) -> web.Response:
    after = decode_cursor(query.cursor, {})
    store = TemplateStore(request.app[SERVICES].redis)
    found, has_more = await store.page(principal(request).workspace, limit=query.limit, after=after)
    last = found[-1].id if found else None
    return list_response(request, [view(v) for v in found], has_more=has_more, last_id=last, filters={})


@routes.route(
    "GET",
    "/v1/templates/{id}",
    ids={"id": "tpl"},
    scope="read:templates",
    response=Template,
    summary="Get a template at its newest version",
    tag=TAG,
)
async def get_template(request: web.Request) -> web.Response:
    return json_response(view(await _newest(request)))


@routes.route(
    "PATCH",
    "/v1/templates/{id}",
    ids={"id": "tpl"},
    scope="write:templates",
    body=UpdateTemplate,
    response=Template,
    summary="Change a template: a new immutable version (n + 1); earlier versions stay as they were",
    tag=TAG,
)
async def update_template(request: web.Request, body: UpdateTemplate) -> web.Response:
    store = TemplateStore(request.app[SERVICES].redis)
    newest = await _newest(request)
    changes = {f: getattr(body, f) for f in _SOURCE_FIELDS if getattr(body, f) is not msgspec.UNSET}
    if all(getattr(newest, f) == value for f, value in changes.items()):
        return json_response(view(newest))
    candidate = msgspec.structs.replace(
        newest, version=newest.version + 1, created_at=datetime.now(UTC), partials={}, **changes
    )
    candidate = await _compiled_version(store, candidate)
    try:
        await store.add_version(candidate)
    except VersionConflict:
        raise ApiError(
            "conflict", "The template changed meanwhile; read it and apply the change again"
        ) from None
    return json_response(view(candidate))


@routes.route(
    "DELETE",
    "/v1/templates/{id}",
    ids={"id": "tpl"},
    scope="write:templates",
    response=DeletedTemplate,
    summary="Delete a template and every version (messages already accepted are not affected)",
    tag=TAG,
)
async def delete_template(request: web.Request) -> web.Response:
    deleted = await TemplateStore(request.app[SERVICES].redis).delete(
        principal(request).workspace, request.match_info["id"]
    )
    if not deleted:
        raise not_found("template")
    return json_response(DeletedTemplate(id=request.match_info["id"]))


@routes.route(
    "GET",
    "/v1/templates/{id}/versions",
    ids={"id": "tpl"},
    scope="read:templates",
    query=PageQuery,
    response=TemplateList,
    summary="Every version of a template, newest first",
    tag=TAG,
)
async def list_versions(request: web.Request, query: PageQuery) -> web.Response:
    template_id = request.match_info["id"]
    after = decode_cursor(query.cursor, {"template": template_id})
    store = TemplateStore(request.app[SERVICES].redis)
    found, has_more = await store.versions(
        principal(request).workspace, template_id, limit=query.limit, below=int(after) if after else None
    )
    if not found and after is None:
        raise not_found("template")
    last = str(found[-1].version) if found else None
    return list_response(
        request, [view(v) for v in found], has_more=has_more, last_id=last, filters={"template": template_id}
    )


@routes.route(
    "POST",
    "/v1/templates/{id}/render",
    ids={"id": "tpl"},
    scope="read:templates",
    body=RenderRequest,
    response=RenderedView,
    summary="Render a version (default: the newest) with these variables, for preview",
    tag=TAG,
)
async def render_preview(request: web.Request, body: RenderRequest) -> web.Response:
    store = TemplateStore(request.app[SERVICES].redis)
    version = await store.get_version(principal(request).workspace, request.match_info["id"], body.version)
    if version is None:
        raise not_found("template" if body.version is None else "template version")
    variables = template_variables(body.variables, "#/variables")
    with content_errors():
        rendered = await run_heavy(True, lambda: render_template(compiled(version), variables))
    return json_response(RenderedView(subject=rendered.subject, html=rendered.html, text=rendered.text))


async def _compiled_version(store: TemplateStore, version: TemplateVersion) -> TemplateVersion:
    """The version with its partials frozen in, once it compiles; template_error otherwise."""
    with content_errors():
        version = await resolve_partials(store, version)
        await run_heavy(True, compiled, version)
    return version


async def _newest(request: web.Request) -> TemplateVersion:
    store = TemplateStore(request.app[SERVICES].redis)
    found = await store.get_version(principal(request).workspace, request.match_info["id"])
    if found is None:
        raise not_found("template")
    return found
