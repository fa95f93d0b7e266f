"""`MessageLedger`: the one owner of a message's Redis state (its hash, which holds its timeline, and its
index entry).

Every status transition goes through here: the enqueue (ingress), the cancel of a scheduled send, the
dispatcher's claim, record and schedule moves, provider events (store/inbound_events.py) and tracking
events. Each write is one Lua script or joins its caller's MULTI, so a status change and the events
that caused it land together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from schemas.events import Event
from schemas.ids import id_at
from schemas.messages import OutboundMessage
from store import keyspace
from store.ledger import index_ranges
from store.ledger.archive_store import ArchiveStore
from store.ledger.records import (
    Claimed,
    MessageMeta,
    NewMessage,
    OutcomeRecord,
    StoredMessage,
    compact_event,
    decode_message,
    decode_meta,
    encode,
    enqueue_row,
    lean_message,
    lean_meta,
)
from store.ledger.scripts import APPEND_EVENTS, CANCEL, CLAIM, DUE, ENQUEUE, RECORD
from store.ledger.statuses import FINISHED
from store.lua import lua_string
from store.replies import as_text

# Encoded messages larger than this are written to their hash before the enqueue script (`_stage`).
STAGED_PAYLOAD_BYTES = 64 * 1024
STAGED_PAYLOAD_TTL_SECONDS = 3600
ENQUEUE_KEYS = [keyspace.EVENT_STREAM, keyspace.SCHEDULE, keyspace.AUDIT_STREAM]


def enqueue_rows(batch: Sequence[NewMessage]) -> tuple[list[tuple], dict[str, bytes]]:
    """The enqueue script's rows for `batch`, and the payloads to stage first (message key → payload):
    those over STAGED_PAYLOAD_BYTES of fresh ids travel as b"" in their row (see `_stage`)."""
    rows: list[tuple] = []
    staged: dict[str, bytes] = {}
    for new in batch:
        payload = encode(new.message)
        if len(payload) > STAGED_PAYLOAD_BYTES and new.fresh_id:  # a derived id may exist: never staged
            staged[keyspace.message(new.message.workspace, new.message.id)] = payload
            payload = b""
        rows.append(enqueue_row(new, payload))
    return rows, staged


def enqueue_results(results: list) -> list[str | None]:
    return [r.decode() if r else None for r in results]


class MessageLedger:
    def __init__(self, redis: aioredis.Redis, *, item_retention_seconds: int = 24 * 3600) -> None:
        self.redis = redis
        self.item_retention_seconds = item_retention_seconds
        self._enqueue = redis.register_script(ENQUEUE)
        self._record = redis.register_script(RECORD)
        self._claim = redis.register_script(CLAIM)
        self._due = redis.register_script(DUE)
        self._cancel = redis.register_script(CANCEL)
        # A packed campaign's settled messages once their hashes are gone (store/ledger/archive_store.py)
        self.archive = ArchiveStore(redis)

    # --- the send path ---------------------------------------------------------------------------
    async def enqueue(self, batch: Sequence[NewMessage]) -> list[str | None]:
        """Write every message atomically. Per message: None if new, else the id a prior send got.
        Large batches go through `store/ledger/blocking.py` instead, from a thread."""
        rows, staged = enqueue_rows(batch)
        if staged:
            await self._stage(staged)
        args: list[int | bytes] = [self.item_retention_seconds, encode(rows)]
        return enqueue_results(await self._enqueue(keys=ENQUEUE_KEYS, args=args))

    async def _stage(self, payloads: dict[str, bytes]) -> None:
        """Large payloads reach their hash by plain HSET, not through the enqueue script: a script's
        arguments become Lua strings, and a 9 MB one held Redis ~100 ms (5 times a plain HSET of it),
        every other client waiting. The hash expires unless the script then accepts the message (it
        PERSISTs it), so a payload whose message was a duplicate, or whose script never ran, goes away.
        Safe because only fresh ids (`new_id`) are staged: no existing hash is ever staged into; a derived id
        (`NewMessage.fresh_id` false) may exist, so its payload rides in the script."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, payload in payloads.items():
                pipe.hset(key, "p", payload)
                pipe.expire(key, STAGED_PAYLOAD_TTL_SECONDS)
            await pipe.execute()

    async def cancel_scheduled(
        self, workspace: str, message_id: str, event: Event, retention_seconds: int
    ) -> str:
        """Cancel if still scheduled; returns 'ok', or the status that prevented it ('' if missing)."""
        keys = [
            keyspace.message(workspace, message_id),
            keyspace.message_events(workspace, message_id),  # a timeline list of before round 9, expired
            keyspace.SCHEDULE,
            keyspace.EVENT_STREAM,
        ]
        result = await self._cancel(keys=keys, args=[encode(event), retention_seconds])
        return result.decode()

    # --- reads -----------------------------------------------------------------------------------
    async def get(self, workspace: str, message_id: str) -> StoredMessage | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keyspace.message(workspace, message_id))
            # the timeline is the hash's `ev`; a message written before round 9 also has this list
            pipe.lrange(keyspace.message_events(workspace, message_id), 0, -1)
            fields, events = await pipe.execute()
        if not fields:
            fields = (await self.archive.read(workspace, [message_id])).get(message_id)
            if fields is None:
                return None
        return StoredMessage.from_redis(fields, events, workspace, message_id)

    async def get_many(self, workspace: str, ids: Sequence[str]) -> list[StoredMessage | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.hgetall(keyspace.message(workspace, message_id))
            rows = await pipe.execute()
        found = dict(zip(ids, rows, strict=True))
        if missing := [i for i, row in found.items() if not row]:
            found |= await self.archive.read(workspace, missing)
        return [StoredMessage.from_redis(found[i], None, workspace, i) if found.get(i) else None for i in ids]

    async def messages(self, workspace: str, ids: Sequence[str]) -> dict[str, OutboundMessage]:
        """The stored messages among `ids`, by id (just their payload: what correlation needs)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.hget(keyspace.message(workspace, message_id), "p")
            raws = dict(zip(ids, await pipe.execute(), strict=True))
        if missing := [i for i, raw in raws.items() if not raw]:
            raws |= {i: fields[b"p"] for i, fields in (await self.archive.read(workspace, missing)).items()}
        return {i: decode_message(raw, workspace, i) for i, raw in raws.items() if raw}

    # --- dispatch --------------------------------------------------------------------------------
    async def claim(self, workspace: str, server_id: str, ids: Sequence[str]) -> list[Claimed | None]:
        if not ids:
            return []
        rows = await self._claim(keys=[keyspace.message(workspace, i) for i in ids], args=[server_id])
        return [
            Claimed(decode_message(row[0], workspace, i), decode_meta(row[1]), int(row[2] or 0))
            if row
            else None
            for i, row in zip(ids, rows, strict=True)
        ]

    async def record(
        self,
        stream: str,
        outcomes: Sequence[OutcomeRecord],
        waiting: Sequence[tuple[str, int]],
        windows: Sequence[tuple[str, int, int]],
        acks: Sequence[bytes],
        *,
        retention_seconds: int,
        mapping_ttl: int,
    ) -> None:
        """Outcomes, waiting messages (`waiting` rows), quota window counts (key, increment, ttl), the acks
        of `stream`'s entries and every event into the event stream: one script, so all or nothing."""
        batch = encode((outcomes, waiting, windows, [a.decode() for a in acks]))  # ids as str, not bin
        await self._record(
            keys=[keyspace.EVENT_STREAM, keyspace.SCHEDULE, stream],
            args=[batch, retention_seconds, mapping_ttl, keyspace.DISPATCH_GROUP],
        )

    def outcome(
        self,
        message: OutboundMessage,
        status: str,
        events: Sequence[Event],
        *,
        lean: MessageMeta | None = None,
        **more: Any,
    ) -> OutcomeRecord:
        """`message`'s row for `record`: its keys, `status` ("" to keep it) and its events framed. A
        finished status expires the message after the retention unless `finished` says otherwise.
        `lean`: the message's meta, when it is a sent campaign message's outcome. Its stored payload becomes
        the envelope alone (`records.lean_message`), its meta keeps what is read after the send
        (`records.lean_meta`), and the timeline (the hash's `ev`) gets the events without the envelope
        (`records.compact_event`). The caller leaves out `pmid`: the `message.sent` event holds it."""
        more.setdefault("finished", int(status in FINISHED))
        if lean is not None:
            more["payload"] = lua_string(encode(lean_message(message)))
            more["meta"] = lua_string(encode(lean_meta(lean)))
            more["timeline_events"] = [lua_string(encode(compact_event(e))) for e in events]
        return OutcomeRecord(
            key=keyspace.message(message.workspace, message.id),
            id=message.id,
            status=status,
            events=[lua_string(encode(e)) for e in events],
            **more,  # further OutcomeRecord fields, each of its own type
        )

    @staticmethod
    def waiting(message: OutboundMessage, due_ms: int) -> tuple[str, int]:
        """`message`'s row for `record`'s waiting list: queued again, back in the schedule at `due_ms`."""
        return keyspace.message(message.workspace, message.id), due_ms

    async def move_due(self, now_ms: int, limit: int = 500) -> int:
        """Scheduled and waiting messages that are due go onto their server's dispatch stream."""
        return int(await self._due(keys=[keyspace.SCHEDULE], args=[now_ms, limit]))

    async def trim_indexes(self, before_ms: int) -> int:
        """Ids are ULIDs, so everything below the id of `before_ms` with zero randomness is older; a packed
        campaign's range (its mark) goes with its launch time (store/ledger/index_ranges.py)."""
        cutoff = "(" + id_at("msg", before_ms)
        removed = 0
        for workspace in map(as_text, await self.redis.hkeys(keyspace.WORKSPACES)):
            removed += await self.redis.zremrangebylex(keyspace.message_index(workspace), "-", cutoff)
            await index_ranges.trim(self.redis, workspace, cutoff)
        return removed

    async def load_scripts(self) -> None:
        for script in (self._record, self._claim, self._due):
            await self.redis.script_load(script.script)

    # --- events from outside the dispatcher: provider webhooks, tracking -------------------------
    @staticmethod
    def keys(workspace: str, ids: Sequence[str]) -> list[str]:
        """The message hashes of `ids`, sorted: what a caller WATCHes before `statuses`/`set_statuses`."""
        return sorted({keyspace.message(workspace, i) for i in ids})

    async def statuses(self, workspace: str, ids: Sequence[str]) -> dict[str, str]:
        """The current status of each stored message among `ids` (id → status). An archived one is
        restored to its hash first (`ArchiveStore.restore`): the caller is about to write it (a WATCH on
        its key then fails once, and the caller's retry finds the hash)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.hget(keyspace.message(workspace, message_id), "s")
            found = dict(zip(ids, await pipe.execute(), strict=True))
        if missing := [i for i, s in found.items() if s is None]:
            restored = await self.archive.restore(workspace, missing)
            found |= {i: fields[b"s"] for i, fields in restored.items()}
        return {i: s.decode() for i, s in found.items() if s is not None}

    @staticmethod
    def set_statuses(pipe: aioredis.client.Pipeline, workspace: str, statuses: dict[str, str]) -> None:
        """Queue status changes (id → status) into the caller's MULTI."""
        for message_id, status in statuses.items():
            pipe.hset(keyspace.message(workspace, message_id), "s", status)

    @staticmethod
    def append_events(pipe: aioredis.client.Pipeline, events: Sequence[Event]) -> None:
        """Each event into its message's timeline (its hash's `ev`, while the message is stored), and all of
        them as one entry of the event stream. EVAL, not EVALSHA: a script missing from Redis's cache would
        fail inside the MULTI while the rest of it is applied."""
        if not events:
            return
        timed = [e for e in events if e.message is not None]
        if timed:
            keys = [keyspace.message(e.workspace, e.message.id) for e in timed if e.message is not None]
            pipe.eval(APPEND_EVENTS, len(keys), *keys, *[encode(e) for e in timed])
        pipe.xadd(keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: encode(list(events))})

    async def record_events(self, events: Sequence[Event]) -> None:
        """`append_events` in a MULTI of its own. An event whose message is archived finds no hash: the
        message is restored from its bucket (`ArchiveStore.restore`) and the event appended to it then."""
        async with self.redis.pipeline(transaction=True) as pipe:
            self.append_events(pipe, events)
            results = await pipe.execute()
        timed = [e for e in events if e.message is not None]
        missing = [timed[int(i) - 1] for i in results[0]] if timed else []
        late: list[Event] = []
        for workspace in sorted({e.workspace for e in missing}):
            mine = [e for e in missing if e.workspace == workspace]
            restored = await self.archive.restore(
                workspace, [e.message.id for e in mine if e.message is not None]
            )
            late += [e for e in mine if e.message is not None and e.message.id in restored]
        if late:
            keys = [keyspace.message(e.workspace, e.message.id) for e in late if e.message is not None]
            await self.redis.eval(APPEND_EVENTS, len(keys), *keys, *[encode(e) for e in late])
