"""The enqueue script's batch encoding: every blob crosses into Lua intact, whatever its size."""

from __future__ import annotations

import os

import msgspec
import pytest

from store.lua import lua_string
from store.messages import MessageStore
from tests.pipeline.helpers import message, new_message


@pytest.mark.parametrize("size", [0, 1, 31, 32, 255, 256, 65535, 65536, 300_000])
async def test_a_blob_of_any_size_reaches_lua_byte_for_byte(redis, size):
    blob = os.urandom(size)
    echoed = await redis.eval(
        "return cmsgpack.unpack(ARGV[1])[1]", 0, msgspec.msgpack.encode([lua_string(blob)])
    )
    assert (echoed or b"") == blob


async def test_a_large_message_is_stored_and_read_back_whole(redis):
    big = message("ana@example.com")
    big = msgspec.structs.replace(big, html="<p>" + "é" * 100_000 + "</p>", headers={"X-Bin": "\x00\x01"})
    store = MessageStore(redis)
    assert await store.enqueue([new_message(big, ["srv_a"], item_key="m:{acme}:item:k1")]) == [None]
    stored = await store.get("acme", big.id)
    assert stored is not None and stored.message == big and stored.status == "queued"
    assert [e.type for e in stored.events] == ["message.accepted"]
    # The same item key again answers the first message's id, and writes nothing new.
    again = message("ana@example.com")
    assert await store.enqueue([new_message(again, ["srv_a"], item_key="m:{acme}:item:k1")]) == [big.id]
    assert await store.get("acme", again.id) is None
    assert await redis.xlen("m:{acme}:dispatch:srv_a") == 1
