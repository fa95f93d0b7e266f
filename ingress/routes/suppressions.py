"""`/v1/suppressions`: add, list and lift suppressions; writes go through the SuppressionShards.

Global suppressions apply to every workspace of the installation, so only the operator manages them
(`mailers suppressions global …`, ingress/operator_suppressions.py): no workspace key, not even an
`admin` one, may add, list or lift them here. A `DELETE` without `scope` lifts the address in every
scope of the workspace (workspace, domain and list), never the global one.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from ingress.context import SERVICES, principal
from ingress.pagination import PageQuery, decode_cursor, list_response
from ingress.problems import ApiError, not_found, validation_error
from ingress.routing import RouteTable, json_response
from schemas.ids import has_prefix
from schemas.suppressions import (
    CreatedSuppressions,
    CreateSuppressions,
    Reason,
    Scope,
    Suppression,
    SuppressionDeletion,
    SuppressionEntry,
    SuppressionList,
    SuppressionRecord,
)
from store.suppressions import SuppressionStore, created_at, normalise_entry

routes = RouteTable()
TAG = "suppressions"


class SuppressionQuery(PageQuery, kw_only=True, forbid_unknown_fields=True):
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=320)] | None = None
    reason: Reason | None = None
    scope: Scope | None = None


class SuppressionScopeQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    scope: Scope | None = None
    scope_value: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] | None = None


def view(record: SuppressionRecord) -> Suppression:
    return Suppression(
        email=record.email,
        reason=record.reason,
        scope=record.scope,
        scope_value=record.scope_value,
        source=record.source,
        created_at=created_at(record),
    )


def suppression_client(request: web.Request):
    client = getattr(request.app[SERVICES].gateway, "suppressions", None)
    if client is None:
        raise ApiError("unavailable", "The suppression shards are not running", headers={"Retry-After": "1"})
    return client


def refuse_global(scope: str | None) -> None:
    """Global entries affect every tenant: operator only, never through a workspace's key."""
    if scope == "global":
        raise ApiError(
            "forbidden", "Global suppressions are managed by the operator (`mailers suppressions global`)"
        )


def entries_of(body: CreateSuppressions) -> list[SuppressionEntry]:
    if (body.email is None) == (body.emails is None):
        raise validation_error("#/email", "give `email` or `emails`, exactly one of them", "email_or_emails")
    check_scope(body.scope, body.scope_value, "#/scope_value")
    emails = [body.email] if body.email is not None else body.emails or []
    pointers = ["#/email"] if body.email is not None else [f"#/emails/{i}" for i in range(len(emails))]
    entries = []
    for pointer, email in zip(pointers, emails, strict=True):
        try:
            entries.append(
                normalise_entry(
                    SuppressionEntry(
                        email=email, reason=body.reason, scope=body.scope, scope_value=body.scope_value
                    )
                )
            )
        except ValueError as exc:
            raise validation_error(pointer, str(exc), "invalid_email") from None
    return entries


def check_scope(scope: Scope, scope_value: str | None, pointer: str) -> None:
    """`scope_value` is a domain for `domain`, a list id for `list`, and absent otherwise."""
    if scope == "list" and scope_value is not None and not has_prefix(scope_value, "lst"):
        raise validation_error(pointer, "a list scope takes a list id (lst_…)", "invalid_list_id")
    try:
        normalise_entry(SuppressionEntry(email="probe@example.com", scope=scope, scope_value=scope_value))
    except ValueError as exc:
        raise validation_error(pointer, str(exc), "invalid_scope_value") from None


@routes.route(
    "POST",
    "/v1/suppressions",
    scope="write:suppressions",
    body=CreateSuppressions,
    response=CreatedSuppressions,
    status=201,
    summary="Suppress one address or up to 1,000 (global scope: operator only, 403)",
    tag=TAG,
)
async def create_suppressions(request: web.Request, body: CreateSuppressions) -> web.Response:
    refuse_global(body.scope)
    entries = entries_of(body)
    workspace = principal(request).workspace
    created = await suppression_client(request).add(workspace, entries)
    records = await SuppressionStore(request.app[SERVICES].redis).records(workspace, entries)
    data = [view(r) for r in records if r is not None]
    return json_response(CreatedSuppressions(data=data, created=sum(created)), status=201)


@routes.route(
    "GET",
    "/v1/suppressions",
    scope="read:suppressions",
    query=SuppressionQuery,
    response=SuppressionList,
    summary="List suppressions, newest first, by email, reason or scope",
    tag=TAG,
)
async def list_suppressions(request: web.Request, query: SuppressionQuery) -> web.Response:
    refuse_global(query.scope)
    filters = {"email": query.email, "reason": query.reason, "scope": query.scope}
    after = decode_cursor(query.cursor, filters)
    home = principal(request).workspace
    store = SuppressionStore(request.app[SERVICES].redis)
    try:
        records, has_more, last = await store.page(
            home, limit=query.limit, after=after, email=query.email, reason=query.reason, scope=query.scope
        )
    except ValueError as exc:
        raise validation_error("#/query/email", str(exc), "invalid_email") from None
    return list_response(
        request, [view(r) for r in records], has_more=has_more, last_id=last, filters=filters
    )


@routes.route(
    "DELETE",
    "/v1/suppressions/{email}",
    texts=("email",),
    scope="write:suppressions",
    query=SuppressionScopeQuery,
    response=SuppressionDeletion,
    summary="Lift an address's suppressions (one scope, or every scope of the workspace)",
    tag=TAG,
)
async def delete_suppression(request: web.Request, query: SuppressionScopeQuery) -> web.Response:
    refuse_global(query.scope)
    workspace, email = principal(request).workspace, request.match_info["email"]
    store = SuppressionStore(request.app[SERVICES].redis)
    if query.scope is None:
        if query.scope_value is not None:
            raise validation_error("#/query/scope", "scope_value needs a scope", "missing_scope")
        targets = await _workspace_entries(store, workspace, email)
    else:
        check_scope(query.scope, query.scope_value, "#/query/scope_value")
        try:
            targets = [
                normalise_entry(
                    SuppressionEntry(email=email, scope=query.scope, scope_value=query.scope_value)
                )
            ]
        except ValueError:
            raise not_found("suppression") from None
    records = [r for r in await store.records(workspace, targets) if r is not None]
    client = suppression_client(request)
    for record in records:
        await client.remove(workspace, [record.email], record.scope, record.scope_value)
    if not records:
        raise not_found("suppression")
    return json_response(SuppressionDeletion(email=records[0].email, deleted=[view(r) for r in records]))


async def _workspace_entries(store: SuppressionStore, workspace: str, email: str) -> list[SuppressionEntry]:
    try:
        records, _, _ = await store.page(workspace, limit=100, after=None, email=email)
    except ValueError:
        raise not_found("suppression") from None
    return [SuppressionEntry(email=r.email, scope=r.scope, scope_value=r.scope_value) for r in records]
