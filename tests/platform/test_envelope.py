"""The one error envelope across Ray: every error an actor answers is raised again as the same type."""

from __future__ import annotations

import msgspec
import pytest

from actors.envelope import RemoteError, Replies, reply_decoder
from analytics.errors import InvalidCursor, InvalidQuery, StoreUnavailable
from analytics.reports import Summary


async def _fail(exc: Exception):
    raise exc


async def _chunks(error: Exception):
    yield b"one\n"
    raise error


@pytest.mark.parametrize(
    "error",
    [
        InvalidQuery("#/from", "must be before `to`", "invalid_range"),
        InvalidQuery("#/limit", "too large"),
        InvalidCursor("not ours"),
        StoreUnavailable("duckdb is locked"),
    ],
)
async def test_an_error_crosses_as_the_same_exception(error):
    reply = await Replies().answer(_fail(error))
    with pytest.raises(type(error)) as caught:
        reply_decoder(Summary)(reply)
    assert type(caught.value) is type(error) and str(caught.value) == str(error)
    if isinstance(error, InvalidQuery):
        assert (caught.value.pointer, caught.value.detail, caught.value.code) == (
            error.pointer,
            error.detail,
            error.code,
        )


async def test_an_answer_crosses_as_its_value():
    reply = await Replies().answer(_value())
    assert reply_decoder(list[int])(reply) == [1, 2]


async def _value():
    return [1, 2]


async def test_a_stream_ends_with_its_error():
    replies = [r async for r in Replies().stream(_chunks(StoreUnavailable("gone")))]
    unwrap = reply_decoder(bytes)
    assert unwrap(replies[0]) == b"one\n"
    with pytest.raises(StoreUnavailable, match="gone"):
        unwrap(replies[1])


async def test_other_exceptions_are_bugs_and_stay_in_the_actor():
    with pytest.raises(ZeroDivisionError):
        await Replies().answer(_fail(ZeroDivisionError()))


def test_the_envelope_is_one_compact_struct():
    encoded = msgspec.msgpack.encode(RemoteError("unavailable", "down"))
    assert msgspec.msgpack.decode(encoded) == ["unavailable", "down", "", ""]
