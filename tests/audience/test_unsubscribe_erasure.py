"""Unsubscribe (membership + list-scope suppression, honoured for mail sent for the list) and erasure."""

from __future__ import annotations

from actors.policies.suppression import SuppressionSet, list_scope
from schemas.audience import MEMBER_STATUSES
from schemas.events import events_msgpack_decoder
from store import keyspace
from store.suppressions import SuppressionStore
from tests.audience.test_subscribers_api import new_list, upsert


async def member(client, headers, list_id: str, email: str) -> dict:
    page = await (await client.get(f"/v1/lists/{list_id}/subscribers?email={email}", headers=headers)).json()
    return page["data"][0]


async def test_unsubscribe_keeps_the_record_and_suppresses_for_the_list(
    client, admin, redis, workspace
) -> None:
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}])
    ana = await member(client, admin, lst["id"], "ana@example.com")
    response = await client.delete(
        f"/v1/lists/{lst['id']}/subscribers/{ana['id']}?mode=unsubscribe", headers=admin
    )
    assert response.status == 200
    assert (await response.json())["lists"][0]["status"] == "unsubscribed"
    store = SuppressionStore(redis)
    assert await store.is_suppressed(workspace, "ana@example.com", "list", lst["id"])
    assert not await store.is_suppressed(workspace, "ana@example.com", "workspace")
    entries = await redis.xrange(keyspace.EVENT_STREAM)
    seen = [e for _, f in entries for e in events_msgpack_decoder.decode(f[keyspace.EVENT_FIELD])]
    unsub = [e for e in seen if e.type == "subscriber.unsubscribed"]
    assert unsub and unsub[0].data["list"] == lst["id"] and unsub[0].data["status"] == "unsubscribed"


def test_list_scope_applies_to_mail_sent_for_that_list_only() -> None:
    suppressions = SuppressionSet()
    suppressions.add("ana@example.com", "list", "lst_a", reason="unsubscribe")
    for_list = list_scope({"list_id": "lst_a"})
    allowed, hits = suppressions.filter(["ana@example.com"], sending_domain="acme.com", list_ids=for_list)
    assert allowed == [] and hits[0][1] == "list"
    allowed, _ = suppressions.filter(["ana@example.com"], sending_domain="acme.com", list_ids=list_scope({}))
    assert allowed == ["ana@example.com"]


async def test_erasure_removes_the_person_from_redis(client, admin, redis, workspace) -> None:
    one, two = await new_list(client, admin), await new_list(client, admin)
    await upsert(client, admin, one["id"], [{"email": "ana@example.com", "attributes": {"plan": "pro"}}])
    await upsert(client, admin, two["id"], [{"email": "ana@example.com", "status": "unsubscribed"}])
    ana = await member(client, admin, one["id"], "ana@example.com")
    response = await client.delete(f"/v1/subscribers/{ana['id']}", headers=admin)
    assert response.status == 200
    assert (await client.get(f"/v1/subscribers/{ana['id']}", headers=admin)).status == 404
    assert await redis.hlen(keyspace.subscribers(workspace)) == 0
    assert await redis.hlen(keyspace.subscriber_emails(workspace)) == 0
    for lst in (one, two):
        for status in MEMBER_STATUSES:
            assert await redis.zcard(keyspace.list_members(workspace, lst["id"], status)) == 0
    dump = b"".join([f[keyspace.EVENT_FIELD] for _, f in await redis.xrange(keyspace.EVENT_STREAM)][-1:])
    [deleted] = events_msgpack_decoder.decode(dump)
    assert deleted.type == "subscriber.deleted" and set(deleted.data) == {"subscriber", "version"}
    assert (await client.delete(f"/v1/subscribers/{ana['id']}", headers=admin)).status == 404
