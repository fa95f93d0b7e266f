"""Automations (MARKETING.md "Automations"): the definition, its graph checks, runs and their views.

A definition is a trigger and a list of steps; steps run in order unless `next` (any step but `branch` and
`exit`) or `then`/`else` (`branch`) say otherwise. `check_definition` is pure: it takes what the route
looked up (the templates' declared variables, the operator's egress rule) and returns every problem with
a JSON pointer, so one 422 names them all. What a send step's template may require is what a run can
always supply (`BUILTIN_VARIABLES`), the step's own `variables` (defaults, overridden by the subscriber's
attributes of the same name at render time) and, for an `api` trigger, the `data` names it declares
(checked again when it is triggered).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from schemas.custom_events import is_custom_name
from schemas.events import EVENT_TYPES
from schemas.problems import FieldError
from schemas.schedules import schedule_problem
from schemas.segments import ConditionError, parse_condition
from schemas.send import RoutingIn

MAX_STEPS = 100
MAX_WAIT_SECONDS = 366 * 24 * 3600  # a year (and a leap day): longer waits are almost always a typo
MAX_DATA_BYTES = 16 * 1024
STEP_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Events a trigger may name besides message events and custom events (MARKETING.md "Automations").
AUDIENCE_EVENTS = (
    "list.subscribed",
    "list.unsubscribed",
    "subscriber.created",
    "subscriber.updated",
    "subscriber.unsubscribed",
)
# Variables every send step of a run gets (MARKETING.md "Templates": variables of automation mail).
BUILTIN_VARIABLES = frozenset({"email", "name", "subscriber", "unsubscribe_url", "automation", "data"})
_TIME_OF_DAY = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")

StepId = Annotated[str, msgspec.Meta(pattern=STEP_ID)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Status = Literal["active", "paused"]
Reentry = Literal["never", "always", "after_exit"]
RunStatus = Literal["running", "waiting", "completed", "exited", "failed"]
RUN_STATUSES: tuple[str, ...] = RunStatus.__args__  # type: ignore[attr-defined]
DataName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


# --- triggers ------------------------------------------------------------------------------------
class EventTrigger(msgspec.Struct, tag="event", tag_field="type", kw_only=True, forbid_unknown_fields=True):
    event: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    filter: Any = None


class SegmentEntryTrigger(
    msgspec.Struct, tag="segment_entry", tag_field="type", kw_only=True, forbid_unknown_fields=True
):
    segment: Annotated[str, msgspec.Meta(pattern=r"^seg_[0-9A-Z]{26}$")]


class Audience(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    lists: Annotated[
        list[Annotated[str, msgspec.Meta(pattern=r"^lst_[0-9A-Z]{26}$")]], msgspec.Meta(max_length=100)
    ] = []
    segments: Annotated[
        list[Annotated[str, msgspec.Meta(pattern=r"^seg_[0-9A-Z]{26}$")]], msgspec.Meta(max_length=100)
    ] = []


class ScheduleTrigger(
    msgspec.Struct, tag="schedule", tag_field="type", kw_only=True, forbid_unknown_fields=True
):
    cron: Annotated[str, msgspec.Meta(min_length=9, max_length=100)]
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "UTC"
    audience: Audience


class ApiTrigger(msgspec.Struct, tag="api", tag_field="type", kw_only=True, forbid_unknown_fields=True):
    # Names the caller must give in `data` (checked at trigger); send steps' templates may require them.
    data: Annotated[list[DataName], msgspec.Meta(max_length=100)] = []


Trigger = EventTrigger | SegmentEntryTrigger | ScheduleTrigger | ApiTrigger


# --- steps ---------------------------------------------------------------------------------------
class TemplateRef(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(pattern=r"^tpl_[0-9A-Z]{26}$")]
    version: Annotated[int, msgspec.Meta(ge=1)] | None = None


class SendStep(msgspec.Struct, tag="send", tag_field="type", kw_only=True, forbid_unknown_fields=True):
    id: StepId
    template: TemplateRef
    from_: Annotated[str, msgspec.Meta(min_length=3, max_length=998)] = msgspec.field(name="from")
    subject: Annotated[str, msgspec.Meta(max_length=998)] | None = None
    reply_to: Annotated[str, msgspec.Meta(max_length=998)] | None = None
    routing: RoutingIn | None = None
    variables: Annotated[dict[str, Any], msgspec.Meta(max_length=200)] = {}
    tags: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=10)] = []
    next: StepId | None = None


class WaitStep(msgspec.Struct, tag="wait", tag_field="type", kw_only=True, forbid_unknown_fields=True):
    """`seconds`, or `until` a time of day ("09:00") in `timezone`: an IANA zone, or "subscriber" (the
    subscriber's `timezone` attribute; UTC when it has none or an unknown one)."""

    id: StepId
    seconds: int | None = None
    until: str | None = None
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "UTC"
    next: StepId | None = None


class BranchStep(msgspec.Struct, tag="branch", tag_field="type", kw_only=True, forbid_unknown_fields=True):
    id: StepId
    condition: Any
    then: StepId | None = None
    else_: StepId | None = msgspec.field(name="else", default=None)


class UpdateStep(msgspec.Struct, tag="update", tag_field="type", kw_only=True, forbid_unknown_fields=True):
    id: StepId
    attributes: Annotated[dict[str, Any], msgspec.Meta(min_length=1, max_length=100)]
    next: StepId | None = None


class WebhookStep(msgspec.Struct, tag="webhook", tag_field="type", kw_only=True, forbid_unknown_fields=True):
    id: StepId
    url: Annotated[str, msgspec.Meta(min_length=8, max_length=2048)]
    next: StepId | None = None


class ExitStep(msgspec.Struct, tag="exit", tag_field="type", kw_only=True, forbid_unknown_fields=True):
    id: StepId


Step = SendStep | WaitStep | BranchStep | UpdateStep | WebhookStep | ExitStep
Steps = Annotated[list[Step], msgspec.Meta(min_length=1, max_length=MAX_STEPS)]


class CreateAutomation(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    trigger: Trigger
    steps: Steps
    status: Status = "paused"
    reentry: Reentry = "never"


class UpdateAutomation(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    trigger: Trigger | msgspec.UnsetType = msgspec.UNSET
    steps: Steps | msgspec.UnsetType = msgspec.UNSET
    reentry: Reentry | msgspec.UnsetType = msgspec.UNSET
    status: Status | msgspec.UnsetType = msgspec.UNSET


class Definition(msgspec.Struct, kw_only=True):
    """One immutable version: what runs of it execute."""

    version: int
    trigger: Trigger
    steps: list[Step]
    reentry: Reentry
    created_at: datetime


class AutomationRecord(msgspec.Struct, kw_only=True):
    """The head: what may change without a new version (name, status) and the newest version number."""

    id: str
    workspace: str
    name: str
    status: Status
    version: int
    created_at: datetime
    updated_at: datetime


class Automation(msgspec.Struct, kw_only=True):
    id: str
    name: str
    status: Status
    version: int
    reentry: Reentry
    trigger: Trigger
    steps: list[Step]
    created_at: datetime
    updated_at: datetime
    object: str = "automation"


class AutomationList(msgspec.Struct, kw_only=True):
    data: list[Automation]
    has_more: bool
    next_cursor: str | None
    object: str = "list"


class DeletedAutomation(msgspec.Struct, kw_only=True):
    id: str
    deleted: bool = True
    object: str = "automation"


class TriggerBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
    data: dict[str, Any] = {}


class TriggerAccepted(msgspec.Struct, kw_only=True):
    run: str
    object: str = "automation_run"


# --- runs ----------------------------------------------------------------------------------------
class HistoryEntry(msgspec.Struct, array_like=True, omit_defaults=True):
    step: str
    at_ms: int
    outcome: str
    message_id: str | None = None


class RunRecord(msgspec.Struct, array_like=True, kw_only=True, omit_defaults=True):
    """One run as Redis holds it (the run id is its hash field): small on purpose, since a waiting run is
    this plus one zset member.

    `status` is a one-letter code (STATUS_NAMES); `at` is the index of the step to run next (== number of
    steps: none left); `reason` says why a run ended `failed` or `exited`; `data` is what the trigger
    gave (an api call's `data`, an event's properties). store/automation_runs.py stores `subscriber` as
    its bare ULID; a waiting run's wake-up is its due zset score, not a field."""

    subscriber: str
    version: int
    status: str
    at: int
    created_ms: int
    history: list[HistoryEntry] = []
    data: dict[str, Any] = {}
    reason: str = ""


STATUS_NAMES = {"r": "running", "w": "waiting", "c": "completed", "x": "exited", "f": "failed"}
STATUS_CODES = {name: code for code, name in STATUS_NAMES.items()}
LIVE = ("r", "w")


class HistoryView(msgspec.Struct, kw_only=True, omit_defaults=True):
    step: str
    at: datetime
    outcome: str
    message_id: str | None = None


class Run(msgspec.Struct, kw_only=True):
    id: str
    automation: str
    version: int
    subscriber: str
    status: str
    step: str | None
    wake_at: datetime | None
    created_at: datetime
    history: list[HistoryView]
    reason: str | None = None
    object: str = "automation_run"


class RunList(msgspec.Struct, kw_only=True):
    data: list[Run]
    has_more: bool
    next_cursor: str | None
    object: str = "list"


class RunQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    status: RunStatus | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    cursor: str | None = None


run_encoder = msgspec.msgpack.Encoder()
run_decoder = msgspec.msgpack.Decoder(RunRecord)
definition_decoder = msgspec.msgpack.Decoder(Definition)
record_decoder = msgspec.msgpack.Decoder(AutomationRecord)


# --- graph checks --------------------------------------------------------------------------------
def successors(steps: list[Step], index: int) -> list[str]:
    """The ids a step may go to next ("" for falling off the end, which completes the run)."""
    step = steps[index]
    following = steps[index + 1].id if index + 1 < len(steps) else ""
    if isinstance(step, ExitStep):
        return []
    if isinstance(step, BranchStep):
        return [step.then or following, step.else_ or following]
    return [step.next or following]


def check_definition(
    trigger: Trigger,
    steps: list[Step],
    *,
    templates: dict[tuple[str, int | None], set[str] | None],
    refuse_url: Callable[[str], tuple[str, str] | None],
) -> list[FieldError]:
    """Every problem of a definition. `templates` maps each send step's (id, version) to the names of the
    template's required variables (None: no such template or version); `refuse_url(url)` returns why the
    egress guard refuses a webhook URL, or None."""
    errors: list[FieldError] = []
    errors += _check_trigger(trigger)
    ids: dict[str, int] = {}
    for i, step in enumerate(steps):
        if step.id in ids:
            errors.append(
                FieldError(f"#/steps/{i}/id", f"step id `{step.id}` is used twice", "duplicate_step")
            )
        ids.setdefault(step.id, i)
    supplied = set(BUILTIN_VARIABLES) | (set(trigger.data) if isinstance(trigger, ApiTrigger) else set())
    for i, step in enumerate(steps):
        errors += _check_step(step, i, ids, supplied, templates, refuse_url)
    if errors:
        return errors
    errors += _check_graph(steps, ids)
    return errors


def _check_trigger(trigger: Trigger) -> list[FieldError]:
    if isinstance(trigger, EventTrigger):
        name = trigger.event
        if not (name in EVENT_TYPES or name in AUDIENCE_EVENTS or is_custom_name(name)):
            return [
                FieldError(
                    "#/trigger/event",
                    "a message event, list.subscribed, subscriber.created or a custom event name",
                    "unknown_event_type",
                )
            ]
        if trigger.filter is not None:
            try:
                parse_condition(trigger.filter, "#/trigger/filter")
            except ConditionError as exc:
                return [FieldError(exc.pointer, exc.detail, exc.code)]
    if isinstance(trigger, ScheduleTrigger):
        problem = schedule_problem(trigger.cron, trigger.timezone)
        if problem is not None:
            return [FieldError(f"#/trigger/{problem[0]}", problem[1], "invalid_schedule")]
        if not trigger.audience.lists and not trigger.audience.segments:
            return [FieldError("#/trigger/audience", "name at least one list or segment", "invalid_value")]
    return []


def _check_step(
    step: Step,
    i: int,
    ids: dict[str, int],
    supplied: set[str],
    templates: dict[tuple[str, int | None], set[str] | None],
    refuse_url: Callable[[str], tuple[str, str] | None],
) -> list[FieldError]:
    at = f"#/steps/{i}"
    errors: list[FieldError] = []
    for field, target in _references(step):
        if target is not None and target not in ids:
            errors.append(FieldError(f"{at}/{field}", f"no step has the id `{target}`", "unknown_step"))
    if isinstance(step, WaitStep):
        errors += _check_wait(step, at)
    elif isinstance(step, BranchStep):
        try:
            parse_condition(step.condition, f"{at}/condition")
        except ConditionError as exc:
            errors.append(FieldError(exc.pointer, exc.detail, exc.code))
    elif isinstance(step, SendStep):
        required = templates.get((step.template.id, step.template.version))
        if required is None:
            errors.append(FieldError(f"{at}/template/id", "no such template or version", "unknown_template"))
        else:
            for name in sorted(required - supplied - set(step.variables)):
                errors.append(
                    FieldError(
                        f"{at}/template",
                        f"the template requires `{name}`, which this trigger cannot supply: give a "
                        "default in the step's `variables` (or, for an api trigger, name it in its `data`)",
                        "missing_variable",
                    )
                )
    elif isinstance(step, UpdateStep):
        for name in step.attributes:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name):
                errors.append(
                    FieldError(f"{at}/attributes/{name}", "keys are [a-z][a-z0-9_]{0,63}", "invalid_value")
                )
    elif isinstance(step, WebhookStep):
        reason = refuse_url(step.url)
        if reason is not None:
            errors.append(FieldError(f"{at}/url", reason[1], reason[0]))
    return errors


def _references(step: Step) -> list[tuple[str, str | None]]:
    if isinstance(step, BranchStep):
        return [("then", step.then), ("else", step.else_)]
    if isinstance(step, ExitStep):
        return []
    return [("next", step.next)]


def _check_wait(step: WaitStep, at: str) -> list[FieldError]:
    if (step.seconds is None) == (step.until is None):
        return [FieldError(at, "a wait takes exactly one of `seconds` or `until`", "invalid_value")]
    if step.seconds is not None and not 1 <= step.seconds <= MAX_WAIT_SECONDS:
        return [FieldError(f"{at}/seconds", f"from 1 to {MAX_WAIT_SECONDS} seconds (a year)", "invalid_wait")]
    if step.until is not None and not _TIME_OF_DAY.match(step.until):
        return [FieldError(f"{at}/until", "a time of day, HH:MM (24 h)", "invalid_wait")]
    if step.timezone != "subscriber" and not is_timezone(step.timezone):
        return [FieldError(f"{at}/timezone", "an IANA time zone or `subscriber`", "invalid_timezone")]
    return []


def is_timezone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _check_graph(steps: list[Step], ids: dict[str, int]) -> list[FieldError]:
    """Unreachable steps, and cycles that hold no wait (a run would loop without ever yielding)."""
    errors: list[FieldError] = []
    seen = {0}
    todo = [0]
    while todo:
        i = todo.pop()
        for target in successors(steps, i):
            j = ids.get(target)
            if j is not None and j not in seen:
                seen.add(j)
                todo.append(j)
    for i in range(len(steps)):
        if i not in seen:
            errors.append(
                FieldError(f"#/steps/{i}", f"step `{steps[i].id}` cannot be reached", "unreachable_step")
            )
    # A cycle without a wait: a cycle in the graph restricted to non-wait steps.
    state = [0] * len(steps)  # 0 new, 1 on the path, 2 done
    for start in range(len(steps)):
        if state[start] or isinstance(steps[start], WaitStep):
            continue
        stack: list[tuple[int, list[int]]] = [(start, _plain_next(steps, start, ids))]
        state[start] = 1
        while stack:
            node, rest = stack[-1]
            if not rest:
                state[node] = 2
                stack.pop()
                continue
            j = rest.pop()
            if state[j] == 1:
                errors.append(
                    FieldError(
                        f"#/steps/{j}",
                        f"step `{steps[j].id}` is on a cycle with no wait",
                        "cycle_without_wait",
                    )
                )
                return errors
            if state[j] == 0:
                state[j] = 1
                stack.append((j, _plain_next(steps, j, ids)))
    return errors


def _plain_next(steps: list[Step], i: int, ids: dict[str, int]) -> list[int]:
    found = [ids[t] for t in successors(steps, i) if t in ids]
    return [j for j in found if not isinstance(steps[j], WaitStep)]


def data_problems(trigger: Trigger, data: dict[str, Any]) -> list[FieldError]:
    """An api trigger's call misses a declared `data` name, or carries too much."""
    errors = []
    if isinstance(trigger, ApiTrigger):
        for name in trigger.data:
            if name not in data:
                errors.append(FieldError(f"#/data/{name}", "this automation needs it", "missing_field"))
    if len(msgspec.msgpack.encode(data)) > MAX_DATA_BYTES:
        errors.append(FieldError("#/data", f"at most {MAX_DATA_BYTES} bytes", "invalid_value"))
    return errors
