"""The message hash as the ledger writes and reads it: its Structs and the enqueue's row encoding.

A message hash holds `s` status, `p` the msgpack OutboundMessage, `m` the msgpack MessageMeta, `srv`
its server, `prv`/`pmid` the provider and its id once sent (a sent campaign message keeps no `pmid`: its
`message.sent` event holds the id), `att` attempts, and `ev` its timeline: every event of the message in
order, one msgpack array (store/ledger/scripts.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from schemas.events import Event
from schemas.ids import is_id, ulid_bytes, ulid_text
from schemas.message_status import MessageStatus
from schemas.messages import Address, OutboundMessage
from store.ledger.index_ranges import position_of, range_prefix
from store.lua import lua_string


class MessageMeta(msgspec.Struct, kw_only=True, omit_defaults=True):
    created_ms: int
    candidates: list[str] = []
    send_at_ms: int | None = None
    purpose: str | None = None
    track_opens: bool = False
    track_clicks: bool = False
    unsubscribe: bool = False
    links: list[str] = []


class NewMessage(msgspec.Struct, kw_only=True):
    message: OutboundMessage
    meta: MessageMeta
    status: str  # queued | scheduled | suppressed
    server: str
    events: list[Event]
    # The full Redis key of the per-message idempotency record; DERIVED_ITEM: the id is derived from its
    # inputs and the message hash itself is the record.
    item_key: str | None = None
    audit: bytes | None = None  # the request's audit entry (msgpack), appended in the same script
    fresh_id: bool = True  # False: the id is derived from its inputs and may exist (never staged)
    # A packed campaign's id (from its recipient's position): indexed as its range's mark, not by itself
    # (store/ledger/index_ranges.py).
    ranged: bool = False


class Claimed(msgspec.Struct):
    message: OutboundMessage
    meta: MessageMeta
    attempts: int


class OutcomeRecord(msgspec.Struct, array_like=True):
    """One message's recorded outcome, as the record script reads it (field order is the script's).
    Built by `MessageLedger.outcome`."""

    key: str  # the message hash
    id: str
    status: str  # "" leaves the status as it is
    events: list[msgspec.Raw] = []  # each framed by `lua_string`
    fields: list[str] = []  # further hash fields, flat: name, value, ...
    mapping: str = ""  # provider message id → message key, or ""
    mapped_to: str = ""
    failover: str = ""  # the next server's dispatch stream, or ""
    attempted: int = 0  # 1: count an attempt
    finished: int = 0  # 1: expire after the retention
    retry_ms: str = ""  # back into the schedule at this time, or ""
    # The message's stored payload replaced by this one (framed by `lua_string`), or "": a sent campaign
    # message keeps only its envelope (`lean_message`).
    payload: msgspec.Raw = msgspec.Raw(b"\xa0")
    # What goes to the message's timeline (its hash's `ev`) instead of `events` (each framed: compact
    # `TimelineEvent` arrays), or [] for `events` themselves:
    # a campaign message's timeline keeps its events without the envelope its hash holds (`compact_event`).
    timeline_events: list[msgspec.Raw] = []
    # The message's stored meta replaced by this one (framed by `lua_string`), or "": a sent campaign
    # message's keeps what is read after the send (`lean_meta`).
    meta: msgspec.Raw = msgspec.Raw(b"\xa0")


encode = msgspec.msgpack.Encoder().encode
decode_meta = msgspec.msgpack.Decoder(MessageMeta).decode


class LeanEnvelope(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A sent campaign message's `p` (`lean_message`): its envelope, without the body, headers and
    attachments (the campaign's template renders them again) and without its id and workspace, which the
    hash's key names (~44 B a message). `decode_message` reads it back as the whole message's envelope."""

    from_: Address = msgspec.field(name="from")
    to: list[Address]
    cc: list[Address] = []
    bcc: list[Address] = []
    reply_to: list[Address] = []
    subject: str = ""
    tags: list[str] = []
    metadata: dict[str, str] = {}
    campaign_id: str | None = None


_decode_whole = msgspec.msgpack.Decoder(OutboundMessage).decode
_decode_lean = msgspec.msgpack.Decoder(LeanEnvelope).decode


def starts_with_id(raw: bytes) -> bool:
    """Whether the msgpack map `raw` has `id` as its first key, after its header (a fixmap, a map 16 or a
    map 32)."""
    head = raw[0] if raw else 0
    start = 1 if 0x80 <= head <= 0x8F else 3 if head == 0xDE else 5
    return raw[start : start + 3] == b"\xa2id"


def decode_message(raw: bytes, workspace: str, message_id: str) -> OutboundMessage:
    """The message stored as `raw` in `workspace`'s hash of `message_id`. A whole message is a msgpack map
    whose first key is its `id` (its Struct's first field, never omitted); a lean envelope has none, and
    gets the id and workspace from the key."""
    if starts_with_id(raw):
        return _decode_whole(raw)
    return OutboundMessage(id=message_id, workspace=workspace, **msgspec.structs.asdict(_decode_lean(raw)))


class TimelineEvent(msgspec.Struct, array_like=True):
    """An event as a campaign message's timeline keeps it (`compact_event`): a msgpack array of id, type,
    time and data, with no field names and no envelope. In `ev` beside whole events (maps), which is how
    a decoder tells them apart. Since round 12 an `evt_` id is its ULID's 16 bytes and a type of
    `TIMELINE_TYPES` its index there (25 B less an event, ~75 B for a sent message's three); the text
    forms of before still read."""

    id: Any  # str, or an `evt_` id's 16 bytes (msgspec cannot decode the union `str | bytes`)
    type: str | int
    created_at: datetime
    data: dict[str, Any] = {}

    def as_event(self) -> Event:
        return Event(
            id=self.id if isinstance(self.id, str) else "evt_" + ulid_text(self.id),
            type=self.type if isinstance(self.type, str) else TIMELINE_TYPES[self.type],
            created_at=self.created_at,
            workspace="",
            data=self.data,
        )


# The types a compact timeline names by index (`TimelineEvent`). Stored data: append, never reorder.
TIMELINE_TYPES = (
    "message.accepted",
    "message.scheduled",
    "message.sent",
    "message.delivered",
    "message.deferred",
    "message.bounced",
    "message.failed",
    "message.suppressed",
    "message.canceled",
    "message.complained",
)
_TIMELINE_CODES = {name: code for code, name in enumerate(TIMELINE_TYPES)}


_decode_event = msgspec.msgpack.Decoder(Event).decode
_decode_compact = msgspec.msgpack.Decoder(TimelineEvent).decode
_decode_items = msgspec.msgpack.Decoder(list[msgspec.Raw]).decode
_MSGPACK_ARRAYS = frozenset((*range(0x90, 0xA0), 0xDC, 0xDD))  # the first byte of a msgpack array


def timeline_of(ev: bytes) -> list[Event]:
    """A message hash's `ev` as events. Whole events are msgpack maps, compact ones arrays
    (`TimelineEvent`, without their workspace and envelope); a compact one of before round 9 was a map
    with those two empty, and reads as such."""
    return [timeline_event(raw) for raw in _decode_items(ev)]


def latest_event(ev: bytes) -> Event | None:
    """The last event of a message hash's `ev` (the others are not decoded), or None."""
    items = _decode_items(ev)
    return timeline_event(items[-1]) if items else None


def timeline_event(raw: msgspec.Raw) -> Event:
    """One item of `ev` (see `timeline_of`)."""
    return _decode_compact(raw).as_event() if memoryview(raw)[0] in _MSGPACK_ARRAYS else _decode_event(raw)


class StoredMessage(msgspec.Struct, kw_only=True):
    message: OutboundMessage
    meta: MessageMeta
    status: str
    server: str | None
    provider: str | None
    provider_message_id: str | None
    attempts: int
    events: list[Event]

    @classmethod
    def from_redis(
        cls, fields: dict[bytes, bytes], events: list[bytes] | None, workspace: str, message_id: str
    ) -> StoredMessage:
        """The hash of `workspace`'s message `message_id`. `events`: the entries of the message's timeline
        list of before round 9 (usually none), or None when the timeline is not wanted."""
        text = {k.decode(): v for k, v in fields.items()}
        timeline = (
            []
            if events is None
            else timeline_of(text.get("ev", b"\x90")) + [_decode_event(e) for e in events]
        )
        if events:  # a message that straddled the upgrade: its events in both places, merged by time
            timeline.sort(key=lambda e: e.created_at)
        return cls(
            message=decode_message(text["p"], workspace, message_id),
            meta=decode_meta(text["m"]),
            status=text["s"].decode(),
            server=text["srv"].decode() or None if "srv" in text else None,
            provider=text["prv"].decode() if "prv" in text else None,
            provider_message_id=_provider_message_id(text, timeline if events is not None else None),
            attempts=int(text.get("att", b"0")),
            events=timeline,
        )

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.meta.created_ms / 1000, UTC)


def _provider_message_id(text: dict[str, bytes], timeline: list[Event] | None) -> str | None:
    """The provider's id of a sent message: its hash's `pmid`, or, for a sent campaign message (lean: it
    keeps no `pmid`), the one its latest `message.sent` event carries. `prv` says a provider was tried."""
    if "pmid" in text:
        return text["pmid"].decode()
    if "prv" not in text:
        return None
    for event in reversed(timeline if timeline is not None else timeline_of(text.get("ev", b"\x90"))):
        if event.type == "message.sent":
            return event.data.get("provider_message_id")
    return None


DERIVED_ITEM = "="


def compact_event(event: Event) -> TimelineEvent:
    """An event as a campaign message's timeline keeps it: id, type, time and data, which is all the
    message view shows (`GET /v1/messages/:id`); the workspace and the message envelope are the hash's,
    and the full event went to `m:events`. An array without field names, its `evt_` id as 16 bytes and its
    type as an index (`TimelineEvent`): ~31 B for a `message.accepted`, ~100 B for a `message.sent` with
    its provider id; the whole event is ~420-450 B."""
    return TimelineEvent(
        id=ulid_bytes(event.id[4:]) if is_id(event.id, "evt") else event.id,
        type=_TIMELINE_CODES.get(event.type, event.type),
        created_at=event.created_at,
        data=event.data,
    )


def lean_message(message: OutboundMessage) -> LeanEnvelope:
    """What a sent campaign message keeps in its hash: the envelope (addresses, subject, tags, metadata,
    campaign) without the body, headers or attachments, and without its id and workspace (its hash's key
    names both; `decode_message` fills them in). Its body is the campaign's pinned template version
    rendered for the subscriber (`metadata.subscriber_id`): stored once per campaign, not once per
    recipient. Everything that reads a sent message (the API's message view and list, provider events,
    tracking) reads only the envelope."""
    return LeanEnvelope(**{name: getattr(message, name) for name in LeanEnvelope.__struct_fields__})


def lean_meta(meta: MessageMeta) -> MessageMeta:
    """What a sent campaign message keeps of its meta: what is read after the send, by the message view
    and list (`created_ms`, `send_at_ms`) and a click (`links`). Its failover `candidates`, `purpose` and
    tracking flags served its send alone (actors/dispatch/outcomes.next_candidate, actors/outbound). With
    the rest of round 12 (no `pmid` field, compact ids and types, the envelope without id and workspace)
    the hash went from 1,000 B (`MEMORY USAGE`) to 744 (docs/campaigns.md, "Memory")."""
    return MessageMeta(created_ms=meta.created_ms, send_at_ms=meta.send_at_ms, links=meta.links)


def enqueue_row(new: NewMessage, payload: bytes) -> tuple:
    """`new` as one row of the enqueue script's batch (the script's field order). `payload` is the
    encoded message, or b"" when it was staged in the hash beforehand (MessageLedger.enqueue)."""
    message = new.message
    scheduled = new.status == MessageStatus.SCHEDULED and new.meta.send_at_ms is not None
    events = [lua_string(encode(e)) for e in new.events]
    return (
        message.id,
        message.workspace,
        new.item_key or "",
        new.status,
        lua_string(payload),
        lua_string(encode(new.meta)),
        new.server,
        str(new.meta.send_at_ms) if scheduled else "",
        events,
        lua_string(new.audit or b""),
        # What the hash's `ev` keeps instead of `events`, or [] for `events` themselves: a campaign
        # message's first events without the envelope its `p` holds (`compact_event`; ~31 B, not ~420 B).
        [lua_string(encode(compact_event(e))) for e in new.events] if message.campaign_id else [],
        range_prefix(message.id) if new.ranged else "",
        position_of(message.id) if new.ranged else 0,
    )
