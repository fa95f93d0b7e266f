"""AuditSink: `m:audit` → chained, signed entries → the analytics store, crash-safe and idempotent.

One pass:
1. store what an earlier pass chained but did not store (the `m:audit:chained` buffer), then delete it
   from the buffer; the store ignores an entry it already holds (same id), so repeating this is safe;
2. read a batch of unchained entries through the consumer group (`store.group_reader.GroupReader`: first
   the ones this consumer read before a crash and never acknowledged, then new ones);
3. chain them per workspace after the workspace's head, and in ONE MULTI: add the sealed entries to
   the buffer, move the heads, and XACK + XDEL the source entries. Either all of that happens or
   none of it, so an entry gets exactly one seq however often the sink crashes;
4. store what that MULTI buffered, from the sealed entries in hand (issue #14: reading the buffer back
   decoded every entry a second time), then delete it from the buffer; a crash in between leaves it for
   step 1 of the next pass;
5. publish a signed checkpoint of every head that moved, at most once every `checkpoint_seconds`
   (`checkpoints.CheckpointPublisher`): only now are the entries it covers in the store.

With an external checkpoint sink, `run` also runs the `checkpoints.CheckpointExporter` loop beside the
chain's, so a failing sink never holds the chain up.

The chain is a sequence, so exactly one AuditSink runs (the named actor); its consumer name is fixed,
so a restart re-reads its own pending entries. WATCH on the heads (redis-py's `Redis.transaction`)
makes a second, accidental sink fail its transaction and retry from the new heads instead of forking a
chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from actors.audit.checkpoints import CheckpointExporter, CheckpointPublisher
from actors.stepping import until_idle
from analytics.audit import AuditStore
from security.audit_chain import GENESIS_HASH, AuditEntry, AuditSigner, chain
from store import keyspace
from store.audit_checkpoint_sinks import CheckpointSink
from store.audit_checkpoints import CheckpointLog
from store.group_reader import GroupReader
from store.replies import as_bytes, as_bytes_or_none, hash_fields, stream_entries

log = logging.getLogger("mailers.audit.sink")
Batch = list[tuple[bytes, AuditEntry | None]]


@dataclass
class AuditSinkStats:
    chained: int = 0
    stored: int = 0
    undecodable: int = 0


def parse_head(raw: bytes | None) -> tuple[int, str]:
    """A workspace's (last seq, last hash); (0, GENESIS_HASH) before its first entry."""
    if raw is None:
        return 0, GENESIS_HASH
    seq, _, digest = raw.decode().partition(":")
    return int(seq), digest


class AuditSink:
    def __init__(
        self,
        redis: aioredis.Redis,
        store: AuditStore,
        signer: AuditSigner,
        *,
        consumer: str = "audit-sink",
        batch_size: int = 1000,
        block_ms: int = 250,
        linger: float = 0.5,
        reclaim_idle_ms: int = 60_000,
        clock: Callable[[], float] = time.time,
        checkpoint_seconds: float = 60.0,
        checkpoint_sink: CheckpointSink | None = None,
    ) -> None:
        self.redis, self.store, self.signer, self.clock = redis, store, signer, clock
        self.batch_size = batch_size
        self.reader = GroupReader(
            redis,
            keyspace.AUDIT_STREAM,
            keyspace.AUDIT_GROUP,
            consumer,
            count=batch_size,
            block_ms=block_ms,
            reclaim_idle_ms=reclaim_idle_ms,
            clock=clock,
        )
        # After a pass that was not full, wait this long for more: a store insert has a fixed cost of
        # milliseconds, and one pass per request would spend it per request under steady traffic.
        self.linger = linger
        self.stats = AuditSinkStats()
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(AuditEntry).decode
        self._group_ready = False
        self._moved: dict[str, tuple[int, str]] = {}  # heads the MULTI in hand moves
        self._buffered: list[AuditEntry | None] = []  # per command of that MULTI: the entry it buffers
        self._sealed: list[tuple[bytes, AuditEntry]] = []  # (buffer id, entry) the last MULTI wrote
        checkpoints = CheckpointLog(redis)
        self.checkpoints = CheckpointPublisher(
            checkpoints, signer, interval=checkpoint_seconds, outbox=checkpoint_sink is not None
        )
        self.exporter = (
            None if checkpoint_sink is None else CheckpointExporter(checkpoints, checkpoint_sink, clock=clock)
        )

    async def step(self) -> int:
        """One pass (see the module docstring). Returns how many new entries it chained."""
        await self.store_chained()
        batch = await self.read_batch()
        if batch:
            await self.chain_batch(batch)
            await self.store_sealed()
        await self.publish_checkpoints()
        return len(batch)

    async def publish_checkpoints(self) -> int:
        """Sign and record checkpoints of the heads that moved, when the interval has passed."""
        if not self.checkpoints.recovered:
            raw = hash_fields(await self.redis.hgetall(keyspace.AUDIT_HEADS))
            await self.checkpoints.recover({ws.decode(): parse_head(head) for ws, head in raw.items()})
        return len(await self.checkpoints.publish_due(self.clock()))

    async def run_until_idle(self) -> int:
        """Passes until the stream is empty (burst mode); returns how many entries were chained."""
        return await until_idle(self.step)

    async def run(self, stop: asyncio.Event, *, retry_delay: float = 1.0) -> None:
        """Pass after pass until `stop` is set, and the checkpoint exporter's loop beside it."""
        if self.exporter is None:
            await self._run_chain(stop, retry_delay)
        else:
            await asyncio.gather(self._run_chain(stop, retry_delay), self.exporter.run(stop))

    async def _run_chain(self, stop: asyncio.Event, retry_delay: float) -> None:
        """A failing Redis or store is retried with a doubling delay."""
        delay = retry_delay
        while not stop.is_set():
            try:
                chained = await self.step()
                delay = retry_delay
                if 0 < chained < self.batch_size and self.linger > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.linger)
            except Exception as exc:
                self.reader.reread_own()  # re-read what this pass had read
                self._group_ready = False  # a restarted Redis may have lost the group
                log.warning("audit sink pass failed, retrying in %.1fs: %s", delay, exc)
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass
                delay = min(delay * 2, 30.0)

    async def read_batch(self) -> Batch:
        if not self._group_ready:
            await self.reader.ensure_group("0")
            self._group_ready = True
        return [(entry_id, self._entry(entry_id, fields)) for entry_id, fields in await self.reader.read()]

    def _entry(self, entry_id: bytes, fields: dict[bytes, bytes]) -> AuditEntry | None:
        try:
            return self._decode(fields[keyspace.AUDIT_FIELD])
        except (KeyError, msgspec.DecodeError) as exc:
            # Retrying cannot fix it: it is acknowledged with its batch and left out of every chain.
            self.stats.undecodable += 1
            log.error("audit stream entry %r is not a msgpack AuditEntry: %s", entry_id, exc)
            return None

    async def chain_batch(self, batch: Batch) -> None:
        """Seal `batch` after each workspace's head and commit it, heads and acks in one MULTI."""
        by_workspace: dict[str, list[AuditEntry]] = {}
        for _, entry in batch:
            if entry is not None:
                by_workspace.setdefault(entry.workspace, []).append(entry)
        ids = [entry_id for entry_id, _ in batch]
        attempts = 0

        async def commit(pipe: Pipeline) -> None:
            """Run once per attempt by `Redis.transaction`, which retries it when the heads moved."""
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                log.warning("audit heads moved under this sink (is a second one running?); chaining again")
            await self._queue_commit(pipe, by_workspace, ids)

        replies = await self.redis.transaction(commit, keyspace.AUDIT_HEADS)
        self._sealed = [
            (as_bytes(reply), entry)
            for reply, entry in zip(replies, self._buffered, strict=True)
            if entry is not None
        ]
        self.checkpoints.note_moved(self._moved)
        self.stats.chained += sum(len(v) for v in by_workspace.values())

    async def _queue_commit(
        self, pipe: Pipeline, by_workspace: dict[str, list[AuditEntry]], ids: list[bytes]
    ) -> None:
        """Read the watched heads, seal after them, and queue the MULTI (the helper executes it)."""
        workspaces = list(by_workspace)
        heads = await pipe.hmget(keyspace.AUDIT_HEADS, workspaces) if workspaces else []
        # Ed25519 signing is ~50 us an entry: a batch of 1,000 would hold the event loop for 50 ms.
        sealed = await asyncio.to_thread(
            self._seal, by_workspace, [parse_head(as_bytes_or_none(h)) for h in heads]
        )
        pipe.multi()
        self._moved = {
            ws: (entries[-1].seq, entries[-1].hash) for ws, entries in zip(workspaces, sealed, strict=True)
        }
        self._buffered = []
        for workspace, entries in zip(workspaces, sealed, strict=True):
            for entry in entries:
                pipe.xadd(keyspace.AUDIT_CHAINED, {keyspace.AUDIT_FIELD: self._encode(entry)})
                self._buffered.append(entry)
            pipe.hset(keyspace.AUDIT_HEADS, workspace, f"{entries[-1].seq}:{entries[-1].hash}")
            self._buffered.append(None)
        if ids:
            pipe.xack(keyspace.AUDIT_STREAM, keyspace.AUDIT_GROUP, *ids)
            pipe.xdel(keyspace.AUDIT_STREAM, *ids)
            self._buffered += [None, None]

    def _seal(
        self, by_workspace: dict[str, list[AuditEntry]], heads: list[tuple[int, str]]
    ) -> list[list[AuditEntry]]:
        return [
            chain(entries, prev_hash, prev_seq, self.signer)
            for entries, (prev_seq, prev_hash) in zip(by_workspace.values(), heads, strict=True)
        ]

    async def store_sealed(self) -> int:
        """Insert what the last chain_batch buffered, from the entries in hand, then drop it from the
        buffer; anything else left in the buffer (an earlier pass's) goes through `store_chained`."""
        sealed, self._sealed = self._sealed, []
        for start in range(0, len(sealed), self.batch_size):
            part = sealed[start : start + self.batch_size]
            await self.store.insert([entry for _, entry in part])
            await self.redis.xdel(keyspace.AUDIT_CHAINED, *[entry_id for entry_id, _ in part])
        self.stats.stored += len(sealed)
        return len(sealed) + await self.store_chained()

    async def store_chained(self) -> int:
        """Insert the buffer of chained entries into the store, then drop what was inserted."""
        stored = 0
        while rows := stream_entries(await self.redis.xrange(keyspace.AUDIT_CHAINED, count=self.batch_size)):
            await self.store.insert([self._decode(fields[keyspace.AUDIT_FIELD]) for _, fields in rows])
            await self.redis.xdel(keyspace.AUDIT_CHAINED, *[entry_id for entry_id, _ in rows])
            stored += len(rows)
        self.stats.stored += stored
        return stored
