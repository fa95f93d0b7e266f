"""The Dispatcher's body: the dispatch loops one Dispatcher actor owns, kept in step with the servers.

Every `sync_interval` the fleet reads which servers exist (the server → workspace index), keeps those
whose id hashes to this actor, starts a loop for each new one, restarts a loop whose record changed
(config, quotas, limits), and stops loops of deleted servers. Actor 0 also runs the scheduler (due
messages back onto their streams), the message-index trim and the trim of consumed stream entries.

Plain asyncio with an injected clock: the Ray shell (`actors/dispatch/actor.py`) only hosts it, and
tests drive `step()` / `run_until_idle()` directly.

An SMTP server's adapter signs with the DKIM key of the workspace's verified sending domain for the
From address (`DomainSigners`); the HTTP providers and SES sign with keys held at the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import zlib
from collections.abc import Callable

import aiohttp
import msgspec
import redis.asyncio as aioredis

from actors.dispatch.loop import DispatchLoop, ServerRuntime, SuppressionCheck
from actors.dispatch.scheduler import SCHEDULER_BATCH, run_index_trim, run_scheduler, run_stream_trim
from actors.dispatch.signing import signing_key_for
from actors.policies.circuit import CircuitBreaker
from actors.policies.quota import ServerQuota
from actors.policies.recipient_throttle import RecipientThrottle
from actors.policies.retry import RetryPolicy
from actors.stepping import until_idle
from providers.dkim import DkimSigner
from providers.egress import Egress, provider_session
from providers.registry import provider_module
from schemas.servers import ServerRecord
from schemas.settings import Settings
from schemas.suppressions import SuppressionEntry
from security.secretbox import SecretBox
from store import keyspace
from store.domains import box_for
from store.ledger import MessageLedger
from store.replies import hash_fields
from store.servers import ServerStore
from store.suppressions import add_suppressions

log = logging.getLogger("mailers.fleet")
# A domain verified (or deleted) takes effect on running SMTP servers within this many seconds.
SIGNER_CACHE_SECONDS = 10.0


class DomainSigners:
    """`await signers(from_domain)`: the workspace's DKIM signer for mail from that domain, or None;
    answers (None included) are kept `SIGNER_CACHE_SECONDS` so a send costs no Redis round trip."""

    def __init__(
        self,
        redis: aioredis.Redis,
        box: SecretBox,
        workspace: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_domains: int = 1024,
    ) -> None:
        self.redis, self.box, self.workspace = redis, box, workspace
        self.clock, self.max_domains = clock, max_domains
        self._known: dict[str, tuple[float, DkimSigner | None]] = {}

    async def __call__(self, domain: str) -> DkimSigner | None:
        now = self.clock()
        known = self._known.get(domain)
        if known is not None and now - known[0] < SIGNER_CACHE_SECONDS:
            return known[1]
        signer = await signing_key_for(self.redis, self.box, self.workspace, domain)
        if len(self._known) >= self.max_domains:
            self._known.clear()
        self._known[domain] = (now, signer)
        return signer


def owner_of(server_id: str, count: int) -> int:
    return zlib.crc32(server_id.encode()) % max(1, count)


class _Running(msgspec.Struct):
    loop: DispatchLoop
    task: asyncio.Task[None]
    stop: asyncio.Event
    version: str


class DispatchFleet:
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        *,
        index: int = 0,
        count: int = 1,
        retry: RetryPolicy | None = None,
        sync_interval: float = 1.0,
        suppressions: SuppressionCheck | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.clock = clock
        self.settings = settings
        self.index, self.count = index, count
        self.retry = retry or RetryPolicy(max_attempts=5, base=2.0, cap=300.0)
        self.sync_interval = sync_interval
        # The shards' batched check (`SuppressionClient.check_many`), or None: no suppression check.
        self.suppressions = suppressions
        self.store = ServerStore.for_settings(redis, settings)
        self.ledger = MessageLedger(redis)
        self.running: dict[str, _Running] = {}
        self._http: aiohttp.ClientSession | None = None

    async def step(self) -> int:
        """One pass of every duty: sync the loops with the server records and, on actor 0, move the due
        messages once. Returns how many loops started, restarted or stopped plus how many messages moved."""
        changed = await self.sync()
        if self.index != 0:
            return changed
        return changed + await self.ledger.move_due(int(self.clock() * 1000), SCHEDULER_BATCH)

    async def run_until_idle(self) -> int:
        """Step until a step changes nothing (tests, instead of sleeping); the loops it started keep
        running until `stop_all`."""
        return await until_idle(self.step)

    async def run(self, stop: asyncio.Event) -> None:
        """Production: the duties of `step` at their own cadences (the scheduler every 50 ms, the sync
        every `sync_interval`, the index trim every minute, the consumed stream entries every second) until
        `stop`; then every loop finishes its chunks."""
        scheduler = None
        if self.index == 0:  # the singleton duties: due messages, trimming the indexes and the streams
            scheduler = asyncio.gather(
                run_scheduler(self.redis, clock=self.clock)(stop),
                run_index_trim(self.redis, self.settings.message_retention_seconds, clock=self.clock)(stop),
                run_stream_trim(self.redis)(stop),
            )
        try:
            while not stop.is_set():
                try:
                    await self.sync()
                except Exception:
                    log.exception("fleet sync failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.sync_interval)
        finally:
            await self.stop_all()
            if scheduler is not None:
                await scheduler

    async def sync(self) -> int:
        """Start, restart and stop loops to match the owned server records; returns how many changed."""
        owned = await self._owned_records()
        gone = set(self.running) - set(owned)
        for server_id in gone:
            await self._stop(server_id)
        changed = len(gone)
        for server_id, record in owned.items():
            version = record.updated_at.isoformat()
            current = self.running.get(server_id)
            if current is not None and current.version == version and not current.task.done():
                continue
            if current is not None:
                await self._stop(server_id)
            self._start(record, version)
            changed += 1
        return changed

    async def _owned_records(self) -> dict[str, ServerRecord]:
        index = hash_fields(await self.redis.hgetall(keyspace.SERVER_WORKSPACES))
        owned: dict[str, ServerRecord] = {}
        for raw_id, raw_ws in index.items():
            server_id = raw_id.decode()
            if owner_of(server_id, self.count) == self.index:
                record = await self.store.get(raw_ws.decode(), server_id)
                if record is not None:
                    owned[server_id] = record
        return owned

    def _start(self, record: ServerRecord, version: str) -> None:
        try:
            runtime = self.runtime_for(record)
        except Exception:
            log.exception("cannot start dispatch for %s", record.id)
            return
        loop = DispatchLoop(
            self.redis,
            runtime,
            consumer=f"dispatcher-{self.index}",
            retry=self.retry,
            circuit=CircuitBreaker(),
            on_status=self.store.set_status,
            on_suppress=self._suppress,
            suppressions=self.suppressions,
            retention_seconds=self.settings.message_retention_seconds,
            clock=self.clock,
            rng=random.Random(),
        )
        stop = asyncio.Event()
        self.running[record.id] = _Running(loop, asyncio.create_task(loop.run(stop)), stop, version)

    def runtime_for(self, record: ServerRecord) -> ServerRuntime:
        module = provider_module(record.provider)
        config = self.store.open_config(record)
        signing = {}
        if record.provider == "smtp" and self.settings.secret_key is not None:
            signing["signer_for"] = DomainSigners(self.redis, box_for(self.settings), record.workspace)
        egress = Egress.from_settings(self.settings)
        adapter = module.Adapter(config, http=self._session(), egress=egress, **signing)
        # SMTP: four lanes of a quarter pool each keep the pool busy while a lane records; HTTP providers
        # take a batch per request, two requests at a time.
        pool = getattr(config, "pool_size", None)
        chunk, lanes = (max(1, pool // 4), min(4, pool)) if pool else (adapter.max_batch, 2)
        q = record.quotas
        limits = {d: msgspec.to_builtins(limit) for d, limit in record.recipient_domain_limits.items()}
        return ServerRuntime(
            workspace=record.workspace,
            id=record.id,
            provider=record.provider,
            adapter=adapter,
            quota=ServerQuota(
                per_second=q.per_second, per_minute=q.per_minute, per_hour=q.per_hour, per_day=q.per_day
            ),
            throttle=RecipientThrottle(limits),
            chunk_size=max(1, chunk),
            parallel_chunks=lanes,
        )

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = provider_session(Egress.from_settings(self.settings))
        return self._http

    async def _stop(self, server_id: str) -> None:
        running = self.running.pop(server_id)
        running.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running.task, 10)
        with contextlib.suppress(Exception):
            await running.loop.server.adapter.close()

    async def stop_all(self) -> None:
        for server_id in list(self.running):
            await self._stop(server_id)
        if self._http is not None:
            await self._http.close()

    async def _suppress(self, workspace: str, emails: list[str]) -> None:
        """Hard bounces suppress the address for the workspace (API.md, "Events")."""
        entries = [
            SuppressionEntry(email=e, reason="bounce", scope="workspace", source="bounce") for e in emails
        ]
        await add_suppressions(self.redis, workspace, entries)
