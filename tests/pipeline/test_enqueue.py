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


async def test_one_batch_indexes_each_new_message_under_its_own_workspace_once(redis):
    """The script adds a batch's new ids to their workspaces' indexes by one ZADD per workspace (issue
    #13): a batch mixing workspaces, with a replayed item, lists each new message once, in its own
    workspace only, and more than one ZADD's worth (2,000 arguments) of them."""
    store = MessageStore(redis)
    acme = [message(f"a{i}@example.com") for i in range(1_500)]
    beta = [message(f"b{i}@example.com", workspace="beta") for i in range(3)]
    batch = [new_message(m, ["srv_a"], item_key=f"m:{{acme}}:item:a{i}") for i, m in enumerate(acme)]
    batch += [new_message(m, ["srv_b"]) for m in beta]
    assert await store.enqueue(batch) == [None] * len(batch)
    replay = message("again@example.com")
    assert await store.enqueue([new_message(replay, ["srv_a"], item_key="m:{acme}:item:a0")]) == [acme[0].id]
    assert sorted(await redis.zrange("m:{acme}:messages", 0, -1)) == sorted(m.id.encode() for m in acme)
    assert sorted(await redis.zrange("m:{beta}:messages", 0, -1)) == sorted(m.id.encode() for m in beta)
    assert set(await redis.zrange("m:{acme}:messages", 0, -1, withscores=True)) == {
        (m.id.encode(), 0.0) for m in acme
    }
    assert await redis.xlen("m:{acme}:dispatch:srv_a") == len(acme)
    assert await redis.xlen("m:{beta}:dispatch:srv_b") == len(beta)
