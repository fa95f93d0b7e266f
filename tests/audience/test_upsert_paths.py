"""The bulk write's two ways to plan (`SubscriberStore.upsert`): while a workspace's writes keep creating
everyone they name, the plan assumes every address is new and reads nothing (its script's index check
is the read); a write that finds an existing address re-plans on a read, with the same outcome a
read-first plan gives, and the workspace's next write reads first."""

from __future__ import annotations

import msgspec

from schemas.audience import ListRecord, SubscriberInput, subscriber_decoder
from store import keyspace
from store.subscribers import SubscriberStore, _all_new

TARGET = ListRecord(id="lst_paths", workspace="ws_paths", name="paths", created_ms=0, updated_ms=0)


def person(email: str, name: str) -> SubscriberInput:
    return SubscriberInput(email=email, name=name, attributes={"plan": "pro"})


def counting_reads(store: SubscriberStore) -> list[int]:
    reads: list[int] = []
    send_read = store._send_read

    async def read(workspace: str, emails: list[str]):
        reads.append(len(emails))
        return await send_read(workspace, emails)

    store._send_read = read  # type: ignore[method-assign]
    return reads


async def test_a_write_planned_as_new_that_finds_an_existing_address_re_plans_on_a_read(redis) -> None:
    _all_new.pop(TARGET.workspace, None)
    store = SubscriberStore(redis)
    reads = counting_reads(store)
    first = await store.upsert(
        TARGET, [person("a@x.com", "A"), person("b@x.com", "B")], mode="upsert", now_ms=1
    )
    assert first.outcomes == ["created", "created"] and reads == []  # planned as new: no read

    second = await store.upsert(
        TARGET, [person("c@x.com", "C"), person("a@x.com", "A2")], mode="upsert", now_ms=2
    )
    assert second.outcomes == ["created", "updated"]  # the unread plan failed its checks, re-planned
    assert reads == [2]
    assert await redis.hlen(keyspace.subscribers(TARGET.workspace)) == 3  # no second record for a@x.com
    a_id = await store.id_for(TARGET.workspace, "a@x.com")
    [raw] = await store.get_raw(TARGET.workspace, [a_id])
    assert subscriber_decoder.decode(raw).name == "A2"

    third = await store.upsert(TARGET, [person("d@x.com", "D")], mode="upsert", now_ms=3)
    assert third.outcomes == ["created"] and reads == [2, 1]  # after a write that found one: read first
    fourth = await store.upsert(TARGET, [person("e@x.com", "E")], mode="upsert", now_ms=4)
    assert fourth.outcomes == ["created"] and reads == [2, 1]  # everyone new again: no read

    again = await store.upsert(TARGET, [person("e@x.com", "E")], mode="upsert", now_ms=5)
    assert again.outcomes == ["unchanged"]  # idempotent through the re-plan
    records = await redis.hgetall(keyspace.subscribers(TARGET.workspace))
    assert len(records) == 5
    assert len({msgspec.msgpack.decode(v)[1] for v in records.values()}) == 5  # one record per address


async def test_scripts_redis_has_forgotten_are_loaded_again(redis) -> None:
    """`store/script_call.py` sends EVALSHA packed by hand: after SCRIPT FLUSH (a restarted Redis) the
    read and the write are loaded and run again, once."""
    store = SubscriberStore(redis)
    _all_new[TARGET.workspace] = False  # read first: both scripts run
    await store.upsert(TARGET, [person("f@x.com", "F")], mode="upsert", now_ms=1)
    await redis.script_flush()
    _all_new[TARGET.workspace] = False
    plan = await store.upsert(
        TARGET, [person("f@x.com", "F2"), person("g@x.com", "G")], mode="upsert", now_ms=2
    )
    assert plan.outcomes == ["updated", "created"]
