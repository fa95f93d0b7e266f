"""The planner's fast shapes: events built as small structs and new records built whole must be exactly
what the general path (an `Event` with dicts; merge into an empty record, then `set_membership`) gives."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from schemas.audience import ListRecord, SubscriberInput, SubscriberRecord
from schemas.events import Event, event_msgpack_encoder, events_msgpack_decoder
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


def test_new_members_events_encode_byte_for_byte_as_events() -> None:
    items = [
        SubscriberInput(
            email="ana@example.com", name="Ana", attributes={"plan": "pro", "gone": None, "n": 3}
        ),
        SubscriberInput(email="bo@example.com", status="unsubscribed"),
    ]
    plan = plan_upsert(target("double"), items, {}, mode="upsert", now_ms=NOW)
    assert plan.outcomes == ["created", "created"]
    ana, bo = (
        plan.records[plan.new_emails["ana@example.com"]],
        plan.records[plan.new_emails["bo@example.com"]],
    )
    expected = reference_events(ana, "unconfirmed", {"plan": "pro", "n": 3})
    bo_created, bo_member = reference_events(bo, "subscribed", {})
    bo_member.type, bo_member.data["status"] = "subscriber.unsubscribed", "unsubscribed"
    expected += [bo_created, bo_member]
    for built, wanted in zip(plan.events, expected, strict=True):
        wanted.id = built.id
    assert event_msgpack_encoder.encode(plan.events) == event_msgpack_encoder.encode(expected)
    decoded = events_msgpack_decoder.decode(event_msgpack_encoder.encode(plan.events))
    assert decoded == expected and len({e.id for e in decoded}) == 4
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
    assert built.attributes is not plan.events[0].data.subscriber.attributes


def test_a_later_item_of_the_batch_updates_the_new_record_and_the_first_event_keeps_its_snapshot() -> None:
    items = [
        SubscriberInput(email="ana@example.com", attributes={"plan": "free"}),
        SubscriberInput(email="ana@example.com", attributes={"plan": "pro"}),
    ]
    plan = plan_upsert(target(), items, {}, mode="upsert", now_ms=NOW)
    assert plan.outcomes == ["created", "updated"]
    decoded = events_msgpack_decoder.decode(event_msgpack_encoder.encode(plan.events))
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
