"""`/v1/automations` (MARKETING.md "Automations"; read:/write:automations): definitions, versions, runs.

A create or an update is checked whole before anything is written (`schemas.automations.check_definition`:
graph, waits, conditions, templates and the variables they require, webhook URLs) and answers every
problem at once (422 with pointers). Send steps' templates are pinned to their newest version at save
time when the step names none, so a later template edit changes new versions of the automation only.
An api trigger writes the run straight into Redis (store/automation_runs.py); the runner actor takes it
from there, so the 202 costs no actor call. Triggers arriving together are checked and written together
(`_trigger_batch`): per batch one script reads what the checks need and one start script per automation
writes the runs with the 202s' audit entries — two round trips a batch, not four and an audit append a
request.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
from aiohttp import web

from ingress.audit import AUDITED, entry_bytes
from ingress.context import IDEMPOTENCY, REQUEST_ID, SERVICES, principal
from ingress.idempotency import NOT_STORED, DeferredClaim, claim_and_run, replay
from ingress.pagination import PageQuery, decode_cursor, encode_cursor, list_response
from ingress.problems import ApiError, error_response, not_found
from ingress.routing import DEFINITION_MAX_BODY, RouteTable, json_response
from schemas.audience import SubscriberRecord, subscriber_decoder
from schemas.automations import (
    STATUS_CODES,
    STATUS_NAMES,
    ApiTrigger,
    Automation,
    AutomationList,
    AutomationRecord,
    CreateAutomation,
    Definition,
    DeletedAutomation,
    HistoryView,
    Run,
    RunList,
    RunQuery,
    RunRecord,
    ScheduleTrigger,
    SendStep,
    Step,
    TemplateRef,
    Trigger,
    TriggerAccepted,
    TriggerBody,
    UpdateAutomation,
    check_definition,
    data_problems,
    record_decoder,
)
from schemas.domain_names import normalise_email
from schemas.events import Event
from schemas.ids import derived_id, new_id
from schemas.problems import FieldError
from schemas.schedules import next_due
from security.ssrf import ForbiddenUrl, check_webhook_url
from security.webhook_signing import derived_webhook_secret
from store.automation_runs import (
    EMAIL_SLOT,
    SUBSCRIBER_SLOT,
    ApiGroup,
    ApiIdempotency,
    ApiStart,
    ApiTriggerStore,
    NewRun,
    RunStore,
    Transition,
)
from store.automations import AutomationStore
from store.coalescer import Backpressure, Coalescer
from store.idempotency import StoredResponse, decode_headers, encode_headers, new_token
from store.templates import TemplateStore

routes = RouteTable()
TAG = "automations"


class AutomationView(Automation, kw_only=True):
    webhook_secret: str | None = None  # signs this automation's webhook steps (derived, never stored)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def view(request: web.Request, head: AutomationRecord, definition: Definition) -> AutomationView:
    secret_key = request.app[SERVICES].settings.secret_key
    return AutomationView(
        id=head.id,
        name=head.name,
        status=head.status,
        version=head.version,
        reentry=definition.reentry,
        trigger=definition.trigger,
        steps=definition.steps,
        created_at=head.created_at,
        updated_at=head.updated_at,
        webhook_secret=derived_webhook_secret(secret_key, f"{head.workspace}|{head.id}")
        if secret_key
        else None,
    )


async def checked(request: web.Request, workspace: str, trigger: Trigger, steps: list[Step]) -> list[Step]:
    """The steps with every send step's template pinned to a version; 422 naming every problem."""
    settings = request.app[SERVICES].settings
    templates = TemplateStore(request.app[SERVICES].redis)
    required: dict[tuple[str, int | None], set[str] | None] = {}
    pinned: list[Step] = []
    for step in steps:
        if isinstance(step, SendStep):
            found = await templates.get_version(workspace, step.template.id, step.template.version)
            names = None if found is None else {n for n, spec in found.variables.items() if spec.required}
            required[(step.template.id, step.template.version)] = names
            if found is not None and step.template.version is None:
                pin = TemplateRef(id=step.template.id, version=found.version)
                required[(pin.id, pin.version)] = names
                pinned.append(msgspec.structs.replace(step, template=pin))
                continue
        pinned.append(step)

    def refuse(url: str) -> tuple[str, str] | None:
        try:
            check_webhook_url(
                url, allow_http=settings.allow_http_webhooks, allow_private=settings.allow_private_webhooks
            )
        except ForbiddenUrl as exc:
            return exc.code, exc.detail
        return None

    errors = check_definition(trigger, steps, templates=required, refuse_url=refuse)
    if errors:
        raise ApiError("validation_error", "The automation is invalid", errors=errors)
    return pinned


def _next_fire(trigger: Trigger, now_ms: int) -> int | None:
    if isinstance(trigger, ScheduleTrigger):
        return next_due(trigger.cron, trigger.timezone, now_ms)
    return None


@routes.route(
    "POST",
    "/v1/automations",
    scope="write:automations",
    body=CreateAutomation,
    response=AutomationView,
    status=201,
    summary="Create an automation (version 1)",
    tag=TAG,
)
async def create_automation(request: web.Request, body: CreateAutomation) -> web.Response:
    workspace = principal(request).workspace
    steps = await checked(request, workspace, body.trigger, list(body.steps))
    now = datetime.fromtimestamp(request.app[SERVICES].clock(), UTC)
    head = AutomationRecord(
        id=new_id("aut"),
        workspace=workspace,
        name=body.name,
        status=body.status,
        version=1,
        created_at=now,
        updated_at=now,
    )
    definition = Definition(
        version=1, trigger=body.trigger, steps=steps, reentry=body.reentry, created_at=now
    )
    await AutomationStore(request.app[SERVICES].redis).create(
        head, definition, next_fire_ms=_next_fire(body.trigger, _ms(now))
    )
    return json_response(view(request, head, definition), status=201)


@routes.route(
    "GET",
    "/v1/automations",
    scope="read:automations",
    query=PageQuery,
    response=AutomationList,
    summary="List automations, newest first",
    tag=TAG,
)
async def list_automations(request: web.Request, query: PageQuery) -> web.Response:
    after = decode_cursor(query.cursor, {})
    store = AutomationStore(request.app[SERVICES].redis)
    found, has_more = await store.page(principal(request).workspace, limit=query.limit, after=after)
    last = found[-1][0].id if found else None
    return list_response(
        request, [view(request, h, d) for h, d in found], has_more=has_more, last_id=last, filters={}
    )


@routes.route(
    "GET",
    "/v1/automations/{id}",
    ids={"id": "aut"},
    scope="read:automations",
    response=AutomationView,
    summary="Get an automation (its newest version)",
    tag=TAG,
)
async def get_automation(request: web.Request) -> web.Response:
    head, definition = await _own(request)
    return json_response(view(request, head, definition))


@routes.route(
    "PATCH",
    "/v1/automations/{id}",
    ids={"id": "aut"},
    scope="write:automations",
    body=UpdateAutomation,
    response=AutomationView,
    summary="Change an automation: a new version if trigger, steps or reentry change (runs keep theirs)",
    tag=TAG,
)
async def update_automation(request: web.Request, body: UpdateAutomation) -> web.Response:
    head, current = await _own(request)
    workspace = head.workspace
    now = datetime.fromtimestamp(request.app[SERVICES].clock(), UTC)
    trigger = current.trigger if body.trigger is msgspec.UNSET else body.trigger
    raw_steps = current.steps if body.steps is msgspec.UNSET else list(body.steps)
    reentry = current.reentry if body.reentry is msgspec.UNSET else body.reentry
    new = None
    if (
        body.trigger is not msgspec.UNSET
        or body.steps is not msgspec.UNSET
        or body.reentry is not msgspec.UNSET
    ):
        steps = await checked(request, workspace, trigger, raw_steps)
        new = Definition(
            version=current.version + 1, trigger=trigger, steps=steps, reentry=reentry, created_at=now
        )
    changed = msgspec.structs.replace(
        head,
        name=head.name if body.name is msgspec.UNSET else body.name,
        status=head.status if body.status is msgspec.UNSET else body.status,
        version=new.version if new is not None else head.version,
        updated_at=now,
    )
    return await _save(request, changed, new, current, now)


async def _save(
    request: web.Request, head: AutomationRecord, new: Definition | None, current: Definition, now: datetime
) -> web.Response:
    store = AutomationStore(request.app[SERVICES].redis)
    definition = new or current
    if not await store.save(head, new, current, next_fire_ms=_next_fire(definition.trigger, _ms(now))):
        raise ApiError("conflict", "The automation changed meanwhile (or was deleted); read it again")
    return json_response(view(request, head, definition))


@routes.route(
    "POST",
    "/v1/automations/{id}/activate",
    ids={"id": "aut"},
    scope="write:automations",
    response=AutomationView,
    summary="Activate: its trigger starts runs",
    tag=TAG,
)
async def activate_automation(request: web.Request) -> web.Response:
    return await _set_status(request, "active")


@routes.route(
    "POST",
    "/v1/automations/{id}/pause",
    ids={"id": "aut"},
    scope="write:automations",
    response=AutomationView,
    summary="Pause: its trigger starts no runs and its started runs hold where they are",
    tag=TAG,
)
async def pause_automation(request: web.Request) -> web.Response:
    return await _set_status(request, "paused")


async def _set_status(request: web.Request, status: str) -> web.Response:
    head, current = await _own(request)
    now = datetime.fromtimestamp(request.app[SERVICES].clock(), UTC)
    changed = msgspec.structs.replace(head, status=status, updated_at=now)
    return await _save(request, changed, None, current, now)


@routes.route(
    "DELETE",
    "/v1/automations/{id}",
    ids={"id": "aut"},
    scope="write:automations",
    response=DeletedAutomation,
    summary="Delete an automation, its versions and its runs (live runs stop)",
    tag=TAG,
)
async def delete_automation(request: web.Request) -> web.Response:
    head, _ = await _own(request)
    await AutomationStore(request.app[SERVICES].redis).delete(head.workspace, head.id)
    return json_response(DeletedAutomation(id=head.id))


@routes.route(
    "POST",
    "/v1/automations/{id}/trigger",
    ids={"id": "aut"},
    scope="write:automations",
    body=TriggerBody,
    response=TriggerAccepted,
    status=202,
    summary="Start a run for one subscriber (an `api` trigger); Idempotency-Key honoured",
    tag=TAG,
    max_body=DEFINITION_MAX_BODY,
    own_idempotency=True,
)
async def trigger_automation(request: web.Request, body: TriggerBody) -> web.StreamResponse:
    services = request.app[SERVICES]
    try:
        email: str | None = normalise_email(body.email)
    except ValueError:
        email = None  # refused below, once the automation is known to exist (404 first)
    automation_id = request.match_info["id"]
    deferred = request.get(IDEMPOTENCY)
    item = _TriggerItem(
        workspace=principal(request).workspace,
        automation_id=automation_id,
        email=email,
        data=body.data,
        key_id=principal(request).key.id,
        idempotency_key=request.headers.get("Idempotency-Key"),
        now_ms=int(services.clock() * 1000),
        # The 202's audit entry rides in the start script (as the send path's does in its enqueue); any
        # other answer is audited by the middleware as before.
        audit=await entry_bytes(request, 202, automation_id),
        claim=deferred if isinstance(deferred, DeferredClaim) else None,
    )
    try:
        outcome = await _api_batcher(services.redis).submit(item)
    except Backpressure:
        raise ApiError(
            "unavailable", "Too many triggers are waiting; retry shortly", headers={"Retry-After": "1"}
        ) from None
    if outcome is _SLOWER_PATH:  # reentry `never`: its run id needs the subscriber's id (a second trip)
        if item.claim is None:
            return await _trigger_by_lookup(request, item)
        return await claim_and_run(request, item.claim, partial(_trigger_by_lookup, item=item))
    if item.claim is not None:
        item.claim.taken = (
            True  # the script saw the key: stored, refused or left free as the middleware would
        )
    if isinstance(outcome, ApiError):
        raise outcome
    assert isinstance(outcome, _Answer)
    if outcome.replay is not None:
        return replay(outcome.replay)
    if outcome.error is not None:  # claimed by the script: stored as the middleware stores a problem
        assert item.claim is not None
        response = error_response(outcome.error, request[REQUEST_ID])
        headers = {h: response.headers[h] for h in ("Content-Type", "Location") if h in response.headers}
        assert isinstance(response.body, bytes)
        stored = StoredResponse(response.status, response.body, headers)
        await item.claim.store.complete(item.claim.key, outcome.token, stored)
        return response
    request[AUDITED] = outcome.audited
    return json_response(TriggerAccepted(run=outcome.run_id), status=202)


async def _trigger_by_lookup(request: web.Request, item: _TriggerItem) -> web.Response:
    """The trigger of a `never` automation: the lookup script, the checks, then the start script."""
    try:
        outcome = await _batcher(request.app[SERVICES].redis).submit(item)
    except Backpressure:
        raise ApiError(
            "unavailable", "Too many triggers are waiting; retry shortly", headers={"Retry-After": "1"}
        ) from None
    if isinstance(outcome, ApiError):
        raise outcome
    run_id, audited = outcome
    request[AUDITED] = audited
    return json_response(TriggerAccepted(run=run_id), status=202)


class _TriggerItem(msgspec.Struct, kw_only=True):
    workspace: str
    automation_id: str
    email: str | None
    data: dict
    key_id: str
    idempotency_key: str | None
    now_ms: int
    audit: bytes | None = None
    claim: DeferredClaim | None = None  # the Idempotency-Key, for the batch's script to claim


# (run id, whether its audit entry was written with it) or the problem to answer.
_Outcome = tuple[str, bool] | ApiError

# Triggers arriving together cross to Redis together (store/coalescer.py): per workspace, one script reads
# the heads, the addresses' subscriber ids and their records; then one start script per automation writes
# the runs (and the 202s' audit entries). Per request that was four round trips and an audit append, each
# holding one of the pool's connections: at a few hundred triggers a second on a loaded machine the pool
# ran dry (500s) before the CPU did.
_Item = TypeVar("_Item")
_Result = TypeVar("_Result")
_Batchers = weakref.WeakKeyDictionary[aioredis.Redis, tuple[asyncio.AbstractEventLoop, Coalescer[Any, Any]]]


def _loop_batcher(
    batchers: _Batchers,
    redis: aioredis.Redis,
    make: Callable[[], Callable[[list[_Item]], Awaitable[list[_Result]]]],
) -> Coalescer[_Item, _Result]:
    """One coalescer per Redis client and event loop (a batch in flight belongs to its loop). Its batch
    function is made once, with it (`make`): its stores register their scripts, a SHA-1 of each text."""
    loop = asyncio.get_running_loop()
    found = batchers.get(redis)
    if found is None or found[0] is not loop:
        batcher = Coalescer(make(), max_in_flight=2, max_batch=500, max_pending=20_000, inline_alone=True)
        found = batchers[redis] = (loop, batcher)
    return found[1]


_batchers: _Batchers = weakref.WeakKeyDictionary()


def _batcher(redis: aioredis.Redis) -> Coalescer[_TriggerItem, _Outcome]:
    return _loop_batcher(
        _batchers, redis, lambda: partial(_trigger_batch, AutomationStore(redis), RunStore(redis))
    )


async def _trigger_batch(store: AutomationStore, runs: RunStore, items: list[_TriggerItem]) -> list[_Outcome]:
    heads: dict[tuple[str, str], AutomationRecord | None] = {}
    subscriber_ids: dict[tuple[str, str], str | None] = {}
    subscribers: dict[tuple[str, str], SubscriberRecord] = {}
    by_workspace: dict[str, tuple[set[str], set[str]]] = {}
    for i in items:
        automations, emails = by_workspace.setdefault(i.workspace, (set(), set()))
        automations.add(i.automation_id)
        if i.email is not None:
            emails.add(i.email)
    for workspace, (automation_set, email_set) in by_workspace.items():
        automation_ids, addresses = sorted(automation_set), sorted(email_set)
        found_heads, found_subscribers = await store.trigger_lookup(workspace, automation_ids, addresses)
        for automation_id, head in zip(automation_ids, found_heads, strict=True):
            heads[(workspace, automation_id)] = head
        for email, found in zip(addresses, found_subscribers, strict=True):
            subscriber_ids[(workspace, email)] = found[0] if found else None
            if found is not None:
                subscribers[(workspace, found[0])] = subscriber_decoder.decode(found[1])
    definitions = {}
    for key, head in heads.items():
        if head is not None:
            definitions[key] = await _definition(store, head)
    outcomes: list[_Outcome | None] = []
    starts: dict[tuple[str, str], list[tuple[int, NewRun]]] = {}
    for index, item in enumerate(items):
        key = (item.workspace, item.automation_id)
        head, definition = heads.get(key), definitions.get(key)
        subscriber_id = subscriber_ids.get((item.workspace, item.email)) if item.email else None
        subscriber = subscribers.get((item.workspace, subscriber_id)) if subscriber_id else None
        checked = _check_trigger(item, head, definition, subscriber)
        if isinstance(checked, ApiError):
            outcomes.append(checked)
            continue
        outcomes.append(None)
        starts.setdefault(key, []).append((index, checked))
    for (workspace, automation_id), pending in starts.items():
        definition = definitions[(workspace, automation_id)]
        assert definition is not None
        written = await runs.start(
            workspace,
            automation_id,
            [start for _, start in pending],
            after_exit=definition.reentry == "after_exit",
        )
        for (index, start), outcome in zip(pending, written, strict=True):
            answer = _started(items[index], definition, start.run_id, outcome)
            outcomes[index] = answer if isinstance(answer, ApiError) else (answer, outcome == "created")
    return [
        o if o is not None else ApiError("internal_error", "The trigger was not handled") for o in outcomes
    ]


def _check_trigger(
    item: _TriggerItem,
    head: AutomationRecord | None,
    definition: Definition | None,
    subscriber: SubscriberRecord | None,
) -> NewRun | ApiError:
    """The run this trigger starts, or the problem to answer: in the order the checks were always made
    (the automation's and the address's first, `_head_problem`, then the subscriber's)."""
    problem = _head_problem(item, head, definition)
    if problem is not None:
        return problem
    assert head is not None and definition is not None
    if subscriber is None:
        return ApiError(
            "validation_error",
            "No subscriber has this address",
            errors=[FieldError("#/email", "add the subscriber to a list first", "unknown_subscriber")],
        )
    if subscriber.status == "blocklisted":
        return ApiError(
            "validation_error",
            "The subscriber is blocklisted",
            errors=[
                FieldError(
                    "#/email", "a blocklisted subscriber enters no automation", "subscriber_blocklisted"
                )
            ],
        )
    now_ms = item.now_ms
    created_ms = _ms(head.created_at)
    if definition.reentry == "never":
        run_id = derived_id("run", created_ms, head.id, subscriber.id)
    elif item.idempotency_key is not None:
        # A retry that raced a crash (the run written, the stored answer not) finds the same run.
        run_id = derived_id("run", created_ms, head.id, item.key_id, item.idempotency_key)
    else:
        run_id = new_id("run")
    record = RunRecord(
        subscriber=subscriber.id,
        version=definition.version,
        status="r",
        at=0,
        created_ms=now_ms,
        data=item.data,
    )
    event = Event(
        id=new_id("evt"),
        type="automation.triggered",
        created_at=_at(now_ms),
        workspace=head.workspace,
        data={
            "automation_id": head.id,
            "run_id": run_id,
            "version": definition.version,
            "subscriber": subscriber.id,
            "email": subscriber.email,
            "trigger": "api",
        },
    )
    return NewRun(run_id=run_id, record=record, due_ms=now_ms, event=event, audit=item.audit)


def _started(item: _TriggerItem, definition: Definition, run_id: str, outcome: str) -> str | ApiError:
    if outcome == "exists" and item.idempotency_key is not None and definition.reentry != "never":
        return run_id
    if outcome == "exists":
        return ApiError(
            "conflict", f"This subscriber already entered the automation (reentry `never`): {run_id}"
        )
    if outcome.startswith("live:"):
        return ApiError(
            "conflict", f"This subscriber is in a run of it (reentry `after_exit`): {outcome[5:]}"
        )
    return run_id


# --- the batch of the one-script path (every automation but `never` ones) --------------------------------
class _Answer(msgspec.Struct, kw_only=True):
    run_id: str = ""
    audited: bool = False  # the 202's audit entry was written with the run
    replay: StoredResponse | None = None  # an Idempotency-Key's stored answer
    error: ApiError | None = None  # a problem whose answer is stored under the claim `token`
    token: str = ""


_SLOWER_PATH = _Answer()  # the caller takes `_trigger_by_lookup` (reentry `never`)
_ApiOutcome = _Answer | ApiError

# What the batch checks from the automation's head, per process: (the head's bytes, the head, its
# definition), b"" and None when absent or not read yet. Never trusted alone: the script compares the bytes
# with the stored head and answers the new ones when they differ (then the batch checks again).
_heads: dict[tuple[str, str], tuple[bytes, AutomationRecord | None, Definition | None]] = {}
_ATTEMPTS = (
    4  # a head that changes under every attempt answers 409 (an automation edited many times a second)
)
_accepted_headers: bytes | None = None


_api_batchers: _Batchers = weakref.WeakKeyDictionary()


def _api_batcher(redis: aioredis.Redis) -> Coalescer[_TriggerItem, _ApiOutcome]:
    return _loop_batcher(
        _api_batchers, redis, lambda: partial(_api_batch, AutomationStore(redis), ApiTriggerStore(redis))
    )


async def _api_batch(
    store: AutomationStore, api: ApiTriggerStore, items: list[_TriggerItem]
) -> list[_ApiOutcome]:
    """Per workspace one script a round (ApiTriggerStore): the subscriber lookups, the starts and the
    Idempotency-Keys' records of every automation whose head is as cached; a second round only for the
    automations whose head changed (or was not cached)."""
    outcomes: list[_ApiOutcome | None] = [None] * len(items)
    pending: dict[tuple[str, str], list[int]] = {}
    for index, item in enumerate(items):
        pending.setdefault((item.workspace, item.automation_id), []).append(index)
    for _ in range(_ATTEMPTS):
        if not pending:
            break
        by_workspace: dict[str, list[tuple[str, str]]] = {}
        for key in pending:
            by_workspace.setdefault(key[0], []).append(key)
        stale: dict[tuple[str, str], list[int]] = {}
        for workspace, keys in by_workspace.items():
            groups: list[ApiGroup] = []
            plans: list[tuple[tuple[str, str], list[tuple[int, ApiError | None, ApiStart | None]]]] = []
            for key in keys:
                raw, head, definition = _heads.get(key, (b"", None, None))
                if definition is not None and definition.reentry == "never":
                    for index in pending[key]:
                        outcomes[index] = _SLOWER_PATH
                    continue
                starts, plan = [], []
                for index in pending[key]:
                    item = items[index]
                    problem = _head_problem(item, head, definition)
                    start = None
                    if problem is None or item.claim is not None:
                        start = _api_start(item, head, definition, problem)
                        starts.append(start)
                    plan.append((index, problem, start))
                groups.append(
                    ApiGroup(
                        automation_id=key[1],
                        head=raw,
                        after_exit=definition is not None and definition.reentry == "after_exit",
                        items=starts,
                    )
                )
                plans.append((key, plan))
            if not groups:
                continue
            for (key, plan), (kind, value) in zip(plans, await api.start(workspace, groups), strict=True):
                if kind == "stale":
                    await _remember(store, key, value)
                    stale[key] = pending[key]
                    continue
                answers = iter(value)
                for index, problem, start in plan:
                    reply = next(answers) if start is not None else None
                    outcomes[index] = _answer(items[index], problem, start, reply)
        pending = stale
    for indexes in pending.values():
        for index in indexes:
            outcomes[index] = ApiError("conflict", "The automation kept changing; try again")
    return [
        o if o is not None else ApiError("internal_error", "The trigger was not handled") for o in outcomes
    ]


async def _remember(store: AutomationStore, key: tuple[str, str], raw: bytes) -> None:
    head = record_decoder.decode(raw) if raw else None
    definition = None if head is None else await _definition(store, head)
    if len(_heads) >= 10_000:
        _heads.clear()
    _heads[key] = (raw, head, definition)


def _head_problem(
    item: _TriggerItem, head: AutomationRecord | None, definition: Definition | None
) -> ApiError | None:
    """What the automation alone refuses (in the order `_check_trigger` checks), and an invalid address."""
    if head is None or definition is None:
        return not_found("automation")
    if not isinstance(definition.trigger, ApiTrigger):
        return ApiError(
            "conflict",
            f"This automation's trigger is `{definition.trigger.__struct_config__.tag}`, not `api`",
        )
    if head.status != "active":
        return ApiError("conflict", "The automation is paused: activate it first")
    problems = data_problems(definition.trigger, item.data)
    if problems:
        return ApiError("validation_error", "The trigger's data is invalid", errors=problems)
    if item.email is None:
        return ApiError(
            "validation_error",
            "Not an email address",
            errors=[FieldError("#/email", "not an email address", "invalid_email")],
        )
    return None


def _api_start(
    item: _TriggerItem, head: AutomationRecord | None, definition: Definition | None, problem: ApiError | None
) -> ApiStart:
    now_ms = item.now_ms
    if head is not None and definition is not None and problem is None:
        if item.idempotency_key is not None:
            # A retry that raced a crash (the run written, the stored answer not) finds the same run.
            run_id = derived_id("run", _ms(head.created_at), head.id, item.key_id, item.idempotency_key)
        else:
            run_id = new_id("run")
        version = definition.version
    else:  # only its Idempotency-Key is looked at (the problem is answered)
        run_id, version = "run_" + "0" * 26, 0
    record = RunRecord(
        subscriber=SUBSCRIBER_SLOT, version=version, status="r", at=0, created_ms=now_ms, data=item.data
    )
    event = Event(
        id=new_id("evt"),
        type="automation.triggered",
        created_at=_at(now_ms),
        workspace=item.workspace,
        data={
            "automation_id": item.automation_id,
            "run_id": run_id,
            "version": version,
            "subscriber": SUBSCRIBER_SLOT,
            "email": EMAIL_SLOT,
            "trigger": "api",
        },
    )
    idempotency = None
    if (claim := item.claim) is not None:
        pre = "" if problem is None else ("fail" if problem.code in NOT_STORED else "store")
        body = _accepted_encoder.encode(TriggerAccepted(run=run_id))
        box = claim.store.box
        idempotency = ApiIdempotency(
            key=claim.key,
            fingerprint=claim.fingerprint,
            token=new_token(),
            pre=pre,
            body=body if box is None else box.seal(body, claim.key.encode()).encode(),
            headers=_stored_headers(),
            lock_ms=claim.store.lock_ms,
            retention_ms=claim.store.retention_ms,
        )
    return ApiStart(
        email=item.email or "",
        run_id=run_id,
        record=record,
        due_ms=now_ms,
        event=event,
        audit=item.audit,
        idempotency=idempotency,
    )


_accepted_encoder = msgspec.json.Encoder()


def _stored_headers() -> bytes:
    """The 202's headers as the middleware would store them (its Content-Type, exactly)."""
    global _accepted_headers
    if _accepted_headers is None:
        content_type = json_response(TriggerAccepted(run="-"), status=202).headers["Content-Type"]
        _accepted_headers = encode_headers({"Content-Type": content_type})
    return _accepted_headers


def _answer(
    item: _TriggerItem, problem: ApiError | None, start: ApiStart | None, reply: tuple | None
) -> _ApiOutcome:
    """The answer to one trigger from what the script did with it (see ApiTriggerStore)."""
    if start is None or reply is None:
        assert problem is not None
        return problem
    token = start.idempotency.token if start.idempotency is not None else ""
    kind = reply[0]
    claim = item.claim
    if kind == "replay":
        assert claim is not None
        _, status, body, headers = reply
        opened = body if claim.store.box is None else claim.store.box.open(body.decode(), claim.key.encode())
        return _Answer(replay=StoredResponse(status, opened, decode_headers(headers)))
    if kind == "mismatch":
        return ApiError(
            "idempotency_key_reused", "This Idempotency-Key was used with a different request body"
        )
    if kind == "running":
        return ApiError(
            "idempotency_key_in_use",
            "A request with this Idempotency-Key is still running",
            headers={"Retry-After": "1"},
        )
    if kind in ("claimed", "none"):
        assert problem is not None
        return _Answer(error=problem, token=token) if kind == "claimed" else problem
    if kind == "unknown":
        return ApiError(
            "validation_error",
            "No subscriber has this address",
            errors=[FieldError("#/email", "add the subscriber to a list first", "unknown_subscriber")],
        )
    if kind == "blocklisted":
        return ApiError(
            "validation_error",
            "The subscriber is blocklisted",
            errors=[
                FieldError(
                    "#/email", "a blocklisted subscriber enters no automation", "subscriber_blocklisted"
                )
            ],
        )
    if kind == "live":
        error = ApiError("conflict", f"This subscriber is in a run of it (reentry `after_exit`): {reply[1]}")
        return _Answer(error=error, token=token) if reply[2] else error
    run_id = start.run_id
    if kind == "created":
        return _Answer(run_id=run_id, audited=True)
    # "exists": only a retried Idempotency-Key derives an id that may exist (not `never`: not here)
    if claim is not None:
        return _Answer(run_id=run_id)
    return ApiError("conflict", f"This run was started before: {run_id}")


@routes.route(
    "GET",
    "/v1/automations/{id}/runs",
    ids={"id": "aut"},
    scope="read:automations",
    query=RunQuery,
    response=RunList,
    summary="The automation's runs, newest first, each with its history (filter by status)",
    tag=TAG,
)
async def list_runs(request: web.Request, query: RunQuery) -> web.Response:
    head, _ = await _own(request)
    filters = {"status": query.status}
    after = decode_cursor(query.cursor, filters)
    try:
        before = int(after) if after is not None else None
    except ValueError:
        raise ApiError("invalid_cursor", "The cursor is not one this API issued") from None
    if before is not None and before < 0:
        raise ApiError("invalid_cursor", "The cursor is not one this API issued")
    code = STATUS_CODES[query.status] if query.status else None
    store = RunStore(request.app[SERVICES].redis)
    found, position = await store.page(head.workspace, head.id, status=code, limit=query.limit, before=before)
    steps = await _steps_by_version(request, head, {r.version for _, r in found})
    due = await store.due_at(head.workspace, head.id, [run_id for run_id, _ in found])
    data = [
        run_view(head.id, run_id, record, steps.get(record.version, []), wake)
        for (run_id, record), wake in zip(found, due, strict=True)
    ]
    next_cursor = encode_cursor(str(position), filters) if position > 0 else None
    headers = {}
    if next_cursor:
        headers["Link"] = f'<{request.url.update_query({"cursor": next_cursor}).path_qs}>; rel="next"'
    return json_response(RunList(data=data, has_more=position > 0, next_cursor=next_cursor), headers=headers)


@routes.route(
    "GET",
    "/v1/automations/{id}/runs/{run}",
    ids={"id": "aut", "run": "run"},
    scope="read:automations",
    response=Run,
    summary="One run with its history",
    tag=TAG,
)
async def get_run(request: web.Request) -> web.Response:
    head, _ = await _own(request)
    run_id = request.match_info["run"]
    store = RunStore(request.app[SERVICES].redis)
    found = await store.get(head.workspace, head.id, run_id)
    if found is None:
        raise not_found("run")
    record = found[1]
    steps = await _steps_by_version(request, head, {record.version})
    [wake] = await store.due_at(head.workspace, head.id, [run_id])
    return json_response(run_view(head.id, run_id, record, steps.get(record.version, []), wake))


@routes.route(
    "POST",
    "/v1/automations/{id}/runs/{run}/cancel",
    ids={"id": "aut", "run": "run"},
    scope="write:automations",
    response=Run,
    summary="Cancel a run: it ends `exited` (reason `cancelled`) and does no further step",
    tag=TAG,
)
async def cancel_run(request: web.Request) -> web.Response:
    head, _ = await _own(request)
    run_id = request.match_info["run"]
    store = RunStore(request.app[SERVICES].redis)
    now_ms = int(request.app[SERVICES].clock() * 1000)
    for _ in range(5):
        found = await store.get(head.workspace, head.id, run_id)
        if found is None:
            raise not_found("run")
        raw, record = found
        if record.status not in ("r", "w"):
            raise ApiError("conflict", f"The run already ended ({STATUS_NAMES[record.status]})")
        ended = msgspec.structs.replace(record, status="x", reason="cancelled")
        event = Event(
            id=new_id("evt"),
            type="automation.run_ended",
            created_at=_at(now_ms),
            workspace=head.workspace,
            data={
                "automation_id": head.id,
                "run_id": run_id,
                "version": record.version,
                "subscriber": record.subscriber,
                "status": "exited",
                "reason": "cancelled",
            },
        )
        move = Transition(run_id=run_id, expected=raw, record=ended, due_ms=None, events=[event])
        if (await store.commit(head.workspace, head.id, [move]))[0]:
            steps = await _steps_by_version(request, head, {record.version})
            return json_response(run_view(head.id, run_id, ended, steps.get(record.version, []), None))
    raise ApiError("conflict", "The run kept changing; try again")


def run_view(
    automation_id: str, run_id: str, record: RunRecord, steps: list[Step], due_ms: int | None
) -> Run:
    status = STATUS_NAMES[record.status]
    if status == "waiting" and record.history:
        step: str | None = record.history[-1].step
    elif status == "running" and record.at < len(steps):
        step = steps[record.at].id
    else:
        step = record.history[-1].step if record.history else None
    return Run(
        id=run_id,
        automation=automation_id,
        version=record.version,
        subscriber=record.subscriber,
        status=status,
        step=step,
        wake_at=_at(due_ms) if status == "waiting" and due_ms is not None else None,
        created_at=_at(record.created_ms),
        history=[
            HistoryView(step=h.step, at=_at(h.at_ms), outcome=h.outcome, message_id=h.message_id)
            for h in record.history
        ],
        reason=record.reason or None,
    )


async def _steps_by_version(
    request: web.Request, head: AutomationRecord, versions: set[int]
) -> dict[int, list[Step]]:
    store = AutomationStore(request.app[SERVICES].redis)
    found = {}
    for version in versions:
        definition = await store.version(head.workspace, head.id, version)
        if definition is not None:
            found[version] = definition.steps
    return found


# Versions never change once written: each process keeps the ones it read (bounded), so a trigger costs
# one read of the head rather than two round trips.
_versions: dict[tuple[str, str, int], Definition] = {}


async def _definition(store: AutomationStore, head: AutomationRecord) -> Definition | None:
    key = (head.workspace, head.id, head.version)
    definition = _versions.get(key)
    if definition is None:
        definition = await store.version(head.workspace, head.id, head.version)
        if definition is not None:
            if len(_versions) >= 10_000:
                _versions.clear()
            _versions[key] = definition
    return definition


async def _own(request: web.Request) -> tuple[AutomationRecord, Definition]:
    store = AutomationStore(request.app[SERVICES].redis)
    workspace = principal(request).workspace
    head = await store.get(workspace, request.match_info["id"])
    definition = None if head is None else await _definition(store, head)
    if head is None or definition is None:
        raise not_found("automation")
    return head, definition
