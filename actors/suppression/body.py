"""The SuppressionShard's body: one workspace hash range's suppressions in memory, checked in batches.

Shard `i` of `n` holds the `SuppressionSet` of every workspace with `shard_for(workspace, n) == i`,
loaded from Redis on first use, plus its own copy of the global entries. Writes go to Redis first
(`SuppressionStore`, which also publishes the change), then to memory. The shard follows
`keyspace.SUPPRESSION_CHANGES`, so entries written by anyone else reach it too; changes that arrive
while a workspace is loading are replayed after the load; losing the channel forgets every set (they
reload on next use). A restart therefore loses nothing: the state is rebuilt from Redis.

Plain asyncio over Redis and the pure `SuppressionSet`; the Ray shell (`actors/suppression/actor.py`)
decodes the wire format and delegates here, and tests use the body directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from actors.policies.suppression import SuppressionSet
from actors.stepping import until_idle
from schemas.suppressions import Scope, Suppressed, SuppressionEntry
from store import keyspace
from store.invalidations import follow_invalidations
from store.suppressions import GLOBAL, Change, SuppressionStore, changes, normalise_entry

log = logging.getLogger("mailers.suppression")
CheckItem = tuple[str, str, list[str], list[str]]
AddItem = tuple[str, SuppressionEntry]
RemoveItem = tuple[str, str, Scope, str | None]
_INVALID_DOMAIN = "invalid"  # stands in for a sending domain that does not parse: no domain entry matches


class SuppressionShardBody:
    def __init__(
        self, redis: aioredis.Redis, index: int = 0, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.index = index
        self.redis = redis
        self.clock = clock  # nothing here expires yet; kept so the body has the shape of every other
        self.store = SuppressionStore(redis)
        self.sets: dict[str, SuppressionSet] = {}
        self.calls: dict[str, int] = defaultdict(int)
        self._loading: dict[str, asyncio.Task[SuppressionSet]] = {}
        self._replay: dict[str, list[Change]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._decode_change = msgspec.msgpack.Decoder(Change).decode

    # --- the three operations ---------------------------------------------------------------------
    async def check(self, items: list[CheckItem]) -> list[list[Suppressed]]:
        """Per item (workspace, sending_domain, list_ids, recipients): the recipients that are suppressed."""
        self.calls["check"] += 1
        sets = await self._sets_for({ws for ws, *_ in items} | {GLOBAL})
        return [
            _check_one(sets[GLOBAL], sets[ws], domain, lists, rcpts) for ws, domain, lists, rcpts in items
        ]

    async def add(self, items: list[AddItem]) -> list[bool]:
        """Per item (workspace, entry): True if it was new in its scope."""
        self.calls["add"] += 1
        groups: dict[str, list[int]] = defaultdict(list)
        for position, (workspace, _) in enumerate(items):
            groups[workspace].append(position)
        results: list[bool] = [False] * len(items)
        for workspace, positions in groups.items():
            entries = [normalise_entry(items[p][1]) for p in positions]
            for position, new in zip(positions, await self.store.add(workspace, entries), strict=True):
                results[position] = new
            for change in changes(workspace, "add", entries):
                self._apply_loaded(change)
        return results

    async def remove(self, items: list[RemoveItem]) -> list[bool]:
        """Per item (workspace, email, scope, scope_value): True if it was suppressed."""
        self.calls["remove"] += 1
        groups: dict[tuple[str, Scope, str | None], list[int]] = defaultdict(list)
        for position, (workspace, _, scope, value) in enumerate(items):
            groups[(workspace, scope, value)].append(position)
        results: list[bool] = [False] * len(items)
        for (workspace, scope, value), positions in groups.items():
            entries = [
                normalise_entry(SuppressionEntry(email=items[p][1], scope=scope, scope_value=value))
                for p in positions
            ]
            removed = await self.store.remove(workspace, [e.email for e in entries], scope, value)
            for position, was in zip(positions, removed, strict=True):
                results[position] = was
            for change in changes(workspace, "remove", entries):
                self._apply_loaded(change)
        return results

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    def stats(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "calls": dict(self.calls),
            "loaded": sorted(self.sets),
            "entries": sum(len(s) for s in self.sets.values()),
        }

    # --- the actor shape: the work is the calls; the one background duty is following the channel ---
    async def step(self) -> int:
        """Nothing runs between calls but the channel follower (`run`): every step is idle."""
        return 0

    async def run_until_idle(self) -> int:
        return await until_idle(self.step)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the change channel from the start (not only from the first check) until `stop`."""
        await self._ensure_listening()
        await stop.wait()
        await self.close()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
            self._subscribed.clear()

    # --- memory: lazy loads, changes from the channel ----------------------------------------------
    async def _sets_for(self, workspaces: set[str]) -> dict[str, SuppressionSet]:
        await self._ensure_listening()
        found = {ws: self.sets[ws] for ws in workspaces if ws in self.sets}
        missing = [ws for ws in workspaces if ws not in found]
        found.update(zip(missing, await asyncio.gather(*(self._loaded(ws) for ws in missing)), strict=True))
        return found

    async def _loaded(self, workspace: str) -> SuppressionSet:
        task = self._loading.get(workspace)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(workspace))
            self._loading[workspace] = task
            task.add_done_callback(lambda done: self._load_finished(workspace, done))
        return await asyncio.shield(task)

    def _load_finished(self, workspace: str, task: asyncio.Task[SuppressionSet]) -> None:
        if self._loading.get(workspace) is task:
            del self._loading[workspace]

    async def _load(self, workspace: str) -> SuppressionSet:
        replay: list[Change] = []
        self._replay[workspace] = replay
        loaded = SuppressionSet()
        async for records in self.store.scan(workspace):
            for record in records:
                loaded.add(record.email, record.scope, record.scope_value, record.reason)
        if self._replay.get(workspace) is not replay:  # the channel was lost meanwhile: answer, do not keep
            return loaded
        del self._replay[workspace]
        for change in replay:
            _apply(loaded, change)
        self.sets[workspace] = loaded
        return loaded

    def _apply_loaded(self, change: Change) -> None:
        """Apply a change to memory: at once if the workspace is loaded, after its load if loading."""
        if change.workspace in self.sets:
            _apply(self.sets[change.workspace], change)
        elif change.workspace in self._replay:
            self._replay[change.workspace].append(change)

    def _forget_all(self) -> None:
        self.sets.clear()
        self._replay.clear()
        self._loading.clear()

    async def _ensure_listening(self) -> None:
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        await self._subscribed.wait()

    async def _listen(self) -> None:
        await follow_invalidations(
            self.redis,
            keyspace.SUPPRESSION_CHANGES,
            invalidate=self._apply_loaded,
            clear=self._forget_all,
            ready=self._subscribed,
            decode=self._decode_change,
        )


def _check_one(
    global_set: SuppressionSet,
    own: SuppressionSet,
    sending_domain: str,
    list_ids: list[str],
    recipients: list[str],
) -> list[Suppressed]:
    try:
        return _filter(global_set, own, sending_domain, list_ids, recipients)
    except ValueError:  # a domain or address that does not parse: check what does, one by one
        hits = []
        for recipient in recipients:
            for domain in (sending_domain, _INVALID_DOMAIN):
                with contextlib.suppress(ValueError):
                    hits += _filter(global_set, own, domain, list_ids, [recipient])
                    break
        return hits


def _filter(
    global_set: SuppressionSet,
    own: SuppressionSet,
    sending_domain: str,
    list_ids: list[str],
    recipients: list[str],
) -> list[Suppressed]:
    """Global entries first, then the workspace's; hits in recipient order."""
    allowed, hits = global_set.filter(recipients, sending_domain=sending_domain, list_ids=list_ids)
    _, more = own.filter(allowed, sending_domain=sending_domain, list_ids=list_ids)
    if hits and more:
        order = {email: i for i, email in reversed(list(enumerate(recipients)))}
        hits = sorted(hits + more, key=lambda hit: order[hit[0]])
    return [Suppressed(*hit) for hit in hits or more]


def _apply(target: SuppressionSet, change: Change) -> None:
    for email, scope, value, reason in change.entries:
        if change.op == "add":
            target.add(email, scope, value, reason)
        else:
            target.remove(email, scope, value)
