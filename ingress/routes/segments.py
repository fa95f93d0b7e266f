"""`/v1/segments`: saved filters over subscribers (read:/write:lists), counted and listed by the
analytics store (in DuckDB mode through the event-sink actor, with ClickHouse directly)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

from analytics.errors import InvalidQuery, StoreUnavailable
from ingress.context import SERVICES, principal
from ingress.pagination import PageQuery, decode_cursor, list_response
from ingress.problems import ApiError, not_found, validation_error
from ingress.routes.analytics import reader_for
from ingress.routing import DEFINITION_MAX_BODY, RouteTable, json_response
from schemas.ids import new_id
from schemas.segments import (
    ConditionError,
    CreateSegment,
    DeletedSegment,
    Segment,
    SegmentCount,
    SegmentList,
    SegmentMember,
    SegmentQuery,
    SegmentRecord,
    UpdateSegment,
    parse_condition,
)
from store.lists import ListStore
from store.segments import SegmentStore

routes = RouteTable()
TAG = "segments"
_UNAVAILABLE = {503: "The analytics store is unavailable"}


class MemberList(msgspec.Struct, kw_only=True):
    data: list[SegmentMember]
    has_more: bool
    next_cursor: str | None
    object: str = "list"


def view(record: SegmentRecord) -> Segment:
    return Segment(**{f: getattr(record, f) for f in Segment.__struct_fields__ if hasattr(record, f)})


@routes.route(
    "POST",
    "/v1/segments",
    scope="write:lists",
    body=CreateSegment,
    response=Segment,
    status=201,
    summary="Save a segment: lists and a CONDITION filter",
    tag=TAG,
    max_body=DEFINITION_MAX_BODY,
)
async def create_segment(request: web.Request, body: CreateSegment) -> web.Response:
    checked_filter(body.filter)
    workspace = principal(request).workspace
    lists = await checked_lists(request, workspace, body.lists)
    now = datetime.now(UTC)
    record = SegmentRecord(
        id=new_id("seg"),
        workspace=workspace,
        name=body.name,
        lists=lists,
        filter=body.filter,
        created_at=now,
        updated_at=now,
    )
    await SegmentStore(request.app[SERVICES].redis).create(record)
    return json_response(view(record), status=201)


@routes.route(
    "GET",
    "/v1/segments",
    scope="read:lists",
    query=PageQuery,
    response=SegmentList,
    summary="List segments, newest first",
    tag=TAG,
)
async def list_segments(request: web.Request, query: PageQuery) -> web.Response:
    after = decode_cursor(query.cursor, {})
    store = SegmentStore(request.app[SERVICES].redis)
    records, has_more = await store.page(principal(request).workspace, limit=query.limit, after=after)
    last = records[-1].id if records else None
    return list_response(request, [view(r) for r in records], has_more=has_more, last_id=last, filters={})


@routes.route(
    "GET",
    "/v1/segments/{id}",
    ids={"id": "seg"},
    scope="read:lists",
    response=Segment,
    summary="Get a segment",
    tag=TAG,
)
async def get_segment(request: web.Request) -> web.Response:
    return json_response(view(await _own_segment(request)))


@routes.route(
    "PATCH",
    "/v1/segments/{id}",
    ids={"id": "seg"},
    scope="write:lists",
    body=UpdateSegment,
    response=Segment,
    summary="Change a segment's name, lists or filter",
    tag=TAG,
    max_body=DEFINITION_MAX_BODY,
)
async def update_segment(request: web.Request, body: UpdateSegment) -> web.Response:
    record = await _own_segment(request)
    if body.filter is not msgspec.UNSET:
        checked_filter(body.filter)
        record.filter = body.filter
    if body.name is not msgspec.UNSET:
        record.name = body.name
    if body.lists is not msgspec.UNSET:
        record.lists = await checked_lists(request, record.workspace, body.lists)
    record.updated_at = datetime.now(UTC)
    await SegmentStore(request.app[SERVICES].redis).save(record)
    return json_response(view(record))


@routes.route(
    "DELETE",
    "/v1/segments/{id}",
    ids={"id": "seg"},
    scope="write:lists",
    response=DeletedSegment,
    summary="Delete a segment (its subscribers are untouched)",
    tag=TAG,
)
async def delete_segment(request: web.Request) -> web.Response:
    record = await _own_segment(request)
    await SegmentStore(request.app[SERVICES].redis).delete(record.workspace, record.id)
    return json_response(DeletedSegment(id=record.id))


@routes.route(
    "GET",
    "/v1/segments/{id}/count",
    ids={"id": "seg"},
    scope="read:lists",
    response=SegmentCount,
    summary="How many subscribers the segment holds now",
    tag=TAG,
    responses=_UNAVAILABLE,
)
async def count_segment(request: web.Request) -> web.Response:
    record = await _own_segment(request)
    async with _translated():
        count = await reader_for(request.app).segment_count(record.workspace, _query(record))
    return json_response(SegmentCount(count=count))


@routes.route(
    "GET",
    "/v1/segments/{id}/subscribers",
    ids={"id": "seg"},
    scope="read:lists",
    query=PageQuery,
    response=MemberList,
    summary="The segment's subscribers, newest first (as the analytics store mirrors them)",
    tag=TAG,
    responses=_UNAVAILABLE,
)
async def segment_subscribers(request: web.Request, query: PageQuery) -> web.Response:
    record = await _own_segment(request)
    filters = {"segment": record.id}
    after = decode_cursor(query.cursor, filters)
    async with _translated():
        page = await reader_for(request.app).segment_members(
            record.workspace, _query(record), after=after, limit=query.limit
        )
    last = page.data[-1].id if page.data else None
    return list_response(request, page.data, has_more=page.has_more, last_id=last, filters=filters)


def checked_filter(raw: Any) -> None:
    if raw is None:
        return
    try:
        parse_condition(raw)
    except ConditionError as exc:
        raise validation_error(exc.pointer, exc.detail, exc.code) from None


async def checked_lists(request: web.Request, workspace: str, lists: list[str]) -> list[str]:
    """The lists without repeats, once each exists in the workspace: a segment over a list that is not
    there would silently count nobody, so the client hears which entry is wrong instead."""
    unique = list(dict.fromkeys(lists))
    live = await ListStore(request.app[SERVICES].redis).existing(workspace, unique)
    for index, list_id in enumerate(lists):
        if list_id not in live:
            raise validation_error(f"#/lists/{index}", f"no list {list_id} in this workspace", "unknown_list")
    return unique


def _query(record: SegmentRecord) -> SegmentQuery:
    return SegmentQuery(lists=tuple(record.lists), filter=record.filter)


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    try:
        yield
    except InvalidQuery as exc:
        raise validation_error(exc.pointer, exc.detail, exc.code) from None
    except StoreUnavailable:
        raise ApiError(
            "unavailable", "The analytics store is unavailable", headers={"Retry-After": "5"}
        ) from None


async def _own_segment(request: web.Request) -> SegmentRecord:
    record = await SegmentStore(request.app[SERVICES].redis).get(
        principal(request).workspace, request.match_info["id"]
    )
    if record is None:
        raise not_found("segment")
    return record
