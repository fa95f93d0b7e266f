"""Build messages, enqueue them the way the ingress does, and run dispatch loops against a real sink."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime

from actors.dispatch.loop import DispatchLoop, ServerRuntime
from actors.policies.circuit import CircuitBreaker
from actors.policies.quota import ServerQuota
from actors.policies.recipient_throttle import RecipientThrottle
from actors.policies.retry import RetryPolicy
from providers import smtp
from schemas.events import Event, EventMessage
from schemas.ids import new_id
from schemas.messages import Address, OutboundMessage
from store.messages import MessageMeta, MessageStore, NewMessage
from tests.local_egress import LOCAL


def message(to: str = "ana@example.com", *, workspace: str = "acme", subject: str = "Hi") -> OutboundMessage:
    return OutboundMessage(
        id=new_id("msg"),
        workspace=workspace,
        from_=Address("hello@acme.com", "Acme"),
        to=[Address(to)],
        subject=subject,
        text="Hello",
        html="<p>Hello</p>",
    )


def new_message(msg: OutboundMessage, candidates: list[str], *, item_key: str | None = None) -> NewMessage:
    now = datetime.now(UTC)
    event = Event(
        id=new_id("evt"),
        type="message.accepted",
        created_at=now,
        workspace=msg.workspace,
        message=EventMessage(id=msg.id, to=msg.to[0].email, from_=msg.from_.email),
    )
    return NewMessage(
        message=msg,
        meta=MessageMeta(created_ms=int(now.timestamp() * 1000), candidates=candidates),
        status="queued",
        server=candidates[0],
        events=[event],
        item_key=item_key,
    )


def smtp_runtime(
    server_id: str,
    port: int,
    *,
    workspace: str = "acme",
    per_second: float | None = None,
    domain_limits: dict | None = None,
) -> ServerRuntime:
    adapter = smtp.Adapter(
        smtp.Config(host="127.0.0.1", port=port, security="none", pool_size=4), egress=LOCAL
    )
    return ServerRuntime(
        workspace=workspace,
        id=server_id,
        provider="smtp",
        adapter=adapter,
        quota=ServerQuota(per_second=per_second),
        throttle=RecipientThrottle(domain_limits or {}),
    )


def loop_for(redis, runtime: ServerRuntime, **options) -> DispatchLoop:
    retry = options.pop("retry", RetryPolicy(max_attempts=3, base=0.05, cap=0.2))
    return DispatchLoop(
        redis,
        runtime,
        consumer=options.pop("consumer", "test"),
        retry=retry,
        circuit=CircuitBreaker(failure_threshold=1000),
        rng=random.Random(7),
        **options,
    )


async def enqueue(redis, messages: list[NewMessage]) -> list[str | None]:
    return await MessageStore(redis).enqueue(messages)


async def run_until(predicate, loops: list[DispatchLoop], *, within: float = 20.0, scheduler=None) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(loop.run(stop)) for loop in loops]
    if scheduler is not None:
        tasks.append(asyncio.create_task(scheduler(stop)))
    deadline = time.monotonic() + within
    try:
        while not predicate():
            assert time.monotonic() < deadline, "condition not reached in time"
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for loop in loops:
            await loop.server.adapter.close()
