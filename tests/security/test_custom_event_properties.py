"""Custom event properties are decoded only once their size is known to be bounded (issue #11's class:
an `Any` field decoded with the body let 1 MiB of `[[],[],...]` hold the loop ~100-180 ms)."""

from __future__ import annotations

import msgspec

from schemas.custom_events import MAX_RAW_PROPERTIES_BYTES, CustomEventsBody, decode_properties, items


def test_oversized_properties_are_refused_before_anything_is_decoded() -> None:
    # Not even JSON past the bound: a decoder that ran first would say so instead.
    raw = msgspec.Raw(b"{" + b"x" * MAX_RAW_PROPERTIES_BYTES)
    properties, problem = decode_properties(raw)
    assert properties == {} and problem is not None and "larger than" in problem


def test_properties_within_the_bound_decode_and_are_checked() -> None:
    assert decode_properties(msgspec.Raw(b'{"total": 42, "items": ["a"]}')) == (
        {"total": 42, "items": ["a"]},
        None,
    )
    assert decode_properties(msgspec.Raw(b"[1]"))[1] is not None
    deep = msgspec.Raw(msgspec.json.encode({"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}))
    assert "deeper" in (decode_properties(deep)[1] or "")


def test_the_body_keeps_properties_raw() -> None:
    body = msgspec.json.decode(
        b'{"events": [{"name": "a.b", "email": "a@example.com", "properties": {"l": [[], []]}}]}',
        type=CustomEventsBody,
    )
    found, prefix = items(body)
    assert prefix == "#/events/" and isinstance(found[0].properties, msgspec.Raw)
    single = msgspec.json.decode(b'{"name": "a.b", "email": "a@example.com"}', type=CustomEventsBody)
    assert bytes(items(single)[0][0].properties) == b"{}"
