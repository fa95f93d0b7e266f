"""One sending server's dispatch loop: read its stream in batches, apply quotas, send, record, ack.

Plain asyncio (no Ray): the Dispatcher actor runs one loop per server it owns, and tests run loops
directly. An entry is acked only in the same script call that records its outcome, so a crash before that
leaves it pending, and the restarted loop (same consumer name) or a peer (XAUTOCLAIM) takes it again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

import msgspec
import redis.asyncio as aioredis

from actors.dispatch.outcomes import Decision, decide, event, next_candidate, server_down
from actors.policies.circuit import CircuitBreaker
from actors.policies.quota import ServerQuota, window_ttl
from actors.policies.recipient_throttle import RecipientThrottle
from actors.policies.retry import RetryPolicy
from actors.policies.suppression import list_scope
from providers.base import ProviderAdapter, Transient
from providers.inbound import INBOUND_PROVIDERS
from schemas.messages import OutboundMessage
from schemas.servers import Status
from store import keyspace
from store.coalescer import Coalescer
from store.group_reader import GroupReader
from store.ledger import Claimed, MessageLedger, OutcomeRecord

log = logging.getLogger("mailers.dispatch")
# (workspace, sending domain, list ids, recipients) per message → the suppressed recipients of each.
SuppressionCheck = Callable[[list[tuple[str, str, list[str], list[str]]]], Awaitable[list[list]]]
PROVIDER_ID_TTL = 30 * 24 * 3600
# Outcomes after which a campaign message's body is never needed again (it is not sent again).
LEAN_ONCE = frozenset({"sent", "delivered"})


class ServerRuntime(msgspec.Struct, kw_only=True):
    workspace: str
    id: str
    provider: str
    adapter: ProviderAdapter
    quota: ServerQuota
    throttle: RecipientThrottle
    chunk_size: int = 16
    parallel_chunks: int = 1


class DispatchLoop:
    def __init__(
        self,
        redis: aioredis.Redis,
        server: ServerRuntime,
        *,
        consumer: str,
        retry: RetryPolicy,
        circuit: CircuitBreaker,
        batch_size: int = 100,
        block_ms: int = 250,
        reclaim_idle_ms: int = 30_000,
        linger_seconds: float = 0.005,
        on_status: Callable[[str, Status], object] | None = None,
        on_suppress: Callable[[str, list[str]], object] | None = None,
        suppressions: SuppressionCheck | None = None,
        retention_seconds: int = 30 * 24 * 3600,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.redis = redis
        self.records = MessageLedger(redis)
        self.server = server
        self.consumer = consumer
        self.retry, self.circuit = retry, circuit
        self.on_status, self.on_suppress = on_status, on_suppress
        self.suppressions = suppressions
        self.retention_seconds = retention_seconds
        # After a read that did not fill a batch, wait this long before the next: under a trickle of
        # single sends the claim, suppression check and record are then paid per handful of messages
        # rather than per message. The first message after a quiet spell is read at once.
        self.linger_seconds = linger_seconds
        self.clock = clock
        self.rng = rng or random.Random()
        self.stream = keyspace.dispatch_stream(server.workspace, server.id)
        self.reader = GroupReader(
            redis,
            self.stream,
            keyspace.DISPATCH_GROUP,
            consumer,
            count=batch_size,
            block_ms=block_ms,
            reclaim_idle_ms=reclaim_idle_ms,
            clock=clock,
        )
        self._status: Status = "healthy"
        self._in_flight: set[bytes] = set()  # entries of chunks being sent, which a reclaim must not re-read
        # The outcomes of chunks that finish together are recorded in one script call.
        self._outcomes = Coalescer(self._record_outcomes, max_in_flight=2, max_batch=1000)
        self.sent = 0

    async def start(self) -> None:
        await self.records.load_scripts()
        await self.reader.ensure_group()
        keys = self.server.quota.window_keys(self.clock())
        counts = (
            await self.redis.mget([keyspace.quota_window(self.server.id, k) for k in keys]) if keys else []
        )
        self.server.quota.load({k: int(c) for k, c in zip(keys, counts, strict=True) if c})

    async def run(self, stop: asyncio.Event) -> None:
        """Read, claim and admit the next batch while the last one's chunks are still being sent, so the
        provider is not left idle during the claim and suppression round trips. At most
        `parallel_chunks` chunks are in flight; on `stop` the in-flight chunks finish and are recorded."""
        while not stop.is_set():
            try:
                await self.start()
                async with asyncio.TaskGroup() as chunks:
                    lanes = asyncio.Semaphore(self.server.parallel_chunks)
                    while not stop.is_set():
                        await self.step(chunks, lanes)
            except asyncio.CancelledError:
                raise
            except Exception:  # an ExceptionGroup from the chunks, or the step's own error
                log.exception("dispatch step failed for %s", self.server.id)
                # What this consumer held is re-read first, not after 30 s; a restarted Redis has lost
                # the loaded scripts and maybe the group, which `start` restores.
                self.reader.reread_own()
                self._in_flight.clear()
                await asyncio.sleep(0.5)

    async def step(self, chunks: asyncio.TaskGroup, lanes: asyncio.Semaphore) -> int:
        """One batch: claimed, checked and admitted here; its chunks are handed to `chunks`.

        A TaskGroup, not loose tasks: when one chunk fails (Redis gone), the others must stop sending
        too, or they would send what can no longer be recorded, and all of it would go out twice."""
        read = await self.reader.read()
        if 0 < len(read) < self.reader.count and self.linger_seconds > 0:
            await asyncio.sleep(self.linger_seconds)  # the next read finds what arrives meanwhile
        entries = [e for e in read if e[0] not in self._in_flight]
        if not entries:
            return 0
        ids = [fields[b"id"].decode() for _, fields in entries]
        claimed = await self.records.claim(self.server.workspace, self.server.id, ids)
        work = [(entry_id, c) for (entry_id, _), c in zip(entries, claimed, strict=True) if c is not None]
        skipped = [entry_id for (entry_id, _), c in zip(entries, claimed, strict=True) if c is None]
        now = self.clock()
        if self.suppressions is not None and work:
            work = await self._drop_suppressed(work, now)
        if not self.circuit.allow(now):
            work = await self._fail_over_while_down(work, now)
        send_now, waiting, wait_until = self._admit(work, now)
        if waiting or skipped:
            await self._record(
                [e for e, _ in waiting] + skipped, [], [], [c for _, c in waiting], wait_until, now
            )
        # Record after every chunk: a crash between a provider's acceptance and our record (the only
        # place a duplicate can come from) then repeats only what was in flight, at most
        # `chunk_size * parallel_chunks` messages (the SMTP pool size).
        size = self.server.chunk_size
        for i in range(0, len(send_now), size):
            chunk = send_now[i : i + size]
            await lanes.acquire()
            self._in_flight.update(e for e, _ in chunk)
            chunks.create_task(self._deliver(chunk, now, lanes))
        return len(send_now)

    async def _deliver(
        self, chunk: list[tuple[bytes, Claimed]], now: float, lanes: asyncio.Semaphore
    ) -> None:
        """Send one chunk and record its outcomes; its lane is free again only once they are recorded,
        so what a provider accepted and we have not recorded never exceeds the lanes' capacity."""
        try:
            entry_ids, claimed = [e for e, _ in chunk], [c for _, c in chunk]
            decisions = await self._send(claimed, now)
            finished = self.clock()
            await self._outcomes.submit_many(list(zip(entry_ids, claimed, decisions, strict=True)))
            self.server.quota.hold(len(chunk), finished)
            self.server.throttle.hold([c.message.recipients[0].domain for c in claimed], finished)
            self._in_flight.difference_update(entry_ids)
            await self._after(decisions, finished)
        finally:
            lanes.release()

    async def _record_outcomes(self, outcomes: list[tuple[bytes, Claimed, Decision]]) -> list[None]:
        await self._record(
            [e for e, _, _ in outcomes],
            [c for _, c, _ in outcomes],
            [d for _, _, d in outcomes],
            [],
            0.0,
            self.clock(),
        )
        return [None] * len(outcomes)

    async def _drop_suppressed(
        self, work: list[tuple[bytes, Claimed]], now: float
    ) -> list[tuple[bytes, Claimed]]:
        """Suppressed recipients never reach a provider nor take quota; checked at send time, so a
        suppression added after the message was accepted still applies. One shard call per batch."""
        assert self.suppressions is not None
        found = await self.suppressions(
            [
                (
                    c.message.workspace,
                    c.message.sending_domain,
                    list_scope(c.message.metadata),
                    [a.email for a in c.message.recipients],
                )
                for _, c in work
            ]
        )
        kept, ended, outcomes = [], [], []
        for (entry_id, claimed), hits in zip(work, found, strict=True):
            if not hits:
                kept.append((entry_id, claimed))
                continue
            events = [
                event(
                    claimed,
                    "message.suppressed",
                    now,
                    self.server.id,
                    self.server.provider,
                    {"recipient": h.email, "scope": h.scope, "reason": h.reason},
                    to=h.email,
                )
                for h in hits
            ]
            remaining = without_recipients(claimed.message, {h.email.lower() for h in hits})
            if remaining.recipients:  # the rest of its recipients go on; the events are recorded now
                kept.append((entry_id, Claimed(remaining, claimed.meta, claimed.attempts)))
                outcomes.append(self.records.outcome(claimed.message, "", events))
            else:
                ended.append((entry_id, claimed))
                outcomes.append(self.records.outcome(claimed.message, "suppressed", events))
        if not outcomes:
            return kept
        await self.records.record(
            self.stream,
            outcomes,
            [],
            [],
            [e for e, _ in ended],
            retention_seconds=self.retention_seconds,
            mapping_ttl=PROVIDER_ID_TTL,
        )
        return kept

    async def _fail_over_while_down(self, work: list[tuple[bytes, Claimed]], now: float):
        """While the circuit is open, messages with another candidate move on; the rest wait here."""
        moved: list[tuple[bytes, Claimed, Decision]] = []
        staying: list[tuple[bytes, Claimed]] = []
        for entry_id, claimed in work:
            decision = server_down(claimed, server_id=self.server.id, provider=self.server.provider, now=now)
            if decision:
                moved.append((entry_id, claimed, decision))
            else:
                staying.append((entry_id, claimed))
        if moved:
            await self._record(
                [e for e, _, _ in moved],
                [c for _, c, _ in moved],
                [d for _, _, d in moved],
                [],
                0.0,
                now,
                attempted=False,
            )
        return staying

    def _admit(self, work: list[tuple[bytes, Claimed]], now: float):
        """Quota and recipient-domain throttles: what may go now, and when the rest may try again."""
        if not self.circuit.allow(now):
            return [], work, now + 1.0
        granted = self.server.quota.grant(len(work), now)
        allowed = work[:granted]
        admitted = self.server.throttle.admit([c.message.recipients[0].domain for _, c in allowed], now)
        send_now = [w for w, ok in zip(allowed, admitted, strict=True) if ok]
        waiting = [w for w, ok in zip(allowed, admitted, strict=True) if not ok] + work[granted:]
        return send_now, waiting, now + max(self.server.quota.next_refill(now), 0.05)

    async def _send(self, claimed: list[Claimed], now: float) -> list[Decision]:
        try:
            outcomes = await self.server.adapter.send_batch([c.message for c in claimed])
        except Exception as exc:  # an adapter must not raise; if it does, nothing was confirmed sent
            log.exception("adapter %s raised", self.server.provider)
            outcomes = [Transient(reason=f"adapter error: {exc}")] * len(claimed)
        return [
            decide(
                c,
                o,
                server_id=self.server.id,
                provider=self.server.provider,
                now=self.clock(),
                retry=self.retry,
                rng=self.rng,
            )
            for c, o in zip(claimed, outcomes, strict=True)
        ]

    async def _record(
        self,
        entry_ids: Sequence[bytes],
        sent: list[Claimed],
        decisions: list[Decision],
        waiting: list[Claimed],
        wait_until: float,
        now: float,
        *,
        attempted: bool = True,
    ) -> None:
        """Outcomes, waiting messages, quota counts and acks: one script call (`MessageLedger.record`)."""
        windows = []
        if sent and attempted:
            windows = [
                (keyspace.quota_window(self.server.id, w), len(sent), window_ttl(w))
                for w in self.server.quota.window_keys(now)
            ]
        await self.records.record(
            self.stream,
            [self._outcome(c, d, attempted=attempted) for c, d in zip(sent, decisions, strict=True)],
            [self.records.waiting(c.message, int(wait_until * 1000)) for c in waiting],
            windows,
            list(entry_ids),
            retention_seconds=self.retention_seconds,
            mapping_ttl=PROVIDER_ID_TTL,
        )
        self.sent += sum(1 for d in decisions if d.status in ("sent", "delivered"))

    def _outcome(self, claimed: Claimed, decision: Decision, *, attempted: bool) -> OutcomeRecord:
        message = claimed.message
        # A campaign message taken by the provider keeps its envelope only: its body is the campaign's
        # pinned template version rendered for its subscriber, and its provider id is in its
        # `message.sent` event, not a `pmid` field of its own (docs/campaigns.md, "Memory").
        lean = bool(message.campaign_id) and decision.status in LEAN_ONCE and decision.retry_at is None
        fields = ["prv", self.server.provider]
        more: dict[str, object] = {"fields": fields}
        if decision.provider_message_id and not lean:
            fields += ["pmid", decision.provider_message_id]
        if decision.provider_message_id and self.server.provider in INBOUND_PROVIDERS:
            # The provider id → message mapping is what its event webhooks are matched by (besides our id
            # where they carry it); a provider that sends none (SMTP, the sandbox) gets no key a message.
            more["mapping"] = keyspace.provider_message(
                self.server.provider, decision.provider_message_id.strip("<>")
            )
            more["mapped_to"] = f"{message.workspace}|{message.id}"
        if decision.failover_to:
            fields += ["srv", decision.failover_to]
            more["failover"] = keyspace.dispatch_stream(message.workspace, decision.failover_to)
        if decision.retry_at is not None:
            more["retry_ms"] = str(int(decision.retry_at * 1000))
        return self.records.outcome(
            message,
            decision.status,
            decision.events,
            attempted=int(attempted),
            lean=claimed.meta if lean else None,
            **more,
        )

    async def _after(self, decisions: list[Decision], now: float) -> None:
        for decision in decisions:
            if decision.server_fault:
                self.circuit.record_server_fault(now)
            else:
                self.circuit.record(decision.success, now)
            if decision.suppress and self.on_suppress is not None:
                await _maybe_await(self.on_suppress(self.server.workspace, decision.suppress))
        status = self.circuit.status(now)
        if status != self._status:
            self._status = status
            if self.on_status is not None:
                await _maybe_await(self.on_status(self.server.id, status))


def without_recipients(message: OutboundMessage, blocked: set[str]) -> OutboundMessage:
    def keep(addresses):
        return [a for a in addresses if a.email.lower() not in blocked]

    return msgspec.structs.replace(message, to=keep(message.to), cc=keep(message.cc), bcc=keep(message.bcc))


async def _maybe_await(result: object) -> None:
    if inspect.isawaitable(result):
        await result


__all__ = ["DispatchLoop", "ServerRuntime", "next_candidate"]
