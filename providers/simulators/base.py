"""What every provider simulator shares: options, the request gate, the record, the webhook poster.

A simulator is an aiohttp `web.Application` (built by `create_app(options)` in the provider's module)
that speaks the provider's documented send API. Around each send request, in this order:
1. auth: a wrong key, or `auth="reject"`, gets the provider's own 401/403;
2. rate limit: over `rate_limit` requests/second (bucket of `rate_burst`) gets the provider's own 429
   and its retry headers;
3. validation: the provider's documented request shape and limits, with its own 4xx bodies;
4. injected failures, by recipient: `fail-transient*@…` -> the provider's 5xx, `fail-permanent*@…` ->
   its validation error; and a 5xx for a `failure_probability` share of requests;
5. the message is recorded (`SimulatorState.messages`, `GET /_sim/messages`) and its event webhooks
   are queued: `bounce*@` bounces (hard), `complain*@` is delivered then complains, everyone else is
   delivered, opened and clicked (`webhook_events` chooses among delivered/opened/clicked).
Webhooks are posted by one background task from a bounded queue (a full queue drops and counts);
the app's cleanup waits briefly for the queue to drain, then cancels the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from email.utils import formataddr, getaddresses
from typing import Protocol

import aiohttp
import msgspec
from aiohttp import web

BOUNCE_PREFIX = "bounce"
COMPLAIN_PREFIX = "complain"
TRANSIENT_PREFIX = "fail-transient"
PERMANENT_PREFIX = "fail-permanent"
ENGAGEMENT_LINK = "https://example.com/welcome"


class SimulatorOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    api_key: str = "sim-key"
    auth: str = "ok"  # "ok" | "reject": reject every key, as after a revoked key or suspended account
    rate_limit: float | None = None  # send requests per second; None = unlimited
    rate_burst: int = 1
    failure_probability: float = 0.0  # share of send requests answered with a 5xx
    seed: int | None = None
    webhook_url: str | None = None  # where event webhooks go; None = no webhooks
    webhook_secret: str | None = None  # Mailgun signing key / Resend `whsec_…`; generated when None
    webhook_events: tuple[str, ...] = ("delivered", "opened", "clicked")
    webhook_queue_size: int = 10_000
    domain: str | None = None  # Mailgun: the only sending domain accepted; None = any

    def __post_init__(self) -> None:
        if self.auth not in ("ok", "reject"):
            raise ValueError(f"auth must be 'ok' or 'reject', got {self.auth!r}")
        if not 0.0 <= self.failure_probability <= 1.0:
            raise ValueError("failure_probability must be between 0 and 1")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit must be positive")


class RecordedAttachment(msgspec.Struct, frozen=True):
    filename: str
    content_type: str
    content: bytes
    content_id: str | None = None


class RecordedMessage(msgspec.Struct, kw_only=True):
    """One message as the simulator accepted it, normalised across providers (addresses formatted)."""

    provider_message_id: str
    sender: str
    to: list[str]
    cc: list[str] = []
    bcc: list[str] = []
    reply_to: list[str] = []
    subject: str = ""
    html: str | None = None
    text: str | None = None
    headers: dict[str, str] = {}
    tags: list[str] = []
    metadata: dict[str, str] = {}
    attachments: list[RecordedAttachment] = []
    request_path: str = ""

    @property
    def recipients(self) -> list[str]:
        return [*self.to, *self.cc, *self.bcc]


class RequestBudget:
    """A token bucket over send requests; `take(now)` is 0 when allowed, else seconds to wait."""

    def __init__(self, rate: float | None, burst: int) -> None:
        self.rate = rate
        self.capacity = max(1, burst)
        self.tokens = float(self.capacity)
        self.updated: float | None = None

    def take(self, now: float) -> float:
        if self.rate is None:
            return 0.0
        if self.updated is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass(frozen=True)
class WebhookRequest:
    body: bytes
    headers: dict[str, str]


@dataclass
class WebhookPoster:
    """Posts queued webhook requests to one URL, in order, from a single background task."""

    url: str | None
    queue_size: int
    queue: asyncio.Queue[WebhookRequest] = field(init=False)
    delivered: list[tuple[int, WebhookRequest]] = field(default_factory=list)
    dropped: int = 0
    failed: int = 0

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.queue_size)

    def submit(self, requests: Iterable[WebhookRequest]) -> None:
        if self.url is None:
            return
        for request in requests:
            try:
                self.queue.put_nowait(request)
            except asyncio.QueueFull:
                self.dropped += 1

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while True:
                request = await self.queue.get()
                try:
                    await self._post(session, request)
                finally:
                    self.queue.task_done()

    async def _post(self, session: aiohttp.ClientSession, request: WebhookRequest) -> None:
        assert self.url is not None
        try:
            async with session.post(self.url, data=request.body, headers=request.headers) as response:
                await response.read()
                self.delivered.append((response.status, request))
        except (aiohttp.ClientError, TimeoutError):
            self.failed += 1

    async def drain(self) -> None:
        """Wait until every queued webhook was posted (wrap in `asyncio.timeout` to bound it)."""
        await self.queue.join()


class SimulatorState:
    def __init__(self, options: SimulatorOptions) -> None:
        self.options = options
        self.messages: list[RecordedMessage] = []
        self.budget = RequestBudget(options.rate_limit, options.rate_burst)
        self.random = random.Random(options.seed)
        self.webhooks = WebhookPoster(options.webhook_url, options.webhook_queue_size)
        self.requests = 0
        self.throttled = 0
        self.last_retry_after: float | None = None
        self.auth_mode = options.auth
        self.webhook_secret = options.webhook_secret or ""

    def key_accepted(self, key: str | None) -> bool:
        return self.auth_mode == "ok" and key == self.options.api_key

    def record(self, messages: Iterable[RecordedMessage]) -> None:
        self.messages.extend(messages)


SIMULATOR = web.AppKey("simulator", SimulatorState)


class Dialect(Protocol):
    """A provider's own answers for the gate's refusals."""

    def unauthorized(self) -> web.Response: ...
    def throttled(self, wait: float, now: float) -> web.Response: ...
    def unavailable(self) -> web.Response: ...


def admit(
    state: SimulatorState, dialect: Dialect, key: str | None, now: float, wall: float
) -> web.Response | None:
    """Steps 1–2 of the gate (auth, rate limit); None means go on. `now` monotonic, `wall` Unix time."""
    state.requests += 1
    if not state.key_accepted(key):
        return dialect.unauthorized()
    wait = state.budget.take(now)
    if wait > 0:
        state.throttled += 1
        state.last_retry_after = wait
        return dialect.throttled(wait, wall)
    return None


def recipient_failure(recipients: Iterable[str]) -> str | None:
    """'transient' | 'permanent' | None, from the recipient address patterns alone."""
    locals_ = [_local_part(r) for r in recipients]
    if any(local.startswith(PERMANENT_PREFIX) for local in locals_):
        return "permanent"
    if any(local.startswith(TRANSIENT_PREFIX) for local in locals_):
        return "transient"
    return None


def injected_failure(state: SimulatorState, recipients: Iterable[str]) -> str | None:
    """The recipient patterns first, then a transient failure for a `failure_probability` share."""
    failure = recipient_failure(recipients)
    if failure is None and state.options.failure_probability:
        if state.random.random() < state.options.failure_probability:
            return "transient"
    return failure


def recipient_events(recipient: str, enabled: tuple[str, ...]) -> list[str]:
    """The simulated fate of one recipient, as a sequence of generic event names."""
    local = _local_part(recipient)
    if local.startswith(BOUNCE_PREFIX):
        return ["bounced"]
    if local.startswith(COMPLAIN_PREFIX):
        return ["delivered", "complained"]
    return [name for name in ("delivered", "opened", "clicked") if name in enabled]


def _local_part(address: str) -> str:
    email = address.rpartition("<")[2].rstrip(">").strip()
    return email.rpartition("@")[0].lower()


def email_of(address: str) -> str:
    return address.rpartition("<")[2].rstrip(">").strip()


def formatted_addresses(values: Iterable[str]) -> list[str]:
    """Address header values (each possibly a comma-separated list) as one formatted string each."""
    return [formataddr(pair) if pair[0] else pair[1] for pair in getaddresses(list(values)) if pair[1]]


def whole_seconds(wait: float) -> int:
    """Retry-After and rate-limit reset headers carry whole seconds; round up so a retry is allowed."""
    return max(1, math.ceil(wait))


_message_list_encoder = msgspec.json.Encoder()


async def _list_messages(request: web.Request) -> web.Response:
    state = request.app[SIMULATOR]
    body = _message_list_encoder.encode(
        {"messages": state.messages, "webhooks_posted": len(state.webhooks.delivered)}
    )
    return web.Response(body=body, content_type="application/json")


async def _clear_messages(request: web.Request) -> web.Response:
    request.app[SIMULATOR].messages.clear()
    return web.Response(status=204)


def webhook_context(poster: WebhookPoster) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx entry: run `poster` while the app runs; on cleanup drain briefly, then cancel."""

    async def run_poster(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(poster.run(), name="simulator-webhooks")
        yield
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await poster.drain()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return run_poster


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(
    state: SimulatorState, routes: list[web.RouteDef], *, client_max_size: int = 50 * 1024**2
) -> web.Application:
    app = web.Application(client_max_size=client_max_size)
    app[SIMULATOR] = state
    app.add_routes(routes)
    app.router.add_get("/_sim/messages", _list_messages)
    app.router.add_delete("/_sim/messages", _clear_messages)
    app.cleanup_ctx.append(webhook_context(state.webhooks))
    return app
