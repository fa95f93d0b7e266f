"""Custom events onto the one event stream `m:events`, beside message events.

Concurrent requests are coalesced (store/coalescer.py): the events of every request waiting while an
append is in flight leave together as one XADD entry (a msgpack list of events, as every producer
writes), so a burst of single-event requests costs Redis a handful of entries, not one per request.
The 202 is sent after the XADD returns: an accepted event is durable in the stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from schemas.events import Event, event_msgpack_encoder
from store import keyspace
from store.coalescer import Coalescer

MAX_EVENTS_PER_ENTRY = 5000


class CustomEventWriter:
    def __init__(self, redis: aioredis.Redis, *, max_pending: int = 20_000) -> None:
        self.redis = redis
        # Items are whole requests (up to 1,000 events each); a batch holds at most a few of the largest.
        self._appends: Coalescer[Sequence[Event], None] = Coalescer(
            self._append, max_in_flight=2, max_batch=64, max_pending=max_pending
        )

    async def append(self, events: Sequence[Event]) -> None:
        """Durably append one request's events (raises store.coalescer.Backpressure when overloaded)."""
        await self._appends.submit(events)

    async def _append(self, requests: list[Sequence[Event]]) -> list[None]:
        events = [event for request in requests for event in request]
        async with self.redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(events), MAX_EVENTS_PER_ENTRY):
                chunk = events[start : start + MAX_EVENTS_PER_ENTRY]
                pipe.xadd(keyspace.EVENT_STREAM, {keyspace.EVENT_FIELD: event_msgpack_encoder.encode(chunk)})
            await pipe.execute()
        return [None] * len(requests)

    async def drain(self) -> None:
        await self._appends.drain()
