"""`/v1/lists`: lists, their members and bulk upserts (read:/write:lists; MARKETING.md)."""

from __future__ import annotations

import gc
import time

import msgspec
from aiohttp import web

from ingress.audience_views import list_view, subscriber_view
from ingress.confirmation import send_confirmations
from ingress.context import SERVICES, principal
from ingress.pagination import PageQuery, decode_cursor, list_response
from ingress.problems import ApiError, not_found, validation_error
from ingress.routing import RouteTable, json_response
from schemas.addresses import AddressError, parse_address
from schemas.audience import (
    MEMBER_STATUSES,
    BulkResult,
    BulkUpsert,
    CreateList,
    Deleted,
    ListPage,
    ListRecord,
    MailingList,
    MemberQuery,
    RejectedItem,
    RemoveQuery,
    Subscriber,
    SubscriberInput,
    SubscriberPage,
    UpdateList,
)
from schemas.domain_names import normalise_email
from schemas.ids import has_prefix, new_id
from schemas.subscriber_items import checked_items
from schemas.suppressions import SuppressionEntry
from store.lists import ListStore
from store.subscribers import Conflict, SubscriberStore
from store.suppressions import add_suppressions

routes = RouteTable()
TAG = "lists"


def now_ms() -> int:
    return int(time.time() * 1000)


@routes.route(
    "POST",
    "/v1/lists",
    scope="write:lists",
    body=CreateList,
    response=MailingList,
    status=201,
    summary="Create a list (`opt_in: double` needs `confirmation_from`)",
    tag=TAG,
)
async def create_list(request: web.Request, body: CreateList) -> web.Response:
    checked_opt_in(body.opt_in, body.confirmation_from, body.confirmation_template)
    at = now_ms()
    record = ListRecord(
        id=new_id("lst"),
        workspace=principal(request).workspace,
        name=body.name,
        description=body.description,
        opt_in=body.opt_in,
        confirmation_from=body.confirmation_from,
        confirmation_template=body.confirmation_template,
        created_ms=at,
        updated_ms=at,
    )
    await ListStore(request.app[SERVICES].redis).save(record, new=True)
    return json_response(await _view(request, record), status=201)


@routes.route(
    "GET", "/v1/lists", scope="read:lists", query=PageQuery, response=ListPage, summary="List lists", tag=TAG
)
async def list_lists(request: web.Request, query: PageQuery) -> web.Response:
    store = ListStore(request.app[SERVICES].redis)
    workspace = principal(request).workspace
    records, has_more = await store.page(workspace, limit=query.limit, after=decode_cursor(query.cursor, {}))
    counts = await store.counts(workspace, [r.id for r in records])
    views = [list_view(r, c) for r, c in zip(records, counts, strict=True)]
    return list_response(
        request, views, has_more=has_more, last_id=records[-1].id if records else None, filters={}
    )


@routes.route(
    "GET",
    "/v1/lists/{id}",
    ids={"id": "lst"},
    scope="read:lists",
    response=MailingList,
    summary="Get a list with its subscriber counts by status",
    tag=TAG,
)
async def get_list(request: web.Request) -> web.Response:
    return json_response(await _view(request, await own_list(request)))


@routes.route(
    "PATCH",
    "/v1/lists/{id}",
    ids={"id": "lst"},
    scope="write:lists",
    body=UpdateList,
    response=MailingList,
    summary="Change a list",
    tag=TAG,
)
async def update_list(request: web.Request, body: UpdateList) -> web.Response:
    record = await own_list(request)
    for name in UpdateList.__struct_fields__:
        value = getattr(body, name)
        if value is not msgspec.UNSET:
            setattr(record, name, value)
    checked_opt_in(record.opt_in, record.confirmation_from, record.confirmation_template)
    record.updated_ms = now_ms()
    await ListStore(request.app[SERVICES].redis).save(record)
    return json_response(await _view(request, record))


@routes.route(
    "DELETE",
    "/v1/lists/{id}",
    ids={"id": "lst"},
    scope="write:lists",
    response=Deleted,
    summary="Delete a list and its memberships (the subscribers stay)",
    tag=TAG,
)
async def delete_list(request: web.Request) -> web.Response:
    record = await own_list(request)
    await ListStore(request.app[SERVICES].redis).delete(record.workspace, record.id)
    return json_response(Deleted(id=record.id, object="list"))


@routes.route(
    "POST",
    "/v1/lists/{id}/subscribers",
    ids={"id": "lst"},
    scope="write:lists",
    body=BulkUpsert,
    response=BulkResult,
    summary="Add or update 1 to 10,000 subscribers (upsert by email; a null attribute deletes it)",
    tag=TAG,
)
async def upsert_subscribers(request: web.Request, body: BulkUpsert) -> web.Response:
    """Answers with a `Server-Timing` header: where the handler's time went (items checked, read and
    planned, written, confirmations) and the garbage collections during it, so that a slow request
    says why (`bench/audience.py` prints the slowest ones)."""
    timing = PhaseTimer()
    target = await own_list(request)
    services = request.app[SERVICES]
    items: list[SubscriberInput] = []
    rejected: list[RejectedItem] = []
    for index, checked in enumerate(checked_items(body.subscribers)):
        if isinstance(checked, SubscriberInput):
            items.append(checked)
        else:
            rejected.append(RejectedItem(index=index, error=checked))
    timing.mark("check")
    at = now_ms()
    store = SubscriberStore(services.redis)
    try:
        staged = await store.plan_upsert(target, items, mode=body.mode, now_ms=at)
        timing.mark("plan")
        plan = await store.commit_upsert(staged)
        timing.mark("write")
    except Conflict:
        raise ApiError("conflict", "The subscribers changed under this request; retry it") from None
    await send_confirmations(services, principal(request), target, plan.confirmations, at)
    timing.mark("confirm")
    result = BulkResult(
        created=plan.count("created"),
        updated=plan.count("updated"),
        unchanged=plan.count("unchanged"),
        rejected=rejected,
    )
    return json_response(result, headers={"Server-Timing": timing.header()})


class PhaseTimer:
    """Wall time per phase of a handler, and the garbage collections meanwhile, as `Server-Timing`."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.phases: list[tuple[str, float]] = []
        self.collections = [g["collections"] for g in gc.get_stats()]

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases.append((phase, (now - self.last) * 1000))
        self.last = now

    def header(self) -> str:
        collected = [
            g["collections"] - before for g, before in zip(gc.get_stats(), self.collections, strict=True)
        ]
        parts = [f"{phase};dur={ms:.1f}" for phase, ms in self.phases]
        return ", ".join([*parts, f'gc;desc="{"/".join(map(str, collected))}"'])


@routes.route(
    "GET",
    "/v1/lists/{id}/subscribers",
    ids={"id": "lst"},
    scope="read:lists",
    query=MemberQuery,
    response=SubscriberPage,
    summary="The list's subscribers, newest first, filtered by membership status or email",
    tag=TAG,
)
async def list_members(request: web.Request, query: MemberQuery) -> web.Response:
    target = await own_list(request)
    redis = request.app[SERVICES].redis
    filters = {"list": target.id, "status": query.status, "email": query.email}
    after = decode_cursor(query.cursor, filters)
    subscribers = SubscriberStore(redis)
    if query.email is not None:
        ids, has_more = await _by_email(subscribers, target.workspace, query.email), False
    else:
        statuses = (query.status,) if query.status else MEMBER_STATUSES
        ids, has_more = await ListStore(redis).member_page(
            target.workspace, target.id, statuses=statuses, limit=query.limit, after=after
        )
    records = await subscribers.many(target.workspace, ids)
    wanted = [r for r in records if target.id in r.lists]
    if query.status is not None:
        wanted = [r for r in wanted if r.lists[target.id].status == query.status]
    views = [subscriber_view(r, {target.id}) for r in wanted]
    return list_response(request, views, has_more=has_more, last_id=ids[-1] if ids else None, filters=filters)


@routes.route(
    "DELETE",
    "/v1/lists/{id}/subscribers/{sid}",
    ids={"id": "lst", "sid": "sub"},
    scope="write:lists",
    query=RemoveQuery,
    response=Subscriber,
    summary="Take a subscriber off the list; `mode=unsubscribe` keeps the membership as unsubscribed and "
    "suppresses the address for this list",
    tag=TAG,
)
async def remove_member(request: web.Request, query: RemoveQuery) -> web.Response:
    target = await own_list(request)
    redis = request.app[SERVICES].redis
    store, subscriber_id = SubscriberStore(redis), request.match_info["sid"]
    record = await store.get(target.workspace, subscriber_id)
    if record is None or target.id not in record.lists:
        raise not_found("subscriber on this list")
    if query.mode == "unsubscribe":
        record = await unsubscribe(redis, target.workspace, record.id, target.id, source="api")
    else:
        await store.remove_from_list(target.workspace, subscriber_id, target.id, now_ms())
        record = await store.get(target.workspace, subscriber_id)
    if record is None:
        raise not_found("subscriber on this list")
    return json_response(subscriber_view(record))


async def unsubscribe(redis, workspace: str, subscriber_id: str, list_id: str, *, source: str):
    """Membership `unsubscribed` (+ `subscriber.unsubscribed`) and a list-scope suppression."""
    record = await SubscriberStore(redis).set_status(
        workspace, subscriber_id, list_id, "unsubscribed", now_ms()
    )
    if record is not None:
        entry = SuppressionEntry(
            email=record.email, reason="unsubscribe", scope="list", scope_value=list_id, source=source
        )
        await add_suppressions(redis, workspace, [entry])
    return record


async def _by_email(store: SubscriberStore, workspace: str, email: str) -> list[str]:
    try:
        found = await store.id_for(workspace, normalise_email(email))
    except ValueError:
        raise validation_error("#/query/email", "not an email address", "invalid_email") from None
    return [] if found is None else [found]


def checked_opt_in(opt_in: str, sender: str | None, template: str | None) -> None:
    if opt_in == "double" and not sender:
        raise validation_error(
            "#/confirmation_from",
            "a double opt-in list needs the sender of its confirmation mail",
            "missing_field",
        )
    if sender:
        try:
            parse_address(sender)
        except AddressError as exc:
            raise validation_error("#/confirmation_from", exc.detail, exc.code) from None
    if template is not None and not has_prefix(template, "tpl"):
        raise validation_error("#/confirmation_template", "a template id (tpl_…)", "invalid_template_id")


async def own_list(request: web.Request) -> ListRecord:
    list_id = request.match_info["id"]
    record = await ListStore(request.app[SERVICES].redis).get(principal(request).workspace, list_id)
    if record is None:
        raise not_found("list")
    return record


async def _view(request: web.Request, record: ListRecord) -> MailingList:
    [count] = await ListStore(request.app[SERVICES].redis).counts(record.workspace, [record.id])
    return list_view(record, count)
