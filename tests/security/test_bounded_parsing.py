"""Issue #11, part 2: every body is bounded before it is parsed, and one key's bodies are budgeted."""

from __future__ import annotations

import msgspec
import pytest

from ingress.body_budget import BodyBudget
from store.ledger.blocking import BlockingLedger
from store.ledger.ledger import STAGED_PAYLOAD_BYTES, MessageLedger
from tests.pipeline.helpers import message as outbound
from tests.pipeline.helpers import new_message

MESSAGE = {"from": "Acme <hello@acme.com>", "to": "ana@example.com", "subject": "Hi", "html": "<p>Hi</p>"}


def test_body_budget_refills_at_its_rate_and_says_when_to_come_back():
    budget = BodyBudget(bytes_per_second=1000, burst_bytes=2000, heavy_per_key=1)
    assert budget.take("k", 2000, now=0.0) == 0.0
    assert budget.take("k", 500, now=0.0) == 0.5
    assert budget.take("other", 2000, now=0.0) == 0.0  # per key
    assert budget.take("k", 500, now=0.5) == 0.0


def test_body_budget_bounds_heavy_requests_in_flight_per_key():
    budget = BodyBudget(bytes_per_second=1, burst_bytes=1, heavy_per_key=1)
    assert budget.enter_heavy("k") and not budget.enter_heavy("k") and budget.enter_heavy("j")
    budget.leave_heavy("k")
    assert budget.enter_heavy("k")


def test_body_budget_memory_is_bounded_by_active_keys():
    budget = BodyBudget(bytes_per_second=1000, burst_bytes=10, heavy_per_key=1, max_keys=3)
    for i in range(100):
        budget.take(f"k{i}", 10, now=float(i))
    assert len(budget._buckets) <= 3


async def test_route_body_cap_refuses_by_content_length_before_reading(client, admin):
    body = {"name": "x" * (2 * 1024 * 1024)}
    response = await client.post("/v1/webhooks", json=body, headers=admin)
    assert response.status == 413, await response.text()
    assert (await response.json())["code"] == "payload_too_large"
    assert response.headers.get("Connection", "").lower() == "close"


async def test_route_body_cap_cuts_off_chunked_bodies(client, admin):
    async def chunks():
        for _ in range(40):
            yield b" " * 65536

    headers = {**admin, "Content-Type": "application/json"}
    response = await client.post("/v1/webhooks", data=chunks(), headers=headers)
    assert response.status == 413, await response.text()


async def test_inbound_webhook_bodies_are_capped_before_parsing(client):
    response = await client.post("/v1/inbound/sendgrid/srv_x", data=b"[" * (3 * 1024 * 1024))
    assert response.status == 413  # refused on its Content-Length before the route even looks it up


async def test_body_byte_rate_per_key_answers_429_with_retry_after(app_client, admin, make_key):
    client = await app_client(body_bytes_per_second=1.0, max_body_bytes=64 * 1024)
    headers = {**admin, "Content-Type": "application/json"}
    big = msgspec.json.encode({**MESSAGE, "text": "y" * 40_000})
    first = await client.post("/v1/send", data=big, headers=headers)
    assert first.status in (202, 422), await first.text()
    second = await client.post("/v1/send", data=big, headers=headers)
    assert second.status == 429, await second.text()
    assert int(second.headers["Retry-After"]) >= 1
    other = await make_key(["send"])
    third = await client.post("/v1/send", data=big, headers={**other, "Content-Type": "application/json"})
    assert third.status != 429  # another key has its own budget


@pytest.mark.parametrize(
    ("text", "by", "template"),
    [
        # 128 Ki characters: a heavy request, enqueued from the worker process by BlockingLedger
        # (ingress/send_work.py), so this process stages nothing
        ("y" * (STAGED_PAYLOAD_BYTES * 2), None, False),
        # 30,000 characters but 90 kB of UTF-8, from a template (a small body: a light request, and
        # 30,000 characters are under the content threshold): enqueued on the loop by MessageLedger
        ("€" * 30_000, "async", True),
    ],
    ids=["worker_process", "async"],
)
async def test_large_payload_is_staged_outside_the_enqueue_script_and_kept(
    client, admin, redis, workspace, monkeypatch, text, by, template
):
    staged: list[str] = []
    stagers: list[str] = []
    original, original_blocking = MessageLedger._stage, BlockingLedger._stage

    async def spy(self, payloads):
        staged.extend(payloads)
        stagers.append("async")
        await original(self, payloads)

    def blocking_spy(self, payloads):
        staged.extend(payloads)
        stagers.append("blocking")
        original_blocking(self, payloads)

    monkeypatch.setattr(MessageLedger, "_stage", spy)
    monkeypatch.setattr(BlockingLedger, "_stage", blocking_spy)
    await client.post("/v1/sending-servers", json={"name": "sandbox", "provider": "sandbox"}, headers=admin)
    body = {**MESSAGE, "text": text}
    if template:
        source = {"name": "Large", "subject": "Hi", "html": "<p>Hi</p>", "text": text}
        created = await client.post("/v1/templates", json=source, headers=admin)
        assert created.status == 201, await created.text()
        body = {**MESSAGE, "html": None, "template": {"id": (await created.json())["id"]}}
    response = await client.post("/v1/send", json=body, headers=admin)
    assert response.status == 202, await response.text()
    message_id = (await response.json())["id"]
    stored = await MessageLedger(redis).messages(workspace, [message_id])
    assert stored[message_id].text == text
    keys = [k async for k in redis.scan_iter(match=f"*msg:{message_id}")]
    assert len(keys) == 1
    if by is not None:
        assert [k.decode() for k in keys] == staged  # the script got an empty payload for it
    assert stagers == ([by] if by else [])
    assert await redis.ttl(keys[0]) == -1  # PERSISTed by the script: no staging expiry left


def test_blocking_ledger_stages_a_large_payload_outside_the_enqueue_script(redis_url, monkeypatch):
    """What the worker process's enqueue does with a large message (the route test above cannot spy in
    that process): the payload reaches its hash by a plain HSET, the script gets an empty one."""
    staged: list[str] = []
    original = BlockingLedger._stage

    def spy(self, payloads):
        staged.extend(payloads)
        original(self, payloads)

    monkeypatch.setattr(BlockingLedger, "_stage", spy)
    text = "y" * (STAGED_PAYLOAD_BYTES * 2)
    message = msgspec.structs.replace(outbound("ana@example.com", workspace="blocking-ledger"), text=text)
    ledger = BlockingLedger(redis_url, item_retention_seconds=3600)
    try:
        assert ledger.enqueue([new_message(message, ["srv_x"])]) == [None]
        [key] = ledger.redis.keys(f"*msg:{message.id}")
        assert staged == [key.decode()]
        assert ledger.redis.ttl(key) == -1
        assert ledger.redis.hget(key, "p")  # the payload is there, kept
    finally:
        ledger.close()
