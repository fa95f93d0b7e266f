"""Everything a request handler may use, opened once per app and closed with it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from actors.outbound.compose import SendPath
from actors.outbound.tracking import tracking_for
from ingress import worker_process
from ingress.body_budget import BodyBudget
from ingress.cpu_budget import CpuBudget
from ingress.key_cache import KeyCache
from ingress.metrics import Metrics
from ingress.off_loop import run_heavy
from schemas.settings import Settings
from security.secretbox import box_for
from store.api_keys import ApiKeyStore
from store.coalescer import Coalescer
from store.idempotency import IdempotencyStore
from store.messages import MessageStore, NewMessage
from store.rate_limits import RateLimiter
from store.workspace_routing import WorkspaceRoutingCache
from store.workspaces import WorkspaceStore

if TYPE_CHECKING:
    from actors.gateway import Gateway


@dataclass
class Services:
    settings: Settings
    redis: aioredis.Redis
    listener_redis: aioredis.Redis  # subscriptions and blocking reads (they hold their connection)
    keys: ApiKeyStore
    workspaces: WorkspaceStore
    key_cache: KeyCache
    idempotency: IdempotencyStore
    rate_limiter: RateLimiter
    address_limiter: RateLimiter  # the routes without an API key, per client address
    metrics: Metrics
    gateway: Gateway | None
    routing: WorkspaceRoutingCache
    messages: MessageStore
    body_budget: BodyBudget
    cpu_budget: CpuBudget
    # Where the worker process (ingress/worker_process.py) enqueues heavy requests' messages.
    redis_url: str
    # The wall clock keys' expiry and rotation grace are judged by; tests replace it to step past them.
    clock: Callable[[], float] = time.time
    _enqueue: Coalescer[NewMessage, str | None] | None = None
    send_path: SendPath | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def open(cls, settings: Settings, *, redis_url: str, gateway: Gateway | None) -> Services:
        # A blocking pool: past `redis_pool_size` connections a request waits for one (up to the timeout,
        # then 503 `unavailable`) instead of failing at once, which redis-py's default pool does.
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url,
            max_connections=max(1, settings.redis_pool_size),
            timeout=settings.redis_pool_timeout_seconds,
            health_check_interval=10,
        )
        redis = aioredis.Redis(connection_pool=pool)
        # Subscriptions and blocking reads hold a connection for good or for seconds: their own client, so
        # they never take the requests' pooled connections.
        listener = aioredis.Redis.from_url(redis_url, health_check_interval=10)
        keys = ApiKeyStore(redis)
        services = cls(
            settings=settings,
            redis=redis,
            listener_redis=listener,
            keys=keys,
            workspaces=WorkspaceStore(redis),
            key_cache=KeyCache(keys),
            idempotency=IdempotencyStore(
                redis,
                lock_ms=settings.idempotency_lock_seconds * 1000,
                retention_ms=settings.idempotency_retention_seconds * 1000,
                box=box_for(settings, "idempotency") if settings.secret_key else None,
            ),
            rate_limiter=RateLimiter(
                redis, per_second=settings.rate_limit_per_second, burst=settings.rate_limit_burst
            ),
            address_limiter=RateLimiter(
                redis,
                per_second=settings.public_rate_limit_per_second,
                burst=settings.public_rate_limit_burst,
            ),
            metrics=Metrics(),
            gateway=gateway,
            routing=WorkspaceRoutingCache(redis),
            messages=MessageStore(redis, item_retention_seconds=settings.idempotency_retention_seconds),
            body_budget=BodyBudget(
                bytes_per_second=settings.body_bytes_per_second,
                burst_bytes=settings.max_body_bytes,
                heavy_per_key=settings.heavy_requests_per_key,
            ),
            cpu_budget=CpuBudget(
                seconds_per_second=settings.worker_cpu_per_key,
                burst_seconds=settings.worker_cpu_burst_seconds,
            ),
            redis_url=redis_url,
        )
        # Every concurrent request's messages share one Lua enqueue (one round trip, one transaction).
        services._enqueue = Coalescer(
            services.messages.enqueue, max_in_flight=2, max_batch=5000, max_pending=100_000
        )
        services.send_path = SendPath(
            routing=services.routing,
            tracking=tracking_for(settings),
            enqueue=services.enqueue,
            run=run_heavy,
        )
        worker_process.start()
        listening = [asyncio.Event(), asyncio.Event()]
        services._tasks.append(asyncio.create_task(services.key_cache.listen(listener, listening[0])))
        services._tasks.append(asyncio.create_task(services.routing.listen(listening[1], redis=listener)))
        services._tasks.append(asyncio.create_task(services.metrics.watch_loop_lag()))
        async with asyncio.timeout(5):
            await asyncio.gather(*(event.wait() for event in listening))
        if gateway is not None:
            services._tasks.append(asyncio.create_task(gateway.supervise()))
        return services

    async def enqueue(self, batch: list[NewMessage]) -> list[str | None]:
        assert self._enqueue is not None
        return await self._enqueue.submit_many(batch)

    def key_usage(self, key_id: str) -> None:
        if self.gateway is not None:
            self.gateway.record_key_usage(key_id)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.gateway is not None:
            await self.gateway.drain()
        await self.redis.aclose()
        await self.listener_redis.aclose()
