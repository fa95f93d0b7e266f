"""`/v1/lists/{id}/imports`: CSV imports of any size, streamed into Redis, applied by the import runner.

The body is read in chunks and parsed as it arrives (`ingress/csv_upload.py`); each batch of rows is
appended to the import's stream before the next chunk is read, so this process holds one batch at a
time whatever the file's size. The 202 is sent once the whole body is durable. A header row without an
`email` column, or with a column that is not an attribute name, fails the import with 422.
"""

from __future__ import annotations

import time

from aiohttp import web

from ingress.context import SERVICES, principal
from ingress.csv_upload import csv_batches
from ingress.problems import ApiError, not_found, validation_error
from ingress.routes.lists import own_list
from ingress.routing import RouteTable, json_response
from schemas.audience import ImportErrors, ImportQuery, ImportRecord, ImportView, RejectedRow, RowError
from schemas.ids import new_id
from schemas.subscriber_items import header_columns, header_problem
from store.imports import ImportStore

routes = RouteTable()
TAG = "lists"
CSV_TYPES = ("text/csv", "application/csv", "text/plain")
CHUNK_BYTES = 256 * 1024


@routes.route(
    "POST",
    "/v1/lists/{id}/imports",
    ids={"id": "lst"},
    scope="write:lists",
    query=ImportQuery,
    response=ImportView,
    status=202,
    idempotent=False,
    streamed=True,
    summary="Import a text/csv body of any size (header: email, name, attributes); 202 once it is durable",
    tag=TAG,
    responses={
        409: "The import was failed as stalled while the body was still arriving",
        415: "Not a text/csv body",
        422: "No email column, or a column that is not an attribute name",
    },
)
async def create_import(request: web.Request, query: ImportQuery) -> web.Response:
    if request.content_type not in CSV_TYPES:
        raise ApiError("unsupported_media_type", "Send the file as text/csv")
    target = await own_list(request)
    store = ImportStore(request.app[SERVICES].redis)
    record = ImportRecord(
        id=new_id("imp"),
        workspace=target.workspace,
        list_id=target.id,
        columns=[],
        mode=query.mode,
        created_ms=int(time.time() * 1000),
        key_id=principal(request).key.id,
    )
    await store.create(record)
    try:
        await _upload(request, store, record)
    except BaseException as exc:
        await store.fail(record.workspace, record.id, f"upload failed: {type(exc).__name__}")
        raise
    if not await store.uploaded(record.workspace, record.id):
        raise ApiError("conflict", "The import was failed as stalled while this upload ran; upload it again")
    return json_response(ImportView(id=record.id, list=target.id, status="running"), status=202)


async def _upload(request: web.Request, store: ImportStore, record: ImportRecord) -> None:
    async for batch in csv_batches(request.content.iter_chunked(CHUNK_BYTES)):
        rows = batch.rows
        if not record.columns:
            if not rows:
                raise validation_error("#/header", "the file has no header row", "missing_header")
            record.columns = header_columns(rows[0][1])
            problem = header_problem(record.columns)
            if problem is not None:
                raise validation_error("#/header", problem, "invalid_header")
            await store.set_columns(record)
            rows = rows[1:]
        errors = [RowError(line, "row_too_long", "the row is longer than 64 KiB") for line in batch.too_long]
        await store.append_rows(record.workspace, record.id, rows, errors, int(time.time() * 1000))
    if not record.columns:
        raise validation_error("#/header", "the file is empty", "missing_header")


@routes.route(
    "GET",
    "/v1/lists/{id}/imports/{imp}",
    ids={"id": "lst", "imp": "imp"},
    scope="read:lists",
    response=ImportView,
    summary="An import's status and progress (rows, created, updated, unchanged, rejected)",
    tag=TAG,
)
async def get_import(request: web.Request) -> web.Response:
    record = await _own_import(request)
    store = ImportStore(request.app[SERVICES].redis)
    url = f"/v1/lists/{record.list_id}/imports/{record.id}/errors"
    return json_response(await store.view(record, url))


@routes.route(
    "GET",
    "/v1/lists/{id}/imports/{imp}/errors",
    ids={"id": "lst", "imp": "imp"},
    scope="read:lists",
    response=ImportErrors,
    summary="The rejected rows of an import with their CSV line numbers (offset/limit in the query)",
    tag=TAG,
)
async def import_errors(request: web.Request) -> web.Response:
    record = await _own_import(request)
    try:
        offset = max(0, int(request.query.get("offset", 0)))
        limit = min(1000, max(1, int(request.query.get("limit", 100))))
    except ValueError:
        raise validation_error("#/query", "offset and limit are integers", "invalid") from None
    store = ImportStore(request.app[SERVICES].redis)
    errors = await store.errors(record.workspace, record.id, start=offset, count=limit)
    rows = [RejectedRow(line=e.line, code=e.code, detail=e.detail) for e in errors]
    return json_response(ImportErrors(data=rows))


async def _own_import(request: web.Request) -> ImportRecord:
    workspace = principal(request).workspace
    record = await ImportStore(request.app[SERVICES].redis).get(workspace, request.match_info["imp"])
    if record is None or record.list_id != request.match_info["id"]:
        raise not_found("import")
    return record
