"""New subscribers of one write as one columnar change on the event stream (issue #12's import speed).

A bulk upsert or an import batch that creates N subscribers on a list owes the stream 2N events:
`subscriber.created` (version 1) and the membership event (`list.subscribed`, `list.unconfirmed` or
`subscriber.unsubscribed`, version 2) of each. Their every field but the person's own (id, email, name,
attributes) is shared by the whole write, so the write appends them as one `NewMembers` value: parallel
arrays of those four, plus the shared workspace, list, status and time. `expand` turns it back into the
2N `Event`s, exactly the ones the write would have appended one by one (`tests/audience/
test_change_events.py` checks it against events built the obvious way); the event sink never expands it
(it mirrors and stores a chunk column by column), the webhook fan-out and the automation runner expand
it only for a workspace that listens.

Event ids are derived from the subscriber id, so expanding twice gives the same events (webhook delivery
ids and the analytics store's dedupe rely on that): `subscriber.created` is `evt_` + the subscriber's
ULID, its membership event the same with the last character moved 16 places along the Crockford
alphabet (the top bit of the last 5-bit group flipped). Subscriber ids are fresh random ULIDs, so these
ids are as unique as any other.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from schemas.events import Event

MEMBER_EVENT = {
    "subscribed": "list.subscribed",
    "unconfirmed": "list.unconfirmed",
    "unsubscribed": "subscriber.unsubscribed",
    "removed": "list.removed",  # taken off the list without unsubscribing (no suppression)
}
CREATED = "subscriber.created"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_FLIP = {c: _CROCKFORD[(i + 16) % 32] for i, c in enumerate(_CROCKFORD)}


class NewMembers(msgspec.Struct, array_like=True):
    """Subscribers created by one write, all joining `list_id` with `status` at `created_ms`."""

    workspace: str
    list_id: str
    status: str
    created_ms: int
    ids: list[str] = []
    emails: list[str] = []
    names: list[str | None] = []
    attributes: list[dict[str, Any]] = []

    def add(self, subscriber_id: str, email: str, name: str | None, attributes: dict[str, Any]) -> None:
        self.ids.append(subscriber_id)
        self.emails.append(email)
        self.names.append(name)
        self.attributes.append(attributes)

    def __len__(self) -> int:
        return len(self.ids)

    def only(self, rows: Sequence[int]) -> NewMembers:
        """The same chunk with only the rows at these indexes (in their order)."""
        return msgspec.structs.replace(
            self,
            ids=[self.ids[i] for i in rows],
            emails=[self.emails[i] for i in rows],
            names=[self.names[i] for i in rows],
            attributes=[self.attributes[i] for i in rows],
        )

    @property
    def member_type(self) -> str:
        return MEMBER_EVENT[self.status]

    @property
    def types(self) -> tuple[str, str]:
        return CREATED, MEMBER_EVENT[self.status]


class ChunkHead(msgspec.Struct, array_like=True):
    """The first field of a chunk: what a reader decodes before it knows whether it needs the rest."""

    workspace: str


chunk_encoder = msgspec.msgpack.Encoder()
chunk_decoder = msgspec.msgpack.Decoder(NewMembers)
chunk_head_decoder = msgspec.msgpack.Decoder(ChunkHead)


def created_event_id(subscriber_id: str) -> str:
    return "evt_" + subscriber_id[4:]


def member_event_id(subscriber_id: str) -> str:
    return "evt_" + subscriber_id[4:-1] + _FLIP[subscriber_id[-1]]


@functools.lru_cache(maxsize=256)
def iso(millis: int) -> str:
    """`created_at` as the subscriber events carry it (RFC 3339, milliseconds, `Z`)."""
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat().replace("+00:00", "Z")


@functools.lru_cache(maxsize=256)
def moment(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, UTC)


def expand(chunk: NewMembers) -> list[Event]:
    """The chunk's events, two per subscriber (created, then membership), in the chunk's order."""
    when, created_at, member_type = moment(chunk.created_ms), iso(chunk.created_ms), chunk.member_type
    workspace, list_id, status = chunk.workspace, chunk.list_id, chunk.status
    events = []
    for subscriber_id, email, name, attributes in zip(
        chunk.ids, chunk.emails, chunk.names, chunk.attributes, strict=True
    ):
        person = {
            "id": subscriber_id,
            "email": email,
            "name": name,
            "attributes": attributes,
            "status": "active",
            "created_at": created_at,
        }
        events.append(
            Event(
                id=created_event_id(subscriber_id),
                type=CREATED,
                created_at=when,
                workspace=workspace,
                data={"subscriber": person, "version": 1},
            )
        )
        member = {
            "subscriber": subscriber_id,
            "email": email,
            "list": list_id,
            "status": status,
            "version": 2,
        }
        events.append(
            Event(
                id=member_event_id(subscriber_id),
                type=member_type,
                created_at=when,
                workspace=workspace,
                data=member,
            )
        )
    return events
