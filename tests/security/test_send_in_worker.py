"""Issue #11's heavy sends: a heavy `/v1/send` or `/v1/send/bulk` crosses to the ingress's worker process
once, as its body's bytes, and comes back as its finished answer (ingress/send_work.py); a light one runs
on the loop. Both answer alike: the same refusals, the same implicit per-key item keys, one audit entry
written with the messages.

Where the work runs is shown by breaking it in this process: `prepare_send` (validation) raises here, so
a light request fails while a heavy one, validated in the worker process (a spawned interpreter that
imported its own, intact copy), is accepted.
"""

from __future__ import annotations

import gc

import msgspec
import pytest

from ingress import send_work, worker_process
from ingress.app import create_app
from security.audit_chain import AuditEntry
from store import keyspace
from store.messages import MessageStore
from tests.conftest import make_settings

MESSAGE = {"from": "Acme <hello@acme.com>", "to": "ana@example.com", "subject": "Hi", "html": "<p>Hi</p>"}
PAD = "x" * (send_work.HEAVY_RAW_BYTES + 1)  # a text that makes a single send's body heavy


def single(heavy: bool, **fields) -> dict:
    return {**MESSAGE, **({"text": PAD} if heavy else {}), **fields}


def bulk(heavy: bool, *, invalid: int | None = None, **fields) -> dict:
    count = 25 if heavy else 3  # more than off_loop.HEAVY_ITEMS, or fewer
    messages = [{**MESSAGE, "to": f"u{i}@example.com"} for i in range(count)]
    if invalid is not None:
        messages[invalid]["to"] = "nobody"
    return {"messages": messages, **fields}


@pytest.fixture
async def client(aiohttp_client, tmp_path, redis_url, redis):
    app = create_app(make_settings(tmp_path, redis_url), redis_url=redis_url, gateway=None)
    return await aiohttp_client(app)


@pytest.fixture
async def sender(client, make_key) -> dict[str, str]:
    headers = await make_key(["send", "write:settings", "write:templates", "read:messages"])
    body = {"name": "sandbox", "provider": "sandbox"}
    response = await client.post("/v1/sending-servers", json=body, headers=headers)
    assert response.status == 201, await response.text()
    return headers


def _broken(*args, **kwargs):
    raise RuntimeError("validation ran in the ingress process")


async def test_a_heavy_request_is_validated_and_enqueued_only_in_the_worker_process(
    client, sender, redis, workspace, monkeypatch
):
    monkeypatch.setattr(send_work, "prepare_send", _broken)
    for path, body in (("/v1/send", single(False)), ("/v1/send/bulk", bulk(False))):
        assert (await client.post(path, json=body, headers=sender)).status == 500  # the loop's own path
    answer = await client.post(
        "/v1/send/bulk", json=bulk(True, invalid=3, validation="permissive"), headers=sender
    )
    assert answer.status == 202, await answer.text()
    accepted = await answer.json()
    assert (accepted["accepted"], accepted["rejected"]) == (24, 1)
    assert accepted["data"][3]["error"]["errors"][0]["pointer"] == "#/messages/3/to"
    assert accepted["data"][3]["error"]["request_id"] == answer.headers["Request-Id"]
    sent = await client.post("/v1/send", json=single(True), headers=sender)
    assert sent.status == 202, await sent.text()
    message_id = (await sent.json())["id"]
    ids = [d["id"] for d in accepted["data"] if "id" in d] + [message_id]
    stored = await MessageStore(redis).messages(workspace, ids)
    assert sorted(stored) == sorted(ids)
    assert stored[message_id].text == PAD


@pytest.mark.parametrize("heavy", [False, True], ids=["light", "heavy"])
async def test_heavy_and_light_requests_are_refused_alike(client, sender, heavy):
    async def problem(
        path: str, body: bytes, content_type: str = "application/json"
    ) -> tuple[int, str, list]:
        response = await client.post(path, data=body, headers={**sender, "Content-Type": content_type})
        answer = await response.json()
        return response.status, answer["code"], [e["pointer"] for e in answer.get("errors", [])]

    pad = b" " * (send_work.HEAVY_RAW_BYTES + 1) if heavy else b""
    assert await problem("/v1/send/bulk", b'{"messages": [' + pad) == (400, "invalid_json", [])
    assert await problem("/v1/send", msgspec.json.encode(single(heavy, to=7))) == (
        422,
        "validation_error",
        ["#/to"],
    )
    too_many = {"messages": [MESSAGE] * 1001}
    assert await problem("/v1/send/bulk", msgspec.json.encode(too_many) + pad) == (
        422,
        "validation_error",
        ["#/messages"],
    )
    strict = msgspec.json.encode(bulk(heavy, invalid=1))
    assert await problem("/v1/send/bulk", strict) == (422, "validation_error", ["#/messages/1/to"])
    assert await problem("/v1/send", msgspec.json.encode(single(heavy, to="nobody"))) == (
        422,
        "validation_error",
        ["#/to"],
    )
    assert (await problem("/v1/send", msgspec.json.encode(single(heavy)), "text/plain"))[:2] == (
        415,
        "unsupported_media_type",
    )


@pytest.mark.parametrize("heavy", [False, True], ids=["light", "heavy"])
async def test_heavy_and_light_sends_write_one_audit_entry_with_their_messages(client, sender, redis, heavy):
    before = await redis.xlen(keyspace.AUDIT_STREAM)
    sent = await (await client.post("/v1/send", json=single(heavy), headers=sender)).json()
    bulked = await client.post("/v1/send/bulk", json=bulk(heavy), headers=sender)
    assert bulked.status == 202
    refused = await client.post("/v1/send/bulk", json=bulk(heavy, invalid=0), headers=sender)
    assert refused.status == 422
    entries = [
        msgspec.msgpack.decode(f[keyspace.AUDIT_FIELD], type=AuditEntry)
        for _, f in (await redis.xrange(keyspace.AUDIT_STREAM))[before:]
    ]
    assert [(e.action, e.status, e.resource_id) for e in entries] == [
        ("POST /v1/send", 202, sent["id"]),
        ("POST /v1/send/bulk", 202, None),
        ("POST /v1/send/bulk", 422, None),
    ]


@pytest.mark.parametrize("heavy", [False, True], ids=["light", "heavy"])
async def test_heavy_and_light_sends_scope_the_header_keys_to_the_api_key(
    client, sender, make_key, redis, heavy
):
    other = await make_key(["send"])
    for path, body in (("/v1/send/bulk", bulk(heavy)), ("/v1/send", single(heavy))):
        first = await client.post(path, json=body, headers={**sender, "Idempotency-Key": "guess"})
        guessed = await client.post(path, json=body, headers={**other, "Idempotency-Key": "guess"})
        assert first.status == guessed.status == 202, await guessed.text()
        mine, theirs = _ids(await first.json()), _ids(await guessed.json())
        assert len(theirs) == len(mine) and not set(theirs) & set(mine), (path, mine, theirs)
        # the first key's requests retried as new ones (no stored answer): deduplicated message by message
        await redis.delete(*[k async for k in redis.scan_iter(match="*:idem:*")])
        again = await client.post(path, json=body, headers={**sender, "Idempotency-Key": "guess"})
        assert _ids(await again.json()) == mine


async def test_a_heavy_send_with_a_template_is_rendered_in_the_worker_process(client, sender, monkeypatch):
    created = await client.post(
        "/v1/templates",
        json={"name": "t", "subject": "Hello {{ n }}", "html": "<p>{{ n }}</p>"},
        headers=sender,
    )
    template = (await created.json())["id"]
    monkeypatch.setattr(send_work, "prepare_send", _broken)
    # variables under their 64 KiB bound but over the heavy threshold: the whole request goes to the worker
    variables = {"n": "Ana", "pad": PAD}
    body = {
        "from": MESSAGE["from"],
        "to": MESSAGE["to"],
        "template": {"id": template, "variables": variables},
    }
    sent = await client.post("/v1/send", json=body, headers=sender)
    assert sent.status == 202, await sent.text()
    view = await (await client.get(f"/v1/messages/{(await sent.json())['id']}", headers=sender)).json()
    assert view["subject"] == "Hello Ana"
    missing = {**body, "template": {"id": "tpl_missing", "variables": variables}}
    refused = await client.post("/v1/send", json=missing, headers=sender)
    assert refused.status == 422
    assert (await refused.json())["errors"][0]["pointer"] == "#/template/id"


async def test_the_worker_process_settles_its_garbage_collector(client):
    """Settled as the ingress and every actor are (actors/priority.py): with Python's defaults, the
    collections a bulk set off took ~20% of its time in the worker process."""
    assert await worker_process.run(gc.get_threshold) == (50_000, 50, 100)
    assert await worker_process.run(gc.get_freeze_count) > 0


def _ids(answer: dict) -> list[str]:
    return [item["id"] for item in answer["data"]] if "data" in answer else [answer["id"]]
