"""Unsubscribe (membership + list-scope suppression, honoured for mail sent for the list) and erasure."""

from __future__ import annotations

from actors.policies.suppression import SuppressionSet, list_scope
from analytics.mirror import mirror_rows
from schemas.audience import MEMBER_STATUSES
from store import keyspace
from store.event_entries import entry_events
from store.suppressions import SuppressionStore
from tests.audience.test_subscribers_api import new_list, upsert
from tests.pipeline.conftest import wait_for


async def all_events(redis) -> list:
    entries = await redis.xrange(keyspace.EVENT_STREAM)
    return [e for _, f in entries for e in entry_events(f)]


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
    seen = [e for _, f in entries for e in entry_events(f)]
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


async def test_erasure_removes_the_person_from_redis(client, admin, redis, workspace, event_sink) -> None:
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
    deleted = [e for e in await all_events(redis) if e.type == "subscriber.deleted"]
    assert len(deleted) == 1 and set(deleted[0].data) == {"subscriber", "version"}
    assert (await client.delete(f"/v1/subscribers/{ana['id']}", headers=admin)).status == 404


async def test_erasure_without_the_analytics_store_answers_503_and_erases_nothing(
    client, admin, redis, workspace
) -> None:
    """No event sink runs (none was started in this test): the person stays, a retry can finish it."""
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}])
    ana = await member(client, admin, lst["id"], "ana@example.com")
    response = await client.delete(f"/v1/subscribers/{ana['id']}", headers=admin)
    assert response.status == 503 and response.headers["Retry-After"] == "5"
    assert (await client.get(f"/v1/subscribers/{ana['id']}", headers=admin)).status == 200


async def test_erasure_end_to_end_removes_the_person_from_redis_and_analytics(
    client, admin, redis, workspace, event_sink
) -> None:
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}, {"email": "bo@example.org"}])
    ana = await member(client, admin, lst["id"], "ana@example.com")
    for email in ("ana@example.com", "bo@example.org"):
        body = {"name": "order.completed", "email": email, "properties": {"total": 42}}
        assert (await client.post("/v1/events", json=body, headers=admin)).status == 202
    url = "/v1/analytics/events?type=order.completed"

    async def recorded() -> str:
        response = await client.get(url, headers=admin)
        page = await response.json() if response.status == 200 else {"data": []}
        return len(page["data"]) == 2 and await response.text()

    assert "ana@example.com" in await wait_for(recorded)
    assert (await client.delete(f"/v1/subscribers/{ana['id']}", headers=admin)).status == 200
    assert await redis.hget(keyspace.subscribers(workspace), ana["id"]) is None
    assert await redis.hget(keyspace.subscriber_emails(workspace), "ana@example.com") is None
    after = await wait_for(recorded)  # both rows stay (counts survive), ana's address does not
    assert "ana@example.com" not in after and "bo@example.org" in after


async def test_removing_a_member_emits_the_membership_removal_the_mirror_needs(client, admin, redis) -> None:
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}])
    ana = await member(client, admin, lst["id"], "ana@example.com")
    response = await client.delete(f"/v1/lists/{lst['id']}/subscribers/{ana['id']}", headers=admin)
    assert response.status == 200
    [removed] = [e for e in await all_events(redis) if e.type == "list.removed"]
    assert (removed.data["subscriber"], removed.data["list"], removed.data["status"]) == (
        ana["id"],
        lst["id"],
        "removed",
    )
    rows = mirror_rows(await all_events(redis)).memberships
    assert [(r[1], r[2], r[3]) for r in rows] == [(ana["id"], lst["id"], "removed")]
    suppressions = SuppressionStore(redis)
    assert not await suppressions.is_suppressed(removed.workspace, "ana@example.com", "list", lst["id"])
