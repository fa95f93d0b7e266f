"""The send path's view of a workspace's routing: its servers (with health) and rules, cached in process.

`WorkspaceRoutingCache.get` answers from memory; a snapshot lives `ttl` seconds at most and is dropped
at once when its workspace is published on `keyspace.ROUTING_INVALIDATIONS` (every server, rule and
health change publishes). A load that raced an invalidation is returned to its callers but not kept,
and a lost pub/sub connection clears everything, so a missed message cannot keep a stale view alive.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import redis.asyncio as aioredis

from schemas.routing_view import RoutingRule, ServerView
from schemas.servers import ServerRecord
from store import keyspace
from store.invalidations import follow_invalidations
from store.routing_rules import RoutingRuleStore, policy_rule
from store.servers import ServerStore

log = logging.getLogger("mailers.routing")


class RoutingSnapshot(msgspec.Struct, frozen=True):
    servers: list[ServerView]
    rules: list[RoutingRule]
    records: dict[str, ServerRecord]


class WorkspaceRoutingCache:
    def __init__(self, redis: aioredis.Redis, ttl: float = 5.0, *, max_entries: int = 10_000) -> None:
        self.redis = redis
        self.ttl = ttl
        self.max_entries = max_entries
        self.servers = ServerStore(redis)
        self.rules = RoutingRuleStore(redis)
        self.loads = 0
        self._entries: dict[str, tuple[RoutingSnapshot, float]] = {}
        self._loading: dict[str, asyncio.Task[RoutingSnapshot]] = {}
        self._versions: dict[str, int] = {}

    async def get(self, workspace: str) -> RoutingSnapshot:
        cached = self._entries.get(workspace)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        task = self._loading.get(workspace)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load_and_keep(workspace))
            self._loading[workspace] = task
            task.add_done_callback(lambda done: self._forget_load(workspace, done))
        return await asyncio.shield(task)

    async def _load_and_keep(self, workspace: str) -> RoutingSnapshot:
        version = self._versions.get(workspace, 0)
        snapshot = await self.load(workspace)
        if self._versions.get(workspace, 0) == version:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[workspace] = (snapshot, time.monotonic() + self.ttl)
        return snapshot

    def _forget_load(self, workspace: str, task: asyncio.Task[RoutingSnapshot]) -> None:
        if self._loading.get(workspace) is task:
            del self._loading[workspace]

    async def load(self, workspace: str) -> RoutingSnapshot:
        """Read the workspace's routing straight from Redis (no cache)."""
        self.loads += 1
        records, rules = await asyncio.gather(self.servers.list(workspace), self.rules.list(workspace))
        statuses = await self.servers.statuses([r.id for r in records])
        views = [
            ServerView(
                id=r.id, priority=r.priority, status=statuses[r.id], domains=r.domains, provider=r.provider
            )
            for r in records
        ]
        return RoutingSnapshot(
            servers=views, rules=[policy_rule(r) for r in rules], records={r.id: r for r in records}
        )

    def invalidate(self, workspace: str) -> None:
        self._versions[workspace] = self._versions.get(workspace, 0) + 1
        self._entries.pop(workspace, None)
        self._loading.pop(workspace, None)

    def clear(self) -> None:
        for workspace in list(self._entries) + list(self._loading):
            self.invalidate(workspace)

    async def listen(
        self, ready: asyncio.Event | None = None, *, redis: aioredis.Redis | None = None
    ) -> None:
        """Run until cancelled, following `keyspace.ROUTING_INVALIDATIONS` (through `redis` when given: a
        subscription holds its connection for good)."""
        await follow_invalidations(
            redis if redis is not None else self.redis,
            keyspace.ROUTING_INVALIDATIONS,
            invalidate=self.invalidate,
            clear=self.clear,
            ready=ready,
        )
