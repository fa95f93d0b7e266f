"""`/v1/analytics/events` and `/v1/analytics/summary`: the analytics store's answers over HTTP.

The reader is the analytics store's read interface: in DuckDB mode the EventSink actor owns the file
and answers (through the gateway); with ClickHouse the ingress queries it directly.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from analytics.errors import InvalidCursor, InvalidQuery, StoreUnavailable
from analytics.queries import EventsQuery, ExportQuery, SummaryQuery
from analytics.reports import EventsPage, Summary
from analytics.store import AnalyticsReader, analytics_url, open_store
from ingress.context import SERVICES, principal
from ingress.problems import ApiError, validation_error
from ingress.routing import RouteTable, json_response

routes = RouteTable()
NDJSON = "application/x-ndjson"
# Set before the app starts (tests do, through app_hook); otherwise opened on first use.
ANALYTICS_READER: web.AppKey[AnalyticsReader] = web.AppKey("analytics_reader")
_lazy_readers: weakref.WeakKeyDictionary[web.Application, AnalyticsReader] = weakref.WeakKeyDictionary()


@routes.route(
    "GET",
    "/v1/analytics/events",
    scope="read:events",
    query=EventsQuery,
    response=EventsPage,
    summary="Events, newest first; `Accept: application/x-ndjson` streams a whole window",
    tag="analytics",
    responses={503: "The analytics store is unavailable"},
)
async def list_events(request: web.Request, query: EventsQuery) -> web.StreamResponse:
    reader = reader_for(request.app)
    workspace = principal(request).workspace
    if NDJSON in request.headers.get("Accept", ""):
        export = ExportQuery(**{f: getattr(query, f) for f in ExportQuery.__struct_fields__})
        return await _stream(request, reader.export_events(workspace, export))
    async with analytics_errors():
        page = await reader.events_page(workspace, query)
    return json_response(
        {"object": "list", "data": page.data, "has_more": page.has_more, "next_cursor": page.next_cursor}
    )


@routes.route(
    "GET",
    "/v1/analytics/summary",
    scope="read:analytics",
    query=SummaryQuery,
    response=Summary,
    summary="Counts and rates over a window, by hour or day, optionally grouped",
    tag="analytics",
    responses={503: "The analytics store is unavailable"},
)
async def summary(request: web.Request, query: SummaryQuery) -> web.Response:
    async with analytics_errors():
        result = await reader_for(request.app).summary(principal(request).workspace, query)
    return json_response(result)


async def _stream(request: web.Request, chunks: AsyncIterator[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    async with analytics_errors():
        first = await anext(chunks, b"")  # errors in the query surface before the 200 is sent
    await response.prepare(request)
    await response.write(first)
    async for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


@asynccontextmanager
async def analytics_errors():
    try:
        yield
    except InvalidCursor as exc:
        raise ApiError("invalid_cursor", exc.detail) from None
    except InvalidQuery as exc:
        raise validation_error("#/query/" + exc.pointer.removeprefix("#/"), exc.detail, exc.code) from None
    except StoreUnavailable:
        raise ApiError(
            "unavailable", "The analytics store is unavailable", headers={"Retry-After": "5"}
        ) from None


def reader_for(app: web.Application) -> AnalyticsReader:
    reader = app.get(ANALYTICS_READER) or _lazy_readers.get(app)
    if reader is None:
        reader = _lazy_readers[app] = _default_reader(app)
    return reader


def _default_reader(app: web.Application) -> AnalyticsReader:
    services = app[SERVICES]
    url = analytics_url(services.settings.analytics_url, services.settings.data_dir)
    if url.startswith(("clickhouse://", "clickhouses://")):
        return open_store(url)
    reader = services.gateway.analytics_reader() if services.gateway is not None else None
    if reader is None:
        raise ApiError("unavailable", "The analytics store is not running", headers={"Retry-After": "5"})
    return reader
