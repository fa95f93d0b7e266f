"""`WebhookDeliveryLoop`: the whole deliverer as a plain asyncio object (actor.py, the Ray shell, hosts it).

`run` is two tasks: fan-out (event stream → pending deliveries in Redis) and the scheduler, which asks Redis
which endpoints have something due and runs one worker per such endpoint, at most
`max_active_endpoints` at once. Memory is bounded by configuration (stream batch, active endpoints ×
in-flight per endpoint, cached workspaces), never by the backlog, which stays in Redis.

`step` does the same work once, without tasks that wait: fan out one batch, then deliver everything due
now; `run_until_idle` repeats it until nothing is left to do (tests drive the clock between calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from aiohttp.abc import AbstractResolver

from actors.stepping import until_idle
from actors.webhooks.config import DelivererConfig
from actors.webhooks.fanout import EndpointDirectory, FanOut
from actors.webhooks.sender import WebhookSender
from actors.webhooks.worker import EndpointWorkers
from store.webhook_queue import DeliveryQueue

log = logging.getLogger("mailers.webhooks")
ERROR_PAUSE_SECONDS = 0.5


class WebhookDeliveryLoop:
    def __init__(
        self,
        redis: aioredis.Redis,
        config: DelivererConfig,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.redis, self.config, self.clock = redis, config, clock
        self.queue = DeliveryQueue(redis, consumer=config.consumer)
        self.sender = WebhookSender(
            timeout=config.timeout_seconds,
            allow_private=config.allow_private,
            allow_http=config.allow_http,
            resolver=resolver,
        )
        self.workers = EndpointWorkers(redis, self.queue, self.sender, config, clock=clock, rng=rng)
        self.fanout = FanOut(
            redis,
            self.queue,
            EndpointDirectory(redis, capacity=config.cached_workspaces),
            consumer=config.consumer,
            batch=config.stream_batch,
            block_ms=config.block_ms,
            reclaim_idle_ms=config.reclaim_idle_ms,
            clock=clock,
        )
        self.started = asyncio.Event()
        self.fanned_out = 0
        self._wake = asyncio.Event()
        self._active: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def start(self) -> None:
        """Join the consumer group and make deliveries a previous run had under way due again."""
        await self.fanout.ensure_group()
        released = await self.queue.release_in_flight(int(self.clock() * 1000))
        if released:
            log.info("resuming %d webhook deliveries left in flight", released)
        await self.sender.start()
        self.started.set()

    async def step(self) -> int:
        """Fan out one batch, then drain every endpoint with deliveries due now (their retries come due
        later, by the clock). Returns how much it did (entries read, deliveries recorded, outcomes
        counted): 0 only when there was nothing to do."""
        if not self.started.is_set():
            await self.start()
        recorded = await self._fan_out_once()
        outcomes = sum(self.workers.counts.values())
        ready = await self.queue.ready_endpoints(int(self.clock() * 1000), self.config.max_active_endpoints)
        never = asyncio.Event()
        await asyncio.gather(*(self.workers.drain(*endpoint, never) for endpoint in ready))
        return self.fanout.last_read + recorded + sum(self.workers.counts.values()) - outcomes

    async def run_until_idle(self) -> int:
        """Steps until one does nothing (burst mode); the sender stays open for the next call."""
        return await until_idle(self.step)

    async def close(self) -> None:
        await self.sender.close()

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        tasks = [asyncio.create_task(self._fan_out(stop)), asyncio.create_task(self._schedule(stop))]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.gather(*self._active.values(), return_exceptions=True)
            await self.sender.close()

    @property
    def counts(self) -> dict[str, int]:
        return {**self.workers.counts, "fanned_out": self.fanned_out, "active_endpoints": len(self._active)}

    async def _fan_out_once(self) -> int:
        try:
            recorded = await self.fanout.step()
        except aioredis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.fanout.ensure_group("0")  # the stream was deleted under us (e.g. FLUSHDB)
            return 0
        self.fanned_out += recorded
        return recorded

    async def _fan_out(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                recorded = await self._fan_out_once()
            except Exception:
                log.exception("webhook fan-out step failed")
                await asyncio.sleep(ERROR_PAUSE_SECONDS)
                continue
            if recorded:
                self._wake.set()
            if 0 < self.fanout.last_read < self.config.stream_batch and self.config.fanout_linger_seconds > 0:
                await asyncio.sleep(self.config.fanout_linger_seconds)  # let a trickle gather into a batch

    async def _schedule(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._start_ready_workers(stop)
            except Exception:
                log.exception("webhook scheduler step failed")
                await asyncio.sleep(ERROR_PAUSE_SECONDS)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_seconds)

    async def _start_ready_workers(self, stop: asyncio.Event) -> None:
        room = self.config.max_active_endpoints - len(self._active)
        if room <= 0:
            return
        ready = await self.queue.ready_endpoints(int(self.clock() * 1000), room + len(self._active))
        for endpoint in ready:
            if endpoint in self._active or len(self._active) >= self.config.max_active_endpoints:
                continue
            task = asyncio.create_task(self.workers.drain(*endpoint, stop))
            self._active[endpoint] = task
            task.add_done_callback(functools.partial(self._worker_done, endpoint))

    def _worker_done(self, endpoint: tuple[str, str], _task: asyncio.Task[None]) -> None:
        task = self._active.pop(endpoint, None)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("webhook worker for %s failed", endpoint, exc_info=task.exception())
            return  # the next poll retries it; waking now could spin on a persistent error
        self._wake.set()  # it may have left work that became due meanwhile
