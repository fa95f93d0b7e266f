"""`/v1/routing/rules`: which sending servers take which mail, evaluated in priority order."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from ingress.context import SERVICES, principal
from ingress.pagination import PageQuery, decode_cursor, list_response
from ingress.problems import not_found, validation_error
from ingress.routing import RouteTable, json_response
from schemas.routing import (
    CreateRoutingRule,
    DeletedRoutingRule,
    RoutingRuleList,
    RoutingRuleRecord,
    RoutingRuleView,
    UpdateRoutingRule,
)
from store.routing_rules import InvalidRule, RoutingRuleStore, build_rule, updated_rule

routes = RouteTable()
TAG = "routing-rules"


def view(record: RoutingRuleRecord) -> RoutingRuleView:
    fields = {f: getattr(record, f) for f in RoutingRuleView.__struct_fields__ if hasattr(record, f)}
    return RoutingRuleView(**fields)


def rule_store(request: web.Request) -> RoutingRuleStore:
    return RoutingRuleStore(request.app[SERVICES].redis)


@contextmanager
def rule_errors() -> Iterator[None]:
    try:
        yield
    except InvalidRule as exc:
        raise validation_error(exc.pointer, exc.detail, exc.code) from None


@routes.route(
    "POST",
    "/v1/routing/rules",
    scope="write:settings",
    body=CreateRoutingRule,
    response=RoutingRuleView,
    status=201,
    summary="Create a routing rule; every target must be a server of the workspace",
    tag=TAG,
)
async def create_rule(request: web.Request, body: CreateRoutingRule) -> web.Response:
    with rule_errors():
        record = build_rule(principal(request).workspace, body)
        await rule_store(request).create(record)
    return json_response(view(record), status=201)


@routes.route(
    "GET",
    "/v1/routing/rules",
    scope="read:settings",
    query=PageQuery,
    response=RoutingRuleList,
    summary="List routing rules, newest first",
    tag=TAG,
)
async def list_rules(request: web.Request, query: PageQuery) -> web.Response:
    after = decode_cursor(query.cursor, {})
    records, has_more = await rule_store(request).page(
        principal(request).workspace, limit=query.limit, after=after
    )
    return list_response(
        request,
        [view(r) for r in records],
        has_more=has_more,
        last_id=records[-1].id if records else None,
        filters={},
    )


@routes.route(
    "GET",
    "/v1/routing/rules/{id}",
    ids={"id": "rul"},
    scope="read:settings",
    response=RoutingRuleView,
    summary="Get a routing rule",
    tag=TAG,
)
async def get_rule(request: web.Request) -> web.Response:
    return json_response(view(await _own_rule(request)))


@routes.route(
    "PATCH",
    "/v1/routing/rules/{id}",
    ids={"id": "rul"},
    scope="write:settings",
    body=UpdateRoutingRule,
    response=RoutingRuleView,
    summary="Change a routing rule; given fields replace stored ones",
    tag=TAG,
)
async def update_rule(request: web.Request, body: UpdateRoutingRule) -> web.Response:
    record = await _own_rule(request)
    with rule_errors():
        record = updated_rule(record, body)
        saved = await rule_store(request).save(record)
    if not saved:
        raise not_found("routing rule")
    return json_response(view(record))


@routes.route(
    "DELETE",
    "/v1/routing/rules/{id}",
    ids={"id": "rul"},
    scope="write:settings",
    response=DeletedRoutingRule,
    summary="Delete a routing rule",
    tag=TAG,
)
async def delete_rule(request: web.Request) -> web.Response:
    rule_id = request.match_info["id"]
    if not await rule_store(request).delete(principal(request).workspace, rule_id):
        raise not_found("routing rule")
    return json_response(DeletedRoutingRule(id=rule_id))


async def _own_rule(request: web.Request) -> RoutingRuleRecord:
    record = await rule_store(request).get(principal(request).workspace, request.match_info["id"])
    if record is None:
        raise not_found("routing rule")
    return record
