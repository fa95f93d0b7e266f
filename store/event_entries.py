"""The events of one `m:events` entry, whichever of its two forms it has (`store/keyspace.py`).

Most entries hold a msgpack list of `Event`s (field `b`); an entry appended by a write that created
subscribers may hold them as one columnar chunk instead (field `c`, `schemas/subscriber_chunks.py`).
A reader that needs every event one by one (the webhook fan-out, the automation runner's triggers, tests)
expands chunks with `entry_events`; one that can use the columns (the event sink) reads `entry_chunk`.
"""

from __future__ import annotations

from collections.abc import Mapping

from schemas.events import Event, events_msgpack_decoder
from schemas.subscriber_chunks import NewMembers, chunk_decoder, chunk_head_decoder, expand
from store import keyspace


def entry_chunk(fields: Mapping[bytes, bytes]) -> NewMembers | None:
    """The entry's chunk of new subscribers, or None if it holds a list of events."""
    raw = fields.get(keyspace.EVENT_CHUNK_FIELD)
    return None if raw is None else chunk_decoder.decode(raw)


def entry_workspace(fields: Mapping[bytes, bytes]) -> str | None:
    """A chunk entry's workspace (decoding nothing else), None for an entry of events."""
    raw = fields.get(keyspace.EVENT_CHUNK_FIELD)
    return None if raw is None else chunk_head_decoder.decode(raw).workspace


def entry_events(fields: Mapping[bytes, bytes]) -> list[Event]:
    """Every event of the entry, a chunk expanded (msgspec.DecodeError if malformed; [] if neither field)."""
    chunk = entry_chunk(fields)
    if chunk is not None:
        return expand(chunk)
    raw = fields.get(keyspace.EVENT_FIELD)
    return [] if raw is None else events_msgpack_decoder.decode(raw)
