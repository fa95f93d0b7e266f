"""Confirmation mails owed to imported members of double opt-in lists, waiting for an ingress to send.

The import runner applies rows outside the ingress, where the send path (validation, routing, quotas,
enqueue) lives, so it cannot mail anyone itself. Instead the same script that makes members
`unconfirmed` appends one outbox entry (`queue`) naming them; every ingress reads the outbox through one
consumer group (`ingress/import_confirmations.py`), sends and acks. An entry read twice mails nobody twice:
the idempotency key of each mail is (list, subscriber, the batch's apply time), which the entry carries.
"""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from store import keyspace
from store.compare_apply import Batch
from store.replies import group_reads

FIELD = b"c"


class PendingConfirmations(msgspec.Struct, array_like=True):
    workspace: str
    list_id: str
    key_id: str  # whose mail it is: the uploader's key (routing, quotas, scopes)
    applied_ms: int
    members: list[tuple[str, str]]  # (subscriber id, email)


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(PendingConfirmations).decode


def queue(batch: Batch, pending: PendingConfirmations) -> None:
    """In the script that applies the batch: members made `unconfirmed` and their mail are one fact."""
    if pending.members:
        batch.command("XADD", keyspace.CONFIRMATION_OUTBOX, "*", FIELD, _encode(pending))


class ConfirmationOutbox:
    def __init__(self, redis: aioredis.Redis, consumer: str) -> None:
        self.redis = redis
        self.consumer = consumer

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(
                keyspace.CONFIRMATION_OUTBOX, keyspace.CONFIRMATION_GROUP, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(
        self, *, block_ms: int | None, count: int = 10
    ) -> list[tuple[bytes, PendingConfirmations]]:
        """Entries this consumer was handed but did not ack (after a restart), else new ones."""
        for start in ("0", ">"):
            found = await self.redis.xreadgroup(
                keyspace.CONFIRMATION_GROUP,
                self.consumer,
                {keyspace.CONFIRMATION_OUTBOX: start},
                count=count,
                block=block_ms if start == ">" else None,
            )
            read = [(entry_id, fields) for _, items in group_reads(found) for entry_id, fields in items]
            gone = [entry_id for entry_id, fields in read if fields is None]  # trimmed while pending
            for entry_id in gone:
                await self.ack(entry_id)
            entries = [(entry_id, _decode(fields[FIELD])) for entry_id, fields in read if fields is not None]
            if entries:
                return entries
        return []

    async def ack(self, entry_id: bytes) -> None:
        await self.redis.xack(keyspace.CONFIRMATION_OUTBOX, keyspace.CONFIRMATION_GROUP, entry_id)
