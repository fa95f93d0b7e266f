"""SuppressionClient: how the ingress (through the Gateway) and consumers reach the SuppressionShards.

Finds or creates the shards (`suppression-shard-{i}`, through `actors.runtime.start_actor`, in the
settings' namespace), routes every call by
`shard_for(workspace, n_shards)`, and coalesces per shard and operation: concurrent checks leave as one
Ray call per shard, and a bulk `check_many` of 1,000 messages is one call per touched shard. Global
entries are written through every shard, since each holds its own copy of them.

Inputs are normalised here, before they are batched: an invalid address raises ValueError to its own
caller instead of failing a shared batch.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from functools import partial

import msgspec

from actors.policies.suppression import shard_for
from actors.runtime import ActorHandle, start_actor
from actors.suppression.actor import SuppressionShard
from schemas.settings import Settings
from schemas.suppressions import Scope, Suppressed, SuppressionEntry
from store.coalescer import Coalescer
from store.suppressions import normalise_entry

CheckRequest = tuple[str, str, Sequence[str], Sequence[str]]
MAX_CHECK_BATCH = 5000


def shard_name(index: int) -> str:
    return f"suppression-shard-{index}"


class SuppressionClient:
    def __init__(self, shards: list[ActorHandle]) -> None:
        self.n_shards = len(shards)
        self.shards = shards
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode_hits = msgspec.msgpack.Decoder(list[list[Suppressed]]).decode
        self._decode_flags = msgspec.msgpack.Decoder(list[bool]).decode
        self.checks = [self._coalescer("check", i, MAX_CHECK_BATCH) for i in range(self.n_shards)]
        self._adds = [self._coalescer("add", i, 1000) for i in range(self.n_shards)]
        self._removes = [self._coalescer("remove", i, 1000) for i in range(self.n_shards)]

    @classmethod
    def start(cls, settings: Settings, redis_url: str) -> SuppressionClient:
        """Find or create the `MAILERS_SUPPRESSION_SHARDS` shards; they load and write through `redis_url`."""
        count = max(1, settings.suppression_shards)
        return cls(
            [start_actor(SuppressionShard, shard_name(i), settings, redis_url, i) for i in range(count)]
        )

    def _coalescer(self, method: str, index: int, max_batch: int) -> Coalescer:
        return Coalescer(partial(self._call, method, index), max_in_flight=2, max_batch=max_batch)

    async def _call(self, method: str, index: int, items: list) -> list:
        answer = await getattr(self.shards[index], method).remote(self._encode(items))
        return self._decode_hits(answer) if method == "check" else self._decode_flags(answer)

    def shard_of(self, workspace: str) -> int:
        return shard_for(workspace, self.n_shards)

    async def check(
        self, workspace: str, sending_domain: str, list_ids: Sequence[str], recipients: Sequence[str]
    ) -> list[Suppressed]:
        """The recipients (as given) that must not be mailed, with the broadest scope and its reason."""
        item = (workspace, sending_domain, list(list_ids), list(recipients))
        return await self.checks[self.shard_of(workspace)].submit(item)

    async def check_many(self, items: Sequence[CheckRequest]) -> list[list[Suppressed]]:
        """One result per request, in order; one Ray call per touched shard."""
        by_shard: dict[int, list[int]] = defaultdict(list)
        for position, (workspace, *_) in enumerate(items):
            by_shard[self.shard_of(workspace)].append(position)
        answers = await asyncio.gather(
            *(
                self.checks[shard].submit_many(
                    [(ws, d, list(lids), list(r)) for ws, d, lids, r in (items[p] for p in positions)]
                )
                for shard, positions in by_shard.items()
            )
        )
        results: list[list[Suppressed]] = [[] for _ in items]
        for positions, hits in zip(by_shard.values(), answers, strict=True):
            for position, found in zip(positions, hits, strict=True):
                results[position] = found
        return results

    async def add(self, workspace: str, entries: Sequence[SuppressionEntry]) -> list[bool]:
        """Suppress; True per entry that was new in its scope. Raises ValueError on an invalid entry."""
        normal = [normalise_entry(e) for e in entries]
        by_shard: dict[int, list[int]] = defaultdict(list)
        for position, entry in enumerate(normal):
            for shard in range(self.n_shards) if entry.scope == "global" else [self.shard_of(workspace)]:
                by_shard[shard].append(position)
        answers = await asyncio.gather(
            *(
                self._adds[shard].submit_many([(workspace, normal[p]) for p in positions])
                for shard, positions in by_shard.items()
            )
        )
        new = [False] * len(normal)
        for positions, flags in zip(by_shard.values(), answers, strict=True):
            for position, flag in zip(positions, flags, strict=True):
                new[position] = new[position] or flag
        return new

    async def remove(
        self,
        workspace: str,
        emails: Sequence[str],
        scope: Scope = "workspace",
        scope_value: str | None = None,
    ) -> int:
        """Lift suppressions of `emails` in one scope; returns how many there were."""
        normal = [
            normalise_entry(SuppressionEntry(email=e, scope=scope, scope_value=scope_value)) for e in emails
        ]
        targets = range(self.n_shards) if scope == "global" else [self.shard_of(workspace)]
        items = [(workspace, e.email, scope, e.scope_value) for e in normal]
        flags = await asyncio.gather(*(self._removes[i].submit_many(items) for i in targets))
        return sum(any(column) for column in zip(*flags, strict=True)) if items else 0

    async def ping(self) -> bool:
        return all(await asyncio.gather(*(shard.ping.remote() for shard in self.shards)))

    async def drain(self) -> None:
        for coalescer in (*self.checks, *self._adds, *self._removes):
            await coalescer.drain()
