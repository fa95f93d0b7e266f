"""`/v1/campaigns` (read:/write:campaigns): create, change a draft, launch, pause, resume, cancel, the
failed recipients and their retry (docs/campaigns.md).

Handlers only check and change the campaign's record and status (`store/campaigns.py`, one script per
status change, with its event); the campaign runner actor (`actors/campaigns/`) finds launched campaigns
in Redis and does the sending, so no request waits on it and a launch survives any process dying.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

from actors.policies import send_window
from analytics.errors import InvalidQuery, StoreUnavailable
from analytics.queries import CampaignReportQuery
from ingress.context import SERVICES, principal
from ingress.pagination import PageQuery, decode_cursor, list_response
from ingress.problems import ApiError, not_found, validation_error
from ingress.routes.analytics import analytics_errors, reader_for
from ingress.routing import RouteTable, json_response
from schemas.campaign_report import CampaignReport
from schemas.campaigns import (
    Campaign,
    CampaignList,
    CampaignRecord,
    CampaignTemplate,
    Counters,
    CreateCampaign,
    FailedRecipient,
    Progress,
    RecipientList,
    RecipientsQuery,
    RetryAccepted,
    UpdateCampaign,
    record_encoder,
)
from schemas.events import Event
from schemas.ids import is_id, new_id
from schemas.segments import SegmentQuery
from store import keyspace
from store.campaigns import CampaignState, CampaignStore, counters
from store.lists import ListStore
from store.segments import SegmentStore
from store.templates import TemplateStore

routes = RouteTable()
TAG = "campaigns"
_STATE = {409: "The campaign's status does not allow this (`invalid_campaign_status`)"}


def view(state: CampaignState, *, audience: int, failed: int) -> Campaign:
    record = state.record
    launched = state.number("launch_ms")
    done = state.number("done_ms")
    winner = state.text("winner")
    return Campaign(
        id=record.id,
        name=record.name,
        status=state.status,  # type: ignore[arg-type]  # written only from CampaignStatus values
        from_=record.from_,
        reply_to=record.reply_to,
        subject=record.subject,
        template=record.template,
        html=record.html,
        text=record.text,
        audience=record.audience,
        send_at=record.send_at,
        window=record.window,
        rate=record.rate,
        routing=record.routing,
        tags=record.tags,
        metadata=record.metadata,
        tracking=record.tracking,
        ab_test=record.ab_test,
        counters=Counters(**counters(state, audience=audience, failed=failed)),
        progress=Progress(
            phase=state.text("phase"),
            waiting=state.text("waiting"),
            winner=None if winner is None else int(winner),
            failure=state.text("failure"),
        ),
        created_at=record.created_at,
        updated_at=record.updated_at,
        launched_at=_at(launched) if launched else None,
        completed_at=_at(done) if done else None,
    )


async def _view(store: CampaignStore, state: CampaignState) -> Campaign:
    workspace, campaign_id = state.record.workspace, state.record.id
    resolved = state.fields.get("n:audience")
    audience = int(resolved) if resolved is not None else await store.audience_size(workspace, campaign_id)
    return view(state, audience=audience, failed=await store.failed_count(workspace, campaign_id))


@routes.route(
    "POST",
    "/v1/campaigns",
    scope="write:campaigns",
    body=CreateCampaign,
    response=Campaign,
    status=201,
    summary="Create a campaign (a draft)",
    tag=TAG,
)
async def create_campaign(request: web.Request, body: CreateCampaign) -> web.Response:
    workspace = principal(request).workspace
    now = datetime.now(UTC)
    fields = {f: getattr(body, f) for f in CreateCampaign.__struct_fields__}
    record = CampaignRecord(id=new_id("cmp"), workspace=workspace, created_at=now, updated_at=now, **fields)
    await _checked(request, record)
    store = CampaignStore(request.app[SERVICES].redis)
    await store.create(record)
    state = await store.get(workspace, record.id)
    assert state is not None
    return json_response(await _view(store, state), status=201)


@routes.route(
    "GET",
    "/v1/campaigns",
    scope="read:campaigns",
    query=PageQuery,
    response=CampaignList,
    summary="List campaigns, newest first",
    tag=TAG,
)
async def list_campaigns(request: web.Request, query: PageQuery) -> web.Response:
    after = decode_cursor(query.cursor, {})
    store = CampaignStore(request.app[SERVICES].redis)
    states, has_more = await store.page(principal(request).workspace, limit=query.limit, after=after)
    data = [await _view(store, s) for s in states]
    last = states[-1].record.id if states else None
    return list_response(request, data, has_more=has_more, last_id=last, filters={})


@routes.route(
    "GET",
    "/v1/campaigns/{id}",
    ids={"id": "cmp"},
    scope="read:campaigns",
    response=Campaign,
    summary="Get a campaign with its live counters",
    tag=TAG,
)
async def get_campaign(request: web.Request) -> web.Response:
    store, state = await _own(request)
    return json_response(await _view(store, state))


@routes.route(
    "PATCH",
    "/v1/campaigns/{id}",
    ids={"id": "cmp"},
    scope="write:campaigns",
    body=UpdateCampaign,
    response=Campaign,
    summary="Change a draft (a launched campaign cannot be changed: 409)",
    tag=TAG,
    responses=_STATE,
)
async def update_campaign(request: web.Request, body: UpdateCampaign) -> web.Response:
    store, state = await _own(request)
    if state.status != "draft":
        raise _status_error(state.status, "change")
    changes = {f: v for f in UpdateCampaign.__struct_fields__ if (v := getattr(body, f)) is not msgspec.UNSET}
    record = msgspec.structs.replace(state.record, **changes, updated_at=datetime.now(UTC))
    await _checked(request, record)
    done = await store.save_draft(record)
    if not done.done:
        raise _status_error(done.previous, "change")
    changed = await store.get(record.workspace, record.id)
    assert changed is not None
    return json_response(await _view(store, changed))


@routes.route(
    "POST",
    "/v1/campaigns/{id}/launch",
    ids={"id": "cmp"},
    scope="write:campaigns",
    response=Campaign,
    summary="Launch a draft: now, or at its send_at (status scheduled until then)",
    tag=TAG,
    responses={**_STATE, 503: "A segment's size could not be counted (the analytics store is unavailable)"},
)
async def launch_campaign(request: web.Request) -> web.Response:
    store, state = await _own(request)
    if state.status != "draft":
        raise _status_error(state.status, "launch")
    record = state.record
    await _checked(request, record)
    _require_content(record)
    record = await _pinned(request, record)
    record.eligible_lists = await _eligible_lists(request, record)
    record.launched_by = principal(request).key.id
    await _require_audience(request, record)
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    due = record.send_at is None or record.send_at <= now
    to = "sending" if due else "scheduled"
    event = campaign_event(record, "campaign.launched", now, {"status": to, "send_at": _iso(record.send_at)})
    fields: dict[str, bytes | str | int] = {
        "r": record_encoder.encode(record),
        "launch_ms": now_ms,
        "phase": "resolve",
        "src": 0,
        "cur": "",
    }
    if record.send_at is not None:
        fields["send_at_ms"] = int(record.send_at.timestamp() * 1000)
    await _move(store, record, "launch", ("draft",), to, fields=fields, events=[event], active="add")
    return json_response(await _view(store, await _reread(store, record)))


@routes.route(
    "POST",
    "/v1/campaigns/{id}/pause",
    ids={"id": "cmp"},
    scope="write:campaigns",
    response=Campaign,
    summary="Pause a scheduled or sending campaign (messages already queued may still go: docs/campaigns.md)",
    tag=TAG,
    responses=_STATE,
)
async def pause_campaign(request: web.Request) -> web.Response:
    store, state = await _own(request)
    now = datetime.now(UTC)
    event = campaign_event(state.record, "campaign.paused", now, {"status": "paused", "from": state.status})
    await _move(store, state.record, "pause", ("scheduled", "sending"), "paused", events=[event])
    return json_response(await _view(store, await _reread(store, state.record)))


@routes.route(
    "POST",
    "/v1/campaigns/{id}/resume",
    ids={"id": "cmp"},
    scope="write:campaigns",
    response=Campaign,
    summary="Resume a paused campaign where it stopped",
    tag=TAG,
    responses=_STATE,
)
async def resume_campaign(request: web.Request) -> web.Response:
    store, state = await _own(request)
    await _move(store, state.record, "resume", ("paused",), "sending", active="add")
    return json_response(await _view(store, await _reread(store, state.record)))


@routes.route(
    "POST",
    "/v1/campaigns/{id}/cancel",
    ids={"id": "cmp"},
    scope="write:campaigns",
    response=Campaign,
    summary="Cancel a campaign that has not finished; recipients not yet queued get nothing",
    tag=TAG,
    responses=_STATE,
)
async def cancel_campaign(request: web.Request) -> web.Response:
    store, state = await _own(request)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    unfinished = ("draft", "scheduled", "sending", "paused")
    await _move(
        store,
        state.record,
        "cancel",
        unfinished,
        "cancelled",
        fields={"done_ms": now_ms},
        drop=("waiting",),
        active="rem",
    )
    return json_response(await _view(store, await _reread(store, state.record)))


@routes.route(
    "GET",
    "/v1/campaigns/{id}/recipients",
    ids={"id": "cmp"},
    scope="read:campaigns",
    query=RecipientsQuery,
    response=RecipientList,
    summary="The campaign's failed recipients, with the reason (paginated)",
    tag=TAG,
)
async def campaign_recipients(request: web.Request, query: RecipientsQuery) -> web.Response:
    store, state = await _own(request)
    filters = {"campaign": state.record.id, "status": query.status}
    after = decode_cursor(query.cursor, filters)
    found, has_more = await store.failed_page(
        state.record.workspace, state.record.id, limit=query.limit, after=after
    )
    data = [
        FailedRecipient(
            subscriber=sub,
            email=f.email,
            status="failed",
            reason=f.reason,
            code=f.code,
            message_id=f.message_id,
            failed_at=_at(f.at_ms),
        )
        for sub, f in found
    ]
    last = found[-1][0] if found else None
    return list_response(request, data, has_more=has_more, last_id=last, filters=filters)


@routes.route(
    "POST",
    "/v1/campaigns/{id}/retry-failed",
    ids={"id": "cmp"},
    scope="write:campaigns",
    response=RetryAccepted,
    status=202,
    summary="Send the failed recipients again (each gets one new message)",
    tag=TAG,
    responses=_STATE,
)
async def retry_failed(request: web.Request) -> web.Response:
    store, state = await _own(request)
    done, count = await store.retry_failed(state.record.workspace, state.record.id)
    if not done.done:
        raise _status_error(done.previous, "retry the failed recipients of")
    after = await _reread(store, state.record)
    return json_response(
        RetryAccepted(id=state.record.id, retrying=count, status=after.status),  # type: ignore[arg-type]
        status=202,
    )


# --- checks -------------------------------------------------------------------------------------------
async def _checked(request: web.Request, record: CampaignRecord) -> None:
    """Every reference of the record exists in the workspace, the window is valid; else 422 with a
    pointer at the first wrong field. Nothing is written before this passes."""
    redis = request.app[SERVICES].redis
    workspace = record.workspace
    if record.window is not None:
        try:
            send_window.check(record.window)
        except send_window.InvalidWindow as exc:
            code = "invalid_timezone" if exc.field == "timezone" else "invalid_window"
            raise validation_error(f"#/window/{exc.field}", exc.detail, code) from None
    lists = ListStore(redis)
    for field in ("lists", "exclude_lists"):
        ids = getattr(record.audience, field)
        live = await lists.existing(workspace, [i for i in ids if is_id(i, "lst")])
        for index, list_id in enumerate(ids):
            if list_id not in live:
                raise validation_error(
                    f"#/audience/{field}/{index}", f"no list {list_id} in this workspace", "unknown_list"
                )
    segments = SegmentStore(redis)
    for index, segment_id in enumerate(record.audience.segments):
        if not is_id(segment_id, "seg") or await segments.get(workspace, segment_id) is None:
            raise validation_error(
                f"#/audience/segments/{index}",
                f"no segment {segment_id} in this workspace",
                "unknown_segment",
            )
    templates = TemplateStore(redis)
    refs: list[tuple[str, CampaignTemplate]] = []
    if record.template is not None:
        refs.append(("#/template", record.template))
    for index, variant in enumerate(record.ab_test.variants if record.ab_test else []):
        if variant.template is not None:
            refs.append((f"#/ab_test/variants/{index}/template", variant.template))
    for pointer, ref in refs:
        found = (
            is_id(ref.id, "tpl") and await templates.get_version(workspace, ref.id, ref.version) is not None
        )
        if not found:
            what = ref.id if ref.version is None else f"{ref.id} version {ref.version}"
            raise validation_error(
                pointer + "/id", f"no template {what} in this workspace", "unknown_template"
            )
    if record.template is not None and (record.html is not None or record.text is not None):
        raise validation_error("#/template", "give a template or html/text, not both", "invalid_content")


def _require_content(record: CampaignRecord) -> None:
    """Every variant (or the campaign alone) has a body and a subject (a template brings its own)."""
    variants = record.ab_test.variants if record.ab_test else []
    has_body = record.template is not None or record.html is not None or record.text is not None
    if not has_body and not (variants and all(v.template or v.html or v.text for v in variants)):
        raise validation_error("#/template", "a campaign needs a template, html or text", "missing_content")
    has_subject = record.template is not None or bool(record.subject)
    if not has_subject and not (variants and all(v.subject or v.template for v in variants)):
        raise validation_error(
            "#/subject", "a campaign without a template needs a subject", "missing_subject"
        )
    if not record.audience.lists and not record.audience.segments:
        raise validation_error("#/audience", "the audience names no list or segment", "empty_audience")


async def _pinned(request: web.Request, record: CampaignRecord) -> CampaignRecord:
    """The record with every template's version fixed to the newest at launch (when not given)."""
    templates = TemplateStore(request.app[SERVICES].redis)

    async def pin(ref: CampaignTemplate | None) -> CampaignTemplate | None:
        if ref is None or ref.version is not None:
            return ref
        newest = await templates.get_version(record.workspace, ref.id)
        if newest is None:
            raise validation_error(
                "#/template/id", f"no template {ref.id} in this workspace", "unknown_template"
            )
        return CampaignTemplate(id=ref.id, version=newest.version)

    ab_test = record.ab_test
    if ab_test is not None:
        variants = [msgspec.structs.replace(v, template=await pin(v.template)) for v in ab_test.variants]
        ab_test = msgspec.structs.replace(ab_test, variants=variants)
    return msgspec.structs.replace(record, template=await pin(record.template), ab_test=ab_test)


async def _eligible_lists(request: web.Request, record: CampaignRecord) -> list[str]:
    """The lists a recipient must still be subscribed to (one of) when their message is made: the
    campaign's lists and its segments' lists; empty (no list check) when a segment spans every list."""
    lists = list(record.audience.lists)
    segments = SegmentStore(request.app[SERVICES].redis)
    for segment_id in record.audience.segments:
        segment = await segments.get(record.workspace, segment_id)
        if segment is None or not segment.lists:
            return []
        lists += segment.lists
    return list(dict.fromkeys(lists))


async def _require_audience(request: web.Request, record: CampaignRecord) -> None:
    """422 `empty_audience` when no list or segment holds a subscribed member now. (Exclusions and
    suppressions are applied while the audience is snapshotted; a campaign they empty completes.)"""
    redis = request.app[SERVICES].redis
    async with redis.pipeline(transaction=False) as pipe:
        for list_id in record.audience.lists:
            pipe.zcard(keyspace.list_members(record.workspace, list_id, "subscribed"))
        sizes = await pipe.execute()
    if any(sizes):
        return
    segments = SegmentStore(redis)
    for segment_id in record.audience.segments:
        segment = await segments.get(record.workspace, segment_id)
        if segment is None:
            continue
        try:
            count = await reader_for(request.app).segment_count(
                record.workspace, SegmentQuery(lists=tuple(segment.lists), filter=segment.filter)
            )
        except (InvalidQuery, StoreUnavailable):
            raise ApiError(
                "unavailable", "The analytics store could not count a segment", headers={"Retry-After": "5"}
            ) from None
        if count:
            return
    raise validation_error(
        "#/audience", "no list or segment of the audience has a subscribed member", "empty_audience"
    )


# --- helpers ------------------------------------------------------------------------------------------
def campaign_event(record: CampaignRecord, kind: str, now: datetime, data: dict[str, Any]) -> Event:
    return Event(
        id=new_id("evt"),
        type=kind,
        created_at=now,
        workspace=record.workspace,
        data={"campaign": {"id": record.id, "name": record.name}, **data},
    )


async def _move(
    store: CampaignStore,
    record: CampaignRecord,
    action: str,
    allowed: tuple[str, ...],
    to: str,
    **options: Any,
) -> None:
    """The campaign from one of `allowed` to `to` (one script, `CampaignStore.transition`), or 409 naming
    the `action` and the status it found (404 when the campaign is gone)."""
    done = await store.transition(record.workspace, record.id, allowed, to, **options)
    if not done.done:
        raise _status_error(done.previous, action)


def _status_error(status: str, action: str) -> ApiError:
    if not status:
        return not_found("campaign")
    return ApiError("invalid_campaign_status", f"Cannot {action} a {status} campaign")


@routes.route(
    "GET",
    "/v1/campaigns/{id}/report",
    ids={"id": "cmp"},
    scope="read:campaigns",
    query=CampaignReportQuery,
    response=CampaignReport,
    summary="The campaign's report from the analytics store: totals, links, domains, providers, variants, "
    "timeline",
    tag=TAG,
    responses={503: "The analytics store is unavailable"},
)
async def campaign_report(request: web.Request, query: CampaignReportQuery) -> web.Response:
    _, state = await _own(request)
    async with analytics_errors():
        report = await reader_for(request.app).campaign_report(state.record.workspace, state.record.id, query)
    return json_response(report)


async def _own(request: web.Request) -> tuple[CampaignStore, CampaignState]:
    store = CampaignStore(request.app[SERVICES].redis)
    state = await store.get(principal(request).workspace, request.match_info["id"])
    if state is None:
        raise not_found("campaign")
    return store, state


async def _reread(store: CampaignStore, record: CampaignRecord) -> CampaignState:
    state = await store.get(record.workspace, record.id)
    if state is None:
        raise not_found("campaign")
    return state


def _at(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
