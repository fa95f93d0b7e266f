"""A message's timeline is its hash's `ev` (store/ledger/scripts.py): every writer appends there, in order,
only while the message is stored; a timeline list written before round 9 is still read and expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from schemas.events import Event, EventMessage
from schemas.ids import new_id
from store import keyspace
from store.event_entries import entry_events
from store.ledger import MessageLedger
from store.ledger.listing import MessageFilter, MessageLister
from store.ledger.records import (
    TIMELINE_TYPES,
    TimelineEvent,
    compact_event,
    encode,
    lean_message,
    starts_with_id,
    timeline_of,
)
from tests.pipeline.helpers import enqueue, message, new_message

RETENTION = 3600


def event_of(msg, kind: str, at: datetime) -> Event:
    return Event(
        id=new_id("evt"),
        type=kind,
        created_at=at,
        workspace=msg.workspace,
        message=EventMessage(id=msg.id, to=msg.to[0].email),
        data={},
    )


async def stream_types(redis) -> list[str]:
    return [e.type for _, fields in await redis.xrange(keyspace.EVENT_STREAM) for e in entry_events(fields)]


async def test_every_writer_appends_to_the_hash_in_order_and_no_list_is_made(redis) -> None:
    msg = message()
    assert await enqueue(redis, [new_message(msg, ["srv_a"])]) == [None]
    ledger = MessageLedger(redis)
    now = datetime.now(UTC)
    # the dispatcher's record script, then events from outside it (provider webhooks, tracking)
    await ledger.claim(msg.workspace, "srv_a", [msg.id])
    sent = ledger.outcome(msg, "sent", [event_of(msg, "message.sent", now)], attempted=1)
    await ledger.record(
        keyspace.EVENT_STREAM, [sent], [], [], [], retention_seconds=RETENTION, mapping_ttl=60
    )
    later = [
        event_of(msg, kind, now + timedelta(seconds=i))
        for i, kind in enumerate(["message.delivered", "message.opened"], 1)
    ]
    await ledger.record_events(later)
    # 300 more: the array's count is past one and two bytes
    many = [event_of(msg, "message.clicked", now + timedelta(seconds=10 + i)) for i in range(300)]
    await ledger.record_events(many)

    stored = await ledger.get(msg.workspace, msg.id)
    assert [e.type for e in stored.events[:4]] == [
        "message.accepted",
        "message.sent",
        "message.delivered",
        "message.opened",
    ]
    assert [e.id for e in stored.events[4:]] == [e.id for e in many]
    assert not await redis.exists(keyspace.message_events(msg.workspace, msg.id))
    assert await redis.ttl(keyspace.message(msg.workspace, msg.id)) > 0  # sent: it expires with its events
    assert (await stream_types(redis)).count("message.clicked") == 300


async def test_events_of_a_message_no_longer_stored_go_to_the_stream_only(redis) -> None:
    """A provider's late event or a tracking hit for a message past its retention. Before, it made a
    timeline list of its own with no expiry: a key leaked for good."""
    gone = message()
    ledger = MessageLedger(redis)
    await ledger.record_events([event_of(gone, "message.bounced", datetime.now(UTC))])
    assert not await redis.exists(keyspace.message(gone.workspace, gone.id))
    assert not await redis.exists(keyspace.message_events(gone.workspace, gone.id))
    assert await stream_types(redis) == ["message.bounced"]


async def test_a_timeline_list_of_before_round_9_is_read_in_order_and_expires_with_its_message(redis) -> None:
    msg = message()
    assert await enqueue(redis, [new_message(msg, ["srv_a"])]) == [None]
    ledger = MessageLedger(redis)
    now = datetime.now(UTC) + timedelta(seconds=1)
    legacy = keyspace.message_events(msg.workspace, msg.id)
    # written by the code of before: the events after the acceptance went to a list, with no expiry yet
    await redis.rpush(legacy, msgspec.msgpack.encode(event_of(msg, "message.deferred", now)))
    await ledger.claim(msg.workspace, "srv_a", [msg.id])
    sent = ledger.outcome(
        msg, "sent", [event_of(msg, "message.sent", now + timedelta(seconds=1))], attempted=1
    )
    await ledger.record(
        keyspace.EVENT_STREAM, [sent], [], [], [], retention_seconds=RETENTION, mapping_ttl=60
    )

    stored = await ledger.get(msg.workspace, msg.id)
    assert [e.type for e in stored.events] == ["message.accepted", "message.deferred", "message.sent"]
    assert 0 < await redis.ttl(legacy) <= RETENTION


async def test_canceling_a_scheduled_send_appends_to_its_timeline(redis) -> None:
    msg = message()
    scheduled = new_message(msg, ["srv_a"])
    scheduled.status = "scheduled"
    scheduled.meta.send_at_ms = int((datetime.now(UTC) + timedelta(hours=1)).timestamp() * 1000)
    assert await enqueue(redis, [scheduled]) == [None]
    ledger = MessageLedger(redis)
    canceled = event_of(msg, "message.canceled", datetime.now(UTC) + timedelta(seconds=1))
    assert await ledger.cancel_scheduled(msg.workspace, msg.id, canceled, RETENTION) == "ok"
    stored = await ledger.get(msg.workspace, msg.id)
    assert stored.status == "canceled"
    assert [e.type for e in stored.events] == ["message.accepted", "message.canceled"]
    assert not await redis.exists(keyspace.message_events(msg.workspace, msg.id))
    assert 0 < await redis.ttl(keyspace.message(msg.workspace, msg.id)) <= RETENTION


def test_a_timeline_reads_compact_events_whole_ones_and_the_compact_maps_of_before() -> None:
    msg = message()
    now = datetime.now(UTC)
    accepted, sent, opened = (
        event_of(msg, kind, now) for kind in ("message.accepted", "message.sent", "message.opened")
    )
    before = msgspec.structs.replace(
        accepted, workspace="", message=None
    )  # a compact event of round 8: a map
    # a compact event of rounds 9-11: an array with the id and type as text
    texts = TimelineEvent(id=sent.id, type=sent.type, created_at=sent.created_at, data=sent.data)
    ev = b"\x94" + encode(before) + encode(compact_event(sent)) + encode(opened) + encode(texts)
    assert encode(compact_event(sent))[0] == 0x94  # an array of id, type, time and data: no field names
    # since round 12 the id is the ULID's 16 bytes and the type its index: 25 B less an event
    assert len(encode(compact_event(sent))) == len(encode(texts)) - 25
    assert compact_event(sent).type == TIMELINE_TYPES.index("message.sent")
    assert timeline_of(ev) == [
        before,
        msgspec.structs.replace(sent, workspace="", message=None),
        opened,
        msgspec.structs.replace(sent, workspace="", message=None),
    ]
    # a type outside the table, and an id that is not an `evt_` ULID, are kept as text
    custom = msgspec.structs.replace(sent, id="evt_custom", type="message.custom")
    assert compact_event(custom).id == "evt_custom" and compact_event(custom).type == "message.custom"
    assert timeline_of(b"\x91" + encode(compact_event(custom))) == [
        msgspec.structs.replace(custom, workspace="", message=None)
    ]


async def test_a_timeline_written_with_a_short_array_header_is_appended_to(redis) -> None:
    """`msgpack_append` reads a fixarray and an array 16 as well as the array 32 the scripts write."""
    ledger = MessageLedger(redis)
    now = datetime.now(UTC)
    for header in (b"\x91", b"\xdc\x00\x01"):
        msg = message()
        assert await enqueue(redis, [new_message(msg, ["srv_a"])]) == [None]
        key = keyspace.message(msg.workspace, msg.id)
        first = event_of(msg, "message.accepted", now)
        await redis.hset(key, "ev", header + encode(first))
        opened = event_of(msg, "message.opened", now + timedelta(seconds=1))
        await ledger.record_events([opened])
        stored = await ledger.get(msg.workspace, msg.id)
        assert [e.id for e in stored.events] == [first.id, opened.id], header


async def test_a_lean_record_is_read_whole_by_every_reader_of_the_ledger(redis) -> None:
    """A sent campaign message's hash keeps its envelope without id and workspace, no `pmid` and a meta
    of what is read after the send (round 12); the ledger's readers fill the rest in from the key and
    the `message.sent` event: the view, tracking (`get_many`), provider events (`messages`), the list."""
    msg = msgspec.structs.replace(
        message(subject="Hi Ana"), campaign_id="cmp_01M98H21HGFJK0XP9J00000000", metadata={"k": "v"}
    )
    new = new_message(msg, ["srv_a", "srv_b"])
    new.meta.links = ["https://acme.test/offer"]
    assert await enqueue(redis, [new]) == [None]
    ledger = MessageLedger(redis)
    now = datetime.now(UTC) + timedelta(seconds=1)
    (claimed,) = await ledger.claim(msg.workspace, "srv_a", [msg.id])
    sent_event = event_of(msg, "message.sent", now)
    sent_event.data = {"provider_message_id": "<p1@acme.test>", "attempt": 1}
    sent = ledger.outcome(msg, "sent", [sent_event], attempted=1, fields=["prv", "smtp"], lean=claimed.meta)
    await ledger.record(
        keyspace.EVENT_STREAM, [sent], [], [], [], retention_seconds=RETENTION, mapping_ttl=60
    )

    key = keyspace.message(msg.workspace, msg.id)
    kept = msgspec.msgpack.decode(await redis.hget(key, "p"))
    assert not {"id", "workspace", "html", "text"} & set(kept) and kept["subject"] == "Hi Ana"
    assert msgspec.msgpack.decode(await redis.hget(key, "m")) == {
        "created_ms": new.meta.created_ms,
        "links": ["https://acme.test/offer"],
    }
    assert not await redis.hexists(key, "pmid")
    envelope = msgspec.structs.replace(msg, html=None, text=None)
    stored = await ledger.get(msg.workspace, msg.id)
    assert stored.message == envelope and stored.provider_message_id == "<p1@acme.test>"
    assert stored.meta.links == ["https://acme.test/offer"] and stored.status == "sent"
    (listed,) = await ledger.get_many(msg.workspace, [msg.id])
    assert listed.message == envelope and listed.provider_message_id == "<p1@acme.test>"
    assert await ledger.messages(msg.workspace, [msg.id]) == {msg.id: envelope}
    page = await MessageLister(redis).page(msg.workspace, MessageFilter(), limit=10, after=None)
    assert [(m.id, m.subject, m.to) for m in page.messages] == [(msg.id, "Hi Ana", ["ana@example.com"])]


def test_a_whole_message_is_told_from_a_lean_envelope_by_its_first_key_whatever_its_map_header() -> None:
    msg = message()
    assert starts_with_id(encode(msg)) and encode(msg)[0] == 0x80 | len(msgspec.msgpack.decode(encode(msg)))
    assert not starts_with_id(encode(lean_message(msg)))
    wide = {"id": msg.id, **{f"k{i}": i for i in range(20)}}  # 21 keys: a map 16
    assert encode(wide)[0] == 0xDE and starts_with_id(encode(wide))
    assert not starts_with_id(encode({"from": 1, **{f"k{i}": i for i in range(20)}}))
    assert not starts_with_id(b"")
