"""The planner's fast shapes: events built as small structs and new records built whole must be exactly
what the general path (an `Event` with dicts; merge into an empty record, then `set_membership`) gives."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from analytics.mirror import chunk_columns, mirror_rows
from analytics.rows import event_columns
from schemas.audience import ListRecord, SubscriberInput, SubscriberRecord
from schemas.events import Event, event_msgpack_encoder, events_msgpack_decoder
from schemas.ids import new_ids
from schemas.subscriber_chunks import NewMembers, chunk_decoder, chunk_encoder, expand
from schemas.subscriber_items import checked_item, checked_items
from store.subscriber_changes import Plan, copy_record, iso, merge_fields, plan_upsert, set_membership

NOW = 1_760_000_000_123
WHEN = datetime.fromtimestamp(NOW / 1000, UTC)


def target(opt_in: str = "single") -> ListRecord:
    return ListRecord(id="lst_a", workspace="ws1", name="n", opt_in=opt_in, created_ms=0, updated_ms=0)  # type: ignore[arg-type]


def reference_events(record: SubscriberRecord, status: str, attributes: dict) -> list[Event]:
    """The two events of a new member as the interface states them, built the slow, obvious way."""
    subscriber = {
        "id": record.id,
        "email": record.email,
        "name": record.name,
        "attributes": attributes,
        "status": "active",
        "created_at": iso(NOW),
    }
    kind = {"subscribed": "list.subscribed", "unconfirmed": "list.unconfirmed"}[status]
    member = {"subscriber": record.id, "email": record.email, "list": "lst_a", "status": status, "version": 2}
    return [
        Event(
            id="",
            type="subscriber.created",
            created_at=WHEN,
            workspace="ws1",
            data={"subscriber": subscriber, "version": 1},
        ),
        Event(id="", type=kind, created_at=WHEN, workspace="ws1", data=member),
    ]


def new_events(plan: Plan) -> list[Event]:
    """Every event a plan appends, in stream order: its chunks of new subscribers expanded, then the rest
    (through msgpack, as a reader gets them)."""
    chunks = [chunk_decoder.decode(chunk_encoder.encode(c)) for c in plan.new_members.values() if c.ids]
    rest = events_msgpack_decoder.decode(event_msgpack_encoder.encode(plan.events))
    return [e for c in chunks for e in expand(c)] + rest


def test_new_members_chunks_expand_to_the_interface_events() -> None:
    items = [
        SubscriberInput(
            email="ana@example.com", name="Ana", attributes={"plan": "pro", "gone": None, "n": 3}
        ),
        SubscriberInput(email="bo@example.com", status="unsubscribed"),
    ]
    plan = plan_upsert(target("double"), items, {}, mode="upsert", now_ms=NOW)
    assert plan.outcomes == ["created", "created"] and not plan.events
    ana, bo = (
        plan.records[plan.new_emails["ana@example.com"]],
        plan.records[plan.new_emails["bo@example.com"]],
    )
    expected = reference_events(ana, "unconfirmed", {"plan": "pro", "n": 3})
    bo_created, bo_member = reference_events(bo, "subscribed", {})
    bo_member.type, bo_member.data["status"] = "subscriber.unsubscribed", "unsubscribed"
    expected += [bo_created, bo_member]
    built = new_events(plan)
    for one, wanted in zip(built, expected, strict=True):
        wanted.id = one.id
    assert built == expected
    assert event_msgpack_encoder.encode(built) == event_msgpack_encoder.encode(expected)
    assert len({e.id for e in built}) == 4
    # ids derive from the subscriber's: the same chunk expands to the same events every time
    assert [e.id for e in built] == [e.id for e in new_events(plan)]
    assert built[0].id == "evt_" + ana.id[4:] and built[1].id != built[0].id
    assert plan.confirmations == [(ana.id, "ana@example.com")]
    assert plan.moves == {("lst_a", None, "unconfirmed"): [ana.id], ("lst_a", None, "unsubscribed"): [bo.id]}


def test_a_new_record_is_what_the_general_path_builds() -> None:
    item = SubscriberInput(
        email="ana@example.com", name="Ana", attributes={"plan": "pro", "x": None, "l": [1]}
    )
    plan = plan_upsert(target(), [item], {}, mode="upsert", now_ms=NOW)
    [built] = plan.records.values()
    general = SubscriberRecord(id=built.id, email=item.email, created_ms=NOW, version=0)
    merge_fields(general, item.name, item.attributes)
    general.version += 1  # subscriber.created
    set_membership(Plan(), general, "ws1", "lst_a", "subscribed", NOW)
    assert msgspec.msgpack.encode(built) == msgspec.msgpack.encode(general)
    # the event's snapshot is not the record's dict: a later item of the batch changes only the record
    assert built.attributes is not plan.new_members["subscribed"].attributes[0]


def test_a_later_item_of_the_batch_updates_the_new_record_and_the_first_event_keeps_its_snapshot() -> None:
    items = [
        SubscriberInput(email="ana@example.com", attributes={"plan": "free"}),
        SubscriberInput(email="ana@example.com", attributes={"plan": "pro"}),
    ]
    plan = plan_upsert(target(), items, {}, mode="upsert", now_ms=NOW)
    assert plan.outcomes == ["created", "updated"]
    decoded = new_events(plan)
    assert [e.type for e in decoded] == ["subscriber.created", "list.subscribed", "subscriber.updated"]
    assert decoded[0].data["subscriber"]["attributes"] == {"plan": "free"}
    assert decoded[2].data["subscriber"]["attributes"] == {"plan": "pro"} and decoded[2].data["version"] == 3
    [record] = plan.records.values()
    assert record.version == 3 and record.attributes == {"plan": "pro"}
    # re-planning the last state over the result changes nothing (a re-applied import entry)
    again = plan_upsert(
        target(), items[1:], {"ana@example.com": copy_record(record)}, mode="upsert", now_ms=NOW
    )
    assert again.outcomes == ["unchanged"] and not again.events and not again.records


TRICKY_ITEMS = [
    {"email": "Ana@Example.COM", "name": "Ana", "attributes": {"plan": "pro", "n": 3, "f": 1.5, "b": True}},
    {"email": "bo@example.com", "attributes": {"gone": None, "tags": ["a", 1, 2.5, False]}},
    {"email": "cy@example.com", "attributes": {"Plan": "x"}},
    {"email": "cy@example.com", "attributes": {"plan\n": "x"}},
    {"email": "cy@example.com", "attributes": {"_x": "x"}},
    {"email": "cy@example.com", "attributes": {"a" * 65: "x"}},
    {"email": "cy@example.com", "attributes": {"a" * 64: "x" * 1000}},
    {"email": "cy@example.com", "attributes": {"long": "x" * 1001}},
    {"email": "cy@example.com", "attributes": {"nested": {"a": 1}}},
    {"email": "cy@example.com", "attributes": {"l": [None]}},
    {"email": "cy@example.com", "attributes": {"l": [[1]]}},
    {"email": "cy@example.com", "attributes": {"l": list(range(101))}},
    {"email": "cy@example.com", "attributes": {"l": list(range(100))}},
    {"email": "cy@example.com", "attributes": {"l": ["x" * 1001]}},
    {"email": "cy@example.com", "attributes": {f"k{i}": i for i in range(101)}},
    {"email": "cy@example.com", "attributes": {"big": 2**64, "small": -(2**63) - 1}},
    {"email": "cy@example.com", "attributes": {"big": 2**63 - 1, "small": -(2**63)}},
    {"email": "cy@example.com", "attributes": {"big": 2**63}},
    {"email": "not-an-address"},
    {"email": "a b@example.com"},
    {"email": "x@localhost"},
    {"email": "ok@example.com", "status": "unconfirmed"},
    {"email": "ok@example.com", "status": "maybe"},
    {"email": "ok@example.com", "extra": 1},
    {"email": "ok@example.com", "name": "n" * 201},
    {"email": "ok@example.com", "attributes": []},
]


def test_the_one_call_decoding_of_bulk_items_agrees_with_the_schema_item_by_item() -> None:
    """Each item alone and in a batch of valid items (the fast path) gives what `checked_item` gives."""
    good = msgspec.Raw(msgspec.json.encode({"email": "fine@example.com", "attributes": {"plan": "x"}}))
    for n, item in enumerate(TRICKY_ITEMS):
        raw = msgspec.Raw(msgspec.json.encode(item))
        alone = checked_item(raw, "#/subscribers/1")
        assert checked_items([good, raw])[1] == alone, (n, item)
        assert checked_items([raw, good])[0] == checked_item(raw, "#/subscribers/0"), (n, item)
    # all the valid ones in one batch take the one-call path and still agree
    valid = [
        msgspec.Raw(msgspec.json.encode(item))
        for item in TRICKY_ITEMS
        if isinstance(checked_item(msgspec.Raw(msgspec.json.encode(item)), "#"), SubscriberInput)
    ]
    assert len(valid) == 6
    expected = [checked_item(raw, f"#/subscribers/{i}") for i, raw in enumerate(valid)]
    assert checked_items(valid) == expected


def chunk_of_tricky_people() -> NewMembers:
    chunk = NewMembers("ws1", "lst_a", "unconfirmed", NOW)
    ids = new_ids("sub", 4)
    chunk.add(
        ids[0],
        "ana@example.com",
        'Ana "Q" \u00e9\n\t\u0001 /',
        {"z": 1, "a": [True, 1.5, "x"], "m": "\u00e9"},
    )
    chunk.add(ids[1], "bo@example.com", None, {})
    chunk.add(ids[2], "cy@xn--bcher-kva.example", "", {"k": "v"})
    chunk.add(ids[3], "dee@example.org", "Dee", {"big": 2**63 - 1, "neg": -(2**63), "f": 1e300})
    return chunk


def _sorted_rows(columns: dict[str, list], key: str) -> list[tuple]:
    return sorted(zip(*columns.values(), strict=True), key=lambda row: row[list(columns).index(key)])


def test_a_chunk_is_stored_exactly_as_its_expanded_events_would_be() -> None:
    """The sink's columnar path (analytics/mirror.chunk_columns) gives the same event rows and mirror rows
    as the per-event path over the chunk's expansion, escaping and key order included."""
    chunk = chunk_of_tricky_people()
    found = chunk_columns([chunk])
    events = expand(chunk)
    assert list(found.all_event_columns()) == list(event_columns(events))
    assert _sorted_rows(found.all_event_columns(), "id") == _sorted_rows(event_columns(events), "id")
    mirror = mirror_rows(events)
    assert sorted(zip(*found.subscribers.values(), strict=True)) == sorted(mirror.subscribers)
    assert sorted(zip(*found.memberships.values(), strict=True)) == sorted(mirror.memberships)
    # a chunk read twice in one batch is stored once
    again = chunk_columns([chunk, chunk_decoder.decode(chunk_encoder.encode(chunk))])
    assert _sorted_rows(again.all_event_columns(), "id") == _sorted_rows(found.all_event_columns(), "id")
