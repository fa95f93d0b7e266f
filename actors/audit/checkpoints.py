"""Signed checkpoints of the chain heads: published by the AuditSink, exported to the operator's sink.

`CheckpointPublisher` is told which heads each committed batch moved. Once the moved entries are in the
analytics store (the end of `AuditSink.step`), and at most once every `interval` seconds, it signs one
checkpoint per moved workspace and records them in Redis (latest, history, outbox) in one MULTI. A
restarted sink first compares every head with its workspace's latest checkpoint (`recover`), so a head
that moved just before a crash still gets its checkpoint.

`CheckpointExporter` drains the outbox to the external sink in its own loop beside the chain's: a sink
that is down or slow delays only the copies, never the chain. A failed write stays in the outbox and is
retried after `retry_delay` (doubling, capped); the clock is injected, so tests step it without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from actors.stepping import poll, until_idle
from security.audit_chain import AuditSigner
from security.audit_checkpoint import AuditCheckpoint, sign_checkpoint
from store.audit_checkpoint_sinks import CheckpointSink, CheckpointSinkError
from store.audit_checkpoints import CheckpointLog

log = logging.getLogger("mailers.audit.checkpoints")
Head = tuple[int, str]  # (seq, hash)


def retry_delay(failures: int, *, base: float = 1.0, cap: float = 300.0) -> float:
    """Seconds to wait after the `failures`-th failure in a row (1, 2, 4, … up to `cap`)."""
    return min(base * 2 ** max(failures - 1, 0), cap)


class CheckpointPublisher:
    def __init__(self, log_: CheckpointLog, signer: AuditSigner, *, interval: float, outbox: bool) -> None:
        self.log, self.signer = log_, signer
        self.interval = max(interval, 1.0)
        self.outbox = outbox  # only with an external sink: nobody would drain it otherwise
        self.recovered = False
        self._moved: dict[str, Head] = {}
        self._last: float | None = None

    def note_moved(self, heads: dict[str, Head]) -> None:
        """Heads a committed batch moved (not yet stored: `publish_due` runs after the store)."""
        self._moved.update(heads)

    async def recover(self, heads: dict[str, Head]) -> None:
        """After a start: every head ahead of its workspace's latest checkpoint counts as moved."""
        published = await self.log.latest_seqs()
        for workspace, head in heads.items():
            if head[0] > published.get(workspace, 0):
                self._moved.setdefault(workspace, head)
        self.recovered = True

    def due(self, now: float) -> bool:
        return bool(self._moved) and (self._last is None or now - self._last >= self.interval)

    async def publish_due(self, now: float) -> list[AuditCheckpoint]:
        """Sign and record a checkpoint per moved workspace, if the interval has passed."""
        if not self.due(now):
            return []
        moved = dict(self._moved)
        # Ed25519 is ~50 us a signature: thousands of workspaces would hold the loop for long.
        checkpoints = await asyncio.to_thread(self._sign, moved, now)
        await self.log.publish(checkpoints, outbox=self.outbox)
        for workspace, head in moved.items():
            if self._moved.get(workspace) == head:
                del self._moved[workspace]
        self._last = now
        return checkpoints

    def _sign(self, moved: dict[str, Head], now: float) -> list[AuditCheckpoint]:
        return [sign_checkpoint(ws, seq, digest, now, self.signer) for ws, (seq, digest) in moved.items()]


class CheckpointExporter:
    """Outbox → external sink. `step()` exports one batch (or nothing while a retry waits)."""

    def __init__(
        self,
        log_: CheckpointLog,
        sink: CheckpointSink,
        *,
        clock: Callable[[], float],
        batch_size: int = 100,
        retry_base: float = 1.0,
        retry_cap: float = 300.0,
    ) -> None:
        self.log, self.sink, self.clock = log_, sink, clock
        self.batch_size, self.retry_base, self.retry_cap = batch_size, retry_base, retry_cap
        self.failures = 0
        self.next_attempt = 0.0
        self.exported = 0
        self.last_error: str | None = None

    async def step(self) -> int:
        """Write the oldest batch of the outbox; returns how many were exported (0: none, waiting, failed)."""
        now = self.clock()
        if now < self.next_attempt:
            return 0
        batch = await self.log.outbox(self.batch_size)
        if not batch:
            return 0
        try:
            await self.sink.write([checkpoint for _, checkpoint in batch], now)
        except CheckpointSinkError as exc:
            self.failures += 1
            self.next_attempt = now + retry_delay(self.failures, base=self.retry_base, cap=self.retry_cap)
            self.last_error = str(exc)
            log.warning("checkpoint export to %s failed (%d in a row): %s", self.sink.url, self.failures, exc)
            return 0
        await self.log.exported([entry_id for entry_id, _ in batch])
        self.failures, self.next_attempt, self.last_error = 0, 0.0, None
        self.exported += len(batch)
        return len(batch)

    async def run_until_idle(self) -> int:
        return await until_idle(self.step)

    async def run(self, stop: asyncio.Event, *, idle: float = 1.0) -> None:
        """Export until `stop`; a failing Redis is logged and retried like a failing sink."""
        await poll(self.step, stop, idle_wait=idle, log=log, busy=lambda n: n >= self.batch_size)
        await self.sink.close()
