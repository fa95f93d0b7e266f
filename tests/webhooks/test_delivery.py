"""Delivery through the real loop (plain asyncio): real Redis, real HTTP receivers on loopback."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import msgspec
import stripe
from standardwebhooks.webhooks import Webhook

from schemas.ids import derived_id
from store import keyspace
from store.event_entries import entry_events
from store.webhook_queue import DELIVERY_RETENTION_SECONDS
from tests.webhooks.conftest import WORKSPACE, FixedDns, create_endpoint, emit, event, stored_endpoint


def verify_both(received, secret: str) -> None:
    Webhook(secret).verify(received.body, received.headers)
    stripe.WebhookSignature.verify_header(
        received.body.decode(), received.headers["mailers-signature"], secret, tolerance=300
    )


async def test_a_delivery_is_the_event_json_signed_twice(api, writer, redis, receivers, deliverers):
    receiver = await receivers()
    endpoint = await create_endpoint(api, writer, receiver.url(), ["message.*"])
    await deliverers()
    sent = event("message.delivered", message_id="msg_1", provider="smtp")
    await emit(redis, [sent])
    await receiver.wait_for(lambda r: len(r.received) == 1)
    [got] = receiver.received
    verify_both(got, endpoint["secret"])
    assert got.webhook_id == sent.id and got.headers["content-type"] == "application/json"
    assert got.body == msgspec.json.encode(sent)
    assert got.event["message"]["from"] == "hello@acme.com" and got.event["data"] == {"provider": "smtp"}
    assert await _statuses(api, writer, endpoint["id"], want={"delivered"}, count=1) == {sent.id: "delivered"}
    page = await (await api.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=writer)).json()
    [delivery] = page["data"]
    assert delivery["id"].startswith("dlv_") and delivery["message_id"] == "msg_1"
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] == 200 and attempt["latency_ms"] > 0 and attempt["error"] is None


async def test_during_a_rotation_both_secrets_verify(api, writer, redis, receivers, deliverers):
    receiver = await receivers()
    endpoint = await create_endpoint(api, writer, receiver.url())
    rotated = await (await api.post(f"/v1/webhooks/{endpoint['id']}/rotate-secret", headers=writer)).json()
    assert rotated["secret"] != endpoint["secret"] and rotated["previous_secret_until"]
    await deliverers()
    await emit(redis, [event("message.sent", message_id="msg_1")])
    await receiver.wait_for(lambda r: len(r.received) == 1)
    [got] = receiver.received
    verify_both(got, endpoint["secret"])
    verify_both(got, rotated["secret"])
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert got.headers["mailers-signature"].count("v1=") == 2


async def test_filters_and_workspaces_decide_who_gets_what(api, make_key, redis, receivers, deliverers):
    acme = await make_key(["write:webhooks"], workspace=WORKSPACE)
    globex = await make_key(["write:webhooks"], workspace="globex")
    bounces, everything, theirs = await receivers(), await receivers(), await receivers()
    await create_endpoint(api, acme, bounces.url(), ["message.bounced", "campaign.*"])
    await create_endpoint(api, acme, everything.url(), ["*"])
    await create_endpoint(api, globex, theirs.url(), ["*"])
    disabled = await receivers()
    await create_endpoint(api, acme, disabled.url(), ["*"], enabled=False)
    loop = await deliverers()
    ours = [
        event("message.delivered", message_id="m1"),
        event("message.bounced", message_id="m1"),
        event("campaign.launched"),
    ]
    other = event("message.delivered", workspace="globex", message_id="m9")
    await emit(redis, [*ours, other])
    await everything.wait_for(lambda r: len(r.delivered()) == 3)
    await bounces.wait_for(lambda r: len(r.delivered()) == 2)
    await theirs.wait_for(lambda r: len(r.delivered()) == 1)
    assert everything.delivered_ids() == {e.id for e in ours}
    assert bounces.delivered_ids() == {ours[1].id, ours[2].id}
    assert theirs.delivered_ids() == {other.id}
    # Six deliveries recorded at fan-out (3 + 2 + 1; one for the disabled endpoint would make it more) and
    # no endpoint worker left running: nothing else is on its way.
    await _eventually(lambda: loop.counts["fanned_out"] == 6 and not loop.counts["active_endpoints"])
    assert disabled.received == [] and len(everything.received) == 3


async def test_failing_receiver_gets_every_event_in_order_per_message(
    api, writer, redis, receivers, deliverers
):
    receiver = await receivers(lambda _id, attempt: 503 if attempt <= 2 else 200)
    await create_endpoint(api, writer, receiver.url())
    loop = await deliverers(settings_overrides={"webhook_retry_scale": 0.001})
    messages = [f"msg_{i}" for i in range(4)]
    kinds = ["message.accepted", "message.sent", "message.delivered"]
    sent = [event(kind, message_id=m) for kind in kinds for m in messages]  # interleaved across messages
    for half in (sent[:6], sent[6:]):
        await emit(redis, half)
    await receiver.wait_for(lambda r: len(r.delivered_ids()) == len(sent), within=40)
    assert len(receiver.received) == 3 * len(sent) and len(receiver.delivered()) == len(sent)
    for message in messages:
        order = [e.id for e in sent if e.message.id == message]
        seen = [r.webhook_id for r in receiver.received if r.event["message"]["id"] == message]
        # every attempt of an event comes after the previous event of that message was delivered
        assert seen == [i for i in order for _ in range(3)], message
    await _eventually(lambda: loop.counts["delivered"] == len(sent))
    assert loop.counts["failed"] == 2 * len(sent)


async def test_410_disables_the_endpoint_and_records_an_event(api, writer, redis, receivers, deliverers):
    receiver = await receivers(lambda _id, _n: 410)
    endpoint = await create_endpoint(api, writer, receiver.url(), ["message.*"])
    watcher = await receivers()
    await create_endpoint(api, writer, watcher.url(), ["webhook.*"])
    await deliverers(settings_overrides={"webhook_retry_scale": 0.001})
    first, second = event("message.sent", message_id="m1"), event("message.delivered", message_id="m1")
    await emit(redis, [first, second])
    await watcher.wait_for(lambda r: len(r.delivered()) == 1)
    announced = watcher.delivered()[0].event
    assert (
        announced["type"] == "webhook.endpoint_disabled"
        and announced["data"]["endpoint_id"] == endpoint["id"]
    )
    assert "410" in announced["data"]["reason"]
    got = await (await api.get(f"/v1/webhooks/{endpoint['id']}", headers=writer)).json()
    assert got["enabled"] is False and "410" in got["disabled_reason"]
    on_stream = [
        e
        for _, f in (await redis.xrange(keyspace.EVENT_STREAM))
        for e in entry_events(f)
        if e.type == "webhook.endpoint_disabled"
    ]
    assert len(on_stream) == 1
    statuses = await _statuses(api, writer, endpoint["id"], want={"dead"}, count=2)
    assert statuses == {first.id: "dead", second.id: "dead"}
    assert [r.webhook_id for r in receiver.received] == [first.id]  # the second is never attempted


async def test_an_endpoint_failing_for_the_whole_period_is_disabled(
    api, writer, redis, receivers, deliverers
):
    receiver = await receivers(lambda _id, _n: 500)
    endpoint = await create_endpoint(api, writer, receiver.url())
    # 5 days scaled by 0.0001 would be 43 s: shorten the period to 2000 s × 0.0001 = 0.2 s.
    loop = await deliverers(settings_overrides={"webhook_retry_scale": 0.0001}, disable_after_seconds=2000)
    await emit(redis, [event("message.sent", message_id="m1")])
    await _eventually(lambda: loop.counts["disabled"] == 1)
    got = await (await api.get(f"/v1/webhooks/{endpoint['id']}", headers=writer)).json()
    assert got["enabled"] is False and "failed" in got["disabled_reason"]
    assert 2 <= len(receiver.received) < 8  # disabled by the period, before the schedule ran out


async def test_dead_letters_replay_one_and_a_window_with_the_same_webhook_id(
    api, writer, redis, receivers, deliverers
):
    healthy = False
    receiver = await receivers(lambda _id, _n: 200 if healthy else 500)
    endpoint = await create_endpoint(api, writer, receiver.url())
    await deliverers(settings_overrides={"webhook_retry_scale": 0.00002})
    window_start = time.time()
    events = [event("message.sent", message_id=f"m{i}") for i in range(3)]
    await emit(redis, events)
    await receiver.wait_for(lambda r: len(r.received) == 3 * 8, within=30)
    statuses = await _statuses(api, writer, endpoint["id"], want={"dead"}, count=3)
    assert set(statuses.values()) == {"dead"}
    page = await (await api.get(f"/v1/webhooks/{endpoint['id']}/deliveries", headers=writer)).json()
    assert all(len(d["attempts"]) == 8 and d["attempts"][-1]["status_code"] == 500 for d in page["data"])
    healthy = True
    one = next(d for d in page["data"] if d["event_id"] == events[0].id)
    replayed = await api.post(f"/v1/webhooks/{endpoint['id']}/deliveries/{one['id']}/replay", headers=writer)
    assert replayed.status == 202 and (await replayed.json())["status"] == "pending"
    await receiver.wait_for(lambda r: r.delivered_ids() == {events[0].id})
    window = {"from": _rfc3339(window_start - 1), "to": _rfc3339(time.time())}
    answer = await api.post(f"/v1/webhooks/{endpoint['id']}/replay", json=window, headers=writer)
    assert answer.status == 202 and (await answer.json())["replayed"] == 2
    await receiver.wait_for(lambda r: r.delivered_ids() == {e.id for e in events})
    for got in receiver.delivered():
        verify_both(got, endpoint["secret"])
        assert got.event["id"] == got.webhook_id
    assert await _statuses(api, writer, endpoint["id"], want={"delivered"}, count=3)
    again = await api.post(f"/v1/webhooks/{endpoint['id']}/replay", json=window, headers=writer)
    assert (await again.json())["replayed"] == 0  # nothing is dead any more


async def test_private_targets_are_refused_at_delivery(api, writer, redis, receivers, deliverers):
    receiver = await receivers()
    endpoint = await create_endpoint(api, writer, receiver.url("localhost"))  # allowed when created
    await deliverers(settings_overrides={"allow_private_webhooks": False, "webhook_retry_scale": 0.001})
    await emit(redis, [event("message.sent", message_id="m1")])
    statuses = await _attempted(api, writer, endpoint["id"])
    assert receiver.received == []
    assert statuses[0]["status_code"] is None and "webhook_url_private_address" in statuses[0]["error"]


async def test_a_name_that_resolves_to_a_private_address_is_refused_at_connection(
    api, writer, redis, receivers, deliverers
):
    receiver = await receivers()
    endpoint_id = await stored_endpoint(redis, f"http://hooks.example.com:{receiver.port}/hook")
    dns = FixedDns("127.0.0.1")  # the name passed the checks; now its DNS answers with loopback
    await deliverers(
        settings_overrides={"allow_private_webhooks": False, "webhook_retry_scale": 0.001}, resolver=dns
    )
    await emit(redis, [event("message.sent", message_id="m1")])
    attempts = await _attempted(api, writer, endpoint_id)
    assert "hooks.example.com" in dns.asked and receiver.received == []
    assert attempts[0]["status_code"] is None and "webhook_url_private_address" in attempts[0]["error"]


async def test_the_same_name_is_delivered_when_private_targets_are_allowed(
    api, writer, redis, receivers, deliverers
):
    receiver = await receivers()
    await stored_endpoint(redis, f"http://hooks.example.com:{receiver.port}/hook")
    await deliverers(resolver=FixedDns("127.0.0.1"))
    sent = event("message.sent", message_id="m1")
    await emit(redis, [sent])
    await receiver.wait_for(lambda r: r.delivered_ids() == {sent.id})


async def test_a_restarted_loop_resumes_what_it_had_leased_and_unacked(
    api, writer, redis, receivers, deliverers
):
    receiver = await receivers()
    await create_endpoint(api, writer, receiver.url())
    loop = await deliverers()
    await deliverers.stop_all()  # the group exists; now nobody consumes
    sent = [event("message.sent", message_id=f"m{i}") for i in range(5)]
    await emit(redis, sent)
    # Simulate a crash after reading: the entry is pending for our consumer, never acked.
    await redis.xreadgroup(
        keyspace.WEBHOOK_GROUP, loop.config.consumer, {keyspace.EVENT_STREAM: ">"}, count=10
    )
    assert (await redis.xpending(keyspace.EVENT_STREAM, keyspace.WEBHOOK_GROUP))["pending"] == 1
    await deliverers()
    await receiver.wait_for(lambda r: r.delivered_ids() == {e.id for e in sent})
    assert len(receiver.received) == 5
    assert (await redis.xpending(keyspace.EVENT_STREAM, keyspace.WEBHOOK_GROUP))["pending"] == 0


async def test_a_stuck_endpoint_holds_8_in_flight_and_blocks_nobody_else(
    api, writer, redis, receivers, deliverers
):
    gate = asyncio.Event()
    stuck, healthy = await receivers(gate=gate), await receivers()
    await create_endpoint(api, writer, stuck.url(), ["message.*"])
    await create_endpoint(api, writer, healthy.url(), ["campaign.*"])
    await deliverers(settings_overrides={"webhook_retry_scale": 0.001})
    many = [event("message.sent", message_id=f"m{i}") for i in range(20)]
    await emit(redis, many)
    await _eventually(lambda: stuck.concurrent == 8)
    launched = event("campaign.launched")
    await emit(redis, [launched])
    await healthy.wait_for(lambda r: r.delivered_ids() == {launched.id}, within=5)
    assert stuck.concurrent == 8 and stuck.max_concurrent == 8
    gate.set()
    await stuck.wait_for(lambda r: r.delivered_ids() == {e.id for e in many})
    assert stuck.max_concurrent == 8


async def test_a_slow_answer_is_a_timeout_and_is_retried(api, writer, redis, receivers, deliverers):
    gate = asyncio.Event()
    receiver = await receivers(gate=gate)
    endpoint = await create_endpoint(api, writer, receiver.url())
    await deliverers(settings_overrides={"webhook_retry_scale": 0.01}, timeout_seconds=0.3)
    sent = event("message.sent", message_id="m1")
    await emit(redis, [sent])
    attempts = await _attempted(api, writer, endpoint["id"])
    assert attempts[0]["status_code"] is None and "timeout" in attempts[0]["error"]
    assert 250 <= attempts[0]["latency_ms"] < 2000
    gate.set()
    assert await _statuses(api, writer, endpoint["id"], want={"delivered"}, count=1) == {sent.id: "delivered"}


async def test_index_entries_past_retention_are_trimmed(api, writer, redis, receivers, deliverers):
    receiver = await receivers(lambda _id, _n: 500)
    endpoint = await create_endpoint(api, writer, receiver.url())
    old_ms = int((time.time() - DELIVERY_RETENTION_SECONDS - 3600) * 1000)
    stale = derived_id("dlv", old_ms, endpoint["id"], "evt_old")
    await redis.zadd(keyspace.webhook_deliveries(WORKSPACE, endpoint["id"]), {stale: 0})
    await redis.zadd(keyspace.webhook_dead(WORKSPACE, endpoint["id"]), {stale: old_ms})
    await deliverers(settings_overrides={"webhook_retry_scale": 0.00001})
    sent = event("message.sent", message_id="m1")
    await emit(redis, [sent])
    assert await _statuses(api, writer, endpoint["id"], want={"dead"}, count=1) == {sent.id: "dead"}
    listed = await redis.zrange(keyspace.webhook_deliveries(WORKSPACE, endpoint["id"]), 0, -1)
    dead = await redis.zrange(keyspace.webhook_dead(WORKSPACE, endpoint["id"]), 0, -1)
    assert stale.encode() not in listed and stale.encode() not in dead and len(listed) == len(dead) == 1


async def test_a_deleted_stream_is_followed_from_its_new_start(api, writer, redis, receivers, deliverers):
    receiver = await receivers()
    await create_endpoint(api, writer, receiver.url())
    await deliverers()
    await redis.delete(keyspace.EVENT_STREAM)  # what FLUSHDB or an operator's DEL does to the group
    sent = event("message.sent", message_id="m1")
    await emit(redis, [sent])  # likely before the deliverer notices the group is gone
    await receiver.wait_for(lambda r: r.delivered_ids() == {sent.id})


async def test_deliveries_are_paginated_newest_event_first(api, writer, redis, receivers, deliverers):
    receiver = await receivers()
    endpoint = await create_endpoint(api, writer, receiver.url())
    other = await create_endpoint(api, writer, receiver.url(), ["campaign.*"])
    await deliverers()
    start = datetime.now(UTC)
    sent = [event("message.sent", message_id=f"m{i}", at=start + timedelta(milliseconds=i)) for i in range(3)]
    await emit(redis, sent)
    await _statuses(api, writer, endpoint["id"], want={"delivered"}, count=3)
    base = f"/v1/webhooks/{endpoint['id']}/deliveries"
    first = await (await api.get(base + "?limit=2", headers=writer)).json()
    assert [d["event_id"] for d in first["data"]] == [sent[2].id, sent[1].id] and first["has_more"]
    second = await (await api.get(f"{base}?limit=2&cursor={first['next_cursor']}", headers=writer)).json()
    assert [d["event_id"] for d in second["data"]] == [sent[0].id] and not second["has_more"]
    elsewhere = await api.get(
        f"/v1/webhooks/{other['id']}/deliveries?cursor={first['next_cursor']}", headers=writer
    )
    assert elsewhere.status == 400 and (await elsewhere.json())["code"] == "invalid_cursor"


async def _attempted(api, writer, endpoint_id: str) -> list[dict]:
    for _ in range(200):
        page = await (await api.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=writer)).json()
        attempts = [a for d in page["data"] for a in d["attempts"]]
        if attempts:
            return attempts
        await asyncio.sleep(0.05)
    raise AssertionError("no attempt was recorded")


async def _statuses(api, writer, endpoint_id: str, *, want: set[str], count: int) -> dict[str, str]:
    for _ in range(200):
        page = await (await api.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=writer)).json()
        statuses = {d["event_id"]: d["status"] for d in page["data"]}
        if len(statuses) == count and set(statuses.values()) <= want:
            return statuses
        await asyncio.sleep(0.05)
    raise AssertionError(f"deliveries did not reach {want}: {statuses}")


async def _eventually(condition, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
