"""Read the event stream (consumer group `webhooks`) in batches and turn each event into one pending
delivery per matching, enabled endpoint of the event's workspace.

A delivery's id is derived from (event time, endpoint, event id), so an entry read twice (a crash
before its ack, a reclaim by a peer) produces the same ids and records nothing new. Entries left
pending by this consumer are read first after a restart; a peer's are reclaimed with XAUTOCLAIM once
idle for `reclaim_idle_ms`.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import msgspec
import redis.asyncio as aioredis

from schemas.events import Event
from schemas.ids import derived_id
from schemas.webhooks import WebhookRecord, filter_matches
from store import keyspace
from store.event_entries import entry_events, entry_workspace
from store.group_reader import GroupReader
from store.replies import as_bytes_or_none
from store.webhook_queue import DeliveryQueue, NewDelivery
from store.webhooks import WebhookStore

log = logging.getLogger("mailers.webhooks")
Entries = list[tuple[bytes, dict[bytes, bytes]]]


class EndpointDirectory:
    """Each workspace's enabled endpoints, cached until the workspace's webhook version changes."""

    def __init__(self, redis: aioredis.Redis, *, capacity: int) -> None:
        self.redis = redis
        self.store = WebhookStore(redis)
        self.capacity = capacity
        self._cache: OrderedDict[str, tuple[bytes | None, list[WebhookRecord]]] = OrderedDict()

    async def enabled(self, workspaces: Sequence[str]) -> dict[str, list[WebhookRecord]]:
        versions = [
            as_bytes_or_none(v)
            for v in await self.redis.mget([keyspace.webhook_version(ws) for ws in workspaces])
        ]
        found: dict[str, list[WebhookRecord]] = {}
        for workspace, version in zip(workspaces, versions, strict=True):
            cached = self._cache.get(workspace)
            if cached is None or cached[0] != version:
                # Read the version before the records: a change in between only causes one more reload.
                records = await self.store.all(workspace) if version is not None else []
                cached = (version, [r for r in records if r.enabled])
            self._cache[workspace] = cached
            self._cache.move_to_end(workspace)
            found[workspace] = cached[1]
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return found


def plan_deliveries(
    events: Sequence[Event], endpoints: dict[str, list[WebhookRecord]], encode: Callable[[Event], bytes]
) -> list[NewDelivery]:
    """One delivery per (event, matching endpoint), in stream order; the body is encoded once per event."""
    planned = []
    for event in events:
        matching = [e for e in endpoints.get(event.workspace, []) if filter_matches(e.events, event.type)]
        if not matching:
            continue
        body = encode(event)
        created_ms = int(event.created_at.timestamp() * 1000)
        message_id = event.message.id if event.message is not None else None
        planned += [
            NewDelivery(
                id=derived_id("dlv", created_ms, endpoint.id, event.id),
                workspace=event.workspace,
                endpoint_id=endpoint.id,
                event_id=event.id,
                event_type=event.type,
                message_id=message_id,
                body=body,
                created_ms=created_ms,
            )
            for endpoint in matching
        ]
    return planned


class FanOut:
    def __init__(
        self,
        redis: aioredis.Redis,
        queue: DeliveryQueue,
        directory: EndpointDirectory,
        *,
        consumer: str,
        batch: int,
        block_ms: int,
        reclaim_idle_ms: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis, self.queue, self.directory = redis, queue, directory
        self.consumer, self.batch, self.block_ms, self.reclaim_idle_ms = (
            consumer,
            batch,
            block_ms,
            reclaim_idle_ms,
        )
        self.clock = clock
        self._decode = msgspec.msgpack.Decoder(list[Event]).decode
        self._decode_heads = msgspec.msgpack.Decoder(list[_EventHead]).decode
        self._encode = msgspec.json.Encoder().encode
        self.last_read = 0  # entries the last step read
        self.reader = GroupReader(
            redis,
            keyspace.EVENT_STREAM,
            keyspace.WEBHOOK_GROUP,
            consumer,
            count=batch,
            block_ms=block_ms,
            reclaim_idle_ms=reclaim_idle_ms,
            clock=clock,
        )

    async def ensure_group(self, start: str = "$") -> None:
        """A new deployment starts at the stream's end: history is not replayed to new endpoints. After the
        stream was deleted under a running deliverer, `start="0"`: everything in the new stream is new."""
        await self.reader.ensure_group(start)

    async def step(self) -> int:
        """Fan out one batch of entries; returns how many deliveries were newly recorded.

        Only each event's workspace is decoded first; the whole event only in entries holding one of a
        workspace with an enabled endpoint. Most events go nowhere, and this reader sees every one."""
        entries = await self.reader.read()
        self.last_read = len(entries)
        if not entries:
            return 0
        heads = [self._heads(fields) for _, fields in entries]
        workspaces = list(dict.fromkeys(workspace for entry in heads for workspace in entry))
        endpoints = await self.directory.enabled(workspaces) if workspaces else {}
        events = [
            event
            for (_, fields), entry in zip(entries, heads, strict=True)
            if any(endpoints.get(workspace) for workspace in entry)
            for event in self._events(fields)
        ]
        planned = plan_deliveries(events, endpoints, self._encode)
        return await self.queue.record(
            planned, [entry_id for entry_id, _ in entries], int(self.clock() * 1000)
        )

    def _heads(self, fields: dict[bytes, bytes]) -> list[str]:
        """The workspaces of an entry's events: a chunk of new subscribers (`store/event_entries.py`)
        has one, read without decoding its rows; a chunk is expanded only for a workspace that listens."""
        try:
            workspace = entry_workspace(fields)
        except msgspec.DecodeError:
            log.error("skipping an event stream entry whose subscriber chunk is malformed")
            return []
        if workspace is not None:
            return [workspace]
        blob = fields.get(keyspace.EVENT_FIELD, b"\x90")
        return [head.workspace for head in self._decoded(self._decode_heads, blob)]

    def _events(self, fields: dict[bytes, bytes]) -> list[Event]:
        if keyspace.EVENT_CHUNK_FIELD not in fields:
            return self._decoded(self._decode, fields.get(keyspace.EVENT_FIELD, b"\x90"))
        try:
            return entry_events(fields)
        except msgspec.DecodeError:
            log.error("skipping an event stream entry whose subscriber chunk is malformed")
            return []

    @staticmethod
    def _decoded(decode: Callable[[bytes], list], blob: bytes) -> list:
        try:
            return decode(blob)
        except msgspec.DecodeError:
            log.error("skipping an event stream entry that is not a msgpack list of events")
            return []


class _EventHead(msgspec.Struct):
    """The part of an event the fan-out needs before it knows whether anyone listens."""

    workspace: str
