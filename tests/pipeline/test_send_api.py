"""/v1/send and /v1/send/bulk end to end: HTTP in, a real aiosmtpd sink out, through real Ray actors."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime, timedelta

from tests.smtp.sink import SmtpSink

from .conftest import create_smtp_server, dispatch_idle, send_and_settle, settled_status, wait_for

MESSAGE = {
    "from": "Acme <hello@acme.com>",
    "to": "ana@example.com",
    "subject": "Welcome",
    "html": "<p>Hi Ana</p>",
    "text": "Hi Ana",
}


async def test_a_send_arrives_with_its_headers_and_body(client, admin, sink, smtp_server):
    attachment = base64.b64encode(b"%PDF-1.4 hello").decode()
    body = {
        **MESSAGE,
        "to": ["Ana <ana@example.com>"],
        "cc": ["bo@example.org"],
        "bcc": ["cy@example.net"],
        "reply_to": "support@acme.com",
        "headers": {"X-Entity-Ref-ID": "123"},
        "tags": ["onboarding"],
        "metadata": {"user_id": "42"},
        "attachments": [{"filename": "a.pdf", "content": attachment, "content_type": "application/pdf"}],
    }
    response = await client.post("/v1/send", json=body, headers=admin)
    assert response.status == 202, await response.text()
    accepted = await response.json()
    assert (
        accepted["status"] == "queued"
        and accepted["id"].startswith("msg_")
        and accepted["object"] == "message"
    )
    readable = await client.get(f"/v1/messages/{accepted['id']}", headers=admin)
    assert readable.status == 200 and (await readable.json())["events"][0]["type"] == "message.accepted"
    await wait_for(lambda: len(sink.deliveries) == 1)
    delivery = sink.deliveries[0]
    assert sorted(delivery.rcpt_tos) == ["ana@example.com", "bo@example.org", "cy@example.net"]
    parsed = delivery.parsed()
    assert parsed["Subject"] == "Welcome" and parsed["Reply-To"] == "support@acme.com"
    assert parsed["X-Entity-Ref-ID"] == "123" and parsed["Bcc"] is None
    assert parsed["X-Mailers-Message-Id"] == accepted["id"]
    assert parsed.get_body(("html",)).get_content().strip() == "<p>Hi Ana</p>"
    assert [p.get_filename() for p in parsed.iter_attachments()] == ["a.pdf"]

    async def sent():
        view = await (await client.get(f"/v1/messages/{accepted['id']}", headers=admin)).json()
        return view if view["status"] == "sent" else None

    view = await wait_for(sent)
    assert view["server"] == smtp_server["id"] and view["provider"] == "smtp" and view["attempts"] == 1
    assert [e["type"] for e in view["events"]] == ["message.accepted", "message.sent"]


async def test_a_bulk_of_1000_arrives_completely(client, admin, redis, sink, smtp_server):
    messages = [{**MESSAGE, "to": f"user{i}@example.com", "subject": f"n{i}"} for i in range(1000)]
    response = await client.post("/v1/send/bulk", json={"messages": messages}, headers=admin)
    assert response.status == 202, await response.text()
    answer = await response.json()
    assert answer["accepted"] == 1000 and answer["rejected"] == 0
    assert [item["index"] for item in answer["data"]] == list(range(1000))
    await wait_for(lambda: len(sink.deliveries) >= 1000, within=90)
    await wait_for(lambda: dispatch_idle(redis))
    received = sorted(d.rcpt_tos[0] for d in sink.deliveries)
    assert received == sorted(f"user{i}@example.com" for i in range(1000))


async def test_strict_refuses_everything_permissive_accepts_the_valid(client, admin, sink, smtp_server):
    messages = [MESSAGE, {**MESSAGE, "to": "not-an-address"}, {**MESSAGE, "subject": 7}]
    strict = await client.post("/v1/send/bulk", json={"messages": messages}, headers=admin)
    assert strict.status == 422
    pointers = sorted(e["pointer"] for e in (await strict.json())["errors"])
    assert pointers == ["#/messages/1/to", "#/messages/2/subject"]
    permissive = await client.post(
        "/v1/send/bulk", json={"messages": messages, "validation": "permissive"}, headers=admin
    )
    assert permissive.status == 202
    answer = await permissive.json()
    assert answer["accepted"] == 1 and answer["rejected"] == 2
    assert answer["data"][1]["error"]["errors"][0]["pointer"] == "#/messages/1/to"
    await wait_for(lambda: len(sink.deliveries) == 1)
    too_many = await client.post("/v1/send/bulk", json={"messages": [MESSAGE] * 1001}, headers=admin)
    assert too_many.status == 422


async def test_validation_rules(client, admin, smtp_server):
    cases = {
        "#/to": {**MESSAGE, "to": [f"u{i}@example.com" for i in range(51)]},
        "#/html": {k: v for k, v in MESSAGE.items() if k not in ("html", "text")},
        "#/send_at": {**MESSAGE, "send_at": (datetime.now(UTC) + timedelta(days=31)).isoformat()},
        "#/headers/Subject": {**MESSAGE, "headers": {"Subject": "x"}},
        "#/attachments/0/content": {**MESSAGE, "attachments": [{"filename": "a", "content": "%%%"}]},
        "#/tags": {**MESSAGE, "tags": [f"t{i}" for i in range(11)]},
        "#/from": {**MESSAGE, "from": "nobody"},
    }
    for pointer, body in cases.items():
        response = await client.post("/v1/send", json=body, headers=admin)
        assert response.status == 422, (pointer, await response.text())
        assert pointer in [e["pointer"] for e in (await response.json())["errors"]], pointer


async def test_idn_and_display_names(client, admin, sink, smtp_server):
    response = await client.post(
        "/v1/send", json={**MESSAGE, "to": '"Doe, Jane" <jane@bücher.de>'}, headers=admin
    )
    assert response.status == 202, await response.text()
    await wait_for(lambda: len(sink.deliveries) == 1)
    assert sink.deliveries[0].rcpt_tos == ["jane@xn--bcher-kva.de"]


async def test_a_domain_restricted_key_cannot_send_from_elsewhere(client, make_key, smtp_server):
    restricted = await make_key(["send"], domains=["acme.com"])
    assert (await client.post("/v1/send", json=MESSAGE, headers=restricted)).status == 202
    other = await client.post("/v1/send", json={**MESSAGE, "from": "x@evil.com"}, headers=restricted)
    assert other.status == 403 and (await other.json())["code"] == "forbidden"


async def test_suppressed_recipients_never_arrive(client, admin, redis, sink, smtp_server):
    added = await client.post(
        "/v1/suppressions",
        json={"emails": ["gone@example.com"], "reason": "manual", "scope": "workspace"},
        headers=admin,
    )
    assert added.status in (200, 201), await added.text()
    only = await (
        await client.post("/v1/send", json={**MESSAGE, "to": "gone@example.com"}, headers=admin)
    ).json()
    assert only["status"] == "queued"  # checked at send time, by the dispatcher
    assert await settled_status(client, admin, only["id"]) == "suppressed"
    mixed = await client.post(
        "/v1/send", json={**MESSAGE, "to": ["gone@example.com", "kept@example.com"]}, headers=admin
    )
    assert await settled_status(client, admin, (await mixed.json())["id"]) == "sent"
    await wait_for(lambda: len(sink.deliveries) == 1)
    await wait_for(lambda: dispatch_idle(redis))
    assert [d.rcpt_tos for d in sink.deliveries] == [["kept@example.com"]]
    view = await (await client.get(f"/v1/messages/{only['id']}", headers=admin)).json()
    suppressed = [e for e in view["events"] if e["type"] == "message.suppressed"]
    assert suppressed[0]["data"] == {
        "recipient": "gone@example.com",
        "scope": "workspace",
        "reason": "manual",
    }
    # A partly suppressed message keeps going: its suppression is in its timeline, before it was sent.
    partly = await (await client.get(f"/v1/messages/{(await mixed.json())['id']}", headers=admin)).json()
    assert [e["type"] for e in partly["events"]] == ["message.accepted", "message.suppressed", "message.sent"]
    assert partly["events"][1]["data"]["recipient"] == "gone@example.com"


async def test_a_550_bounces_and_suppresses_the_address(client, admin, sink, smtp_server):
    first = await (
        await client.post("/v1/send", json={**MESSAGE, "to": "unknown7@example.com"}, headers=admin)
    ).json()

    async def bounced():
        view = await (await client.get(f"/v1/messages/{first['id']}", headers=admin)).json()
        return view["status"] == "bounced"

    await wait_for(bounced)

    assert await send_and_settle(client, admin, {**MESSAGE, "to": "unknown7@example.com"}) == "suppressed"


async def test_scheduled_sends_arrive_after_send_at_and_cancel_works(client, admin, redis, sink, smtp_server):
    due = datetime.now(UTC) + timedelta(seconds=2)
    later = await (
        await client.post(
            "/v1/send", json={**MESSAGE, "to": "later@example.com", "send_at": due.isoformat()}, headers=admin
        )
    ).json()
    never = await (
        await client.post(
            "/v1/send", json={**MESSAGE, "to": "never@example.com", "send_at": due.isoformat()}, headers=admin
        )
    ).json()
    assert later["status"] == never["status"] == "scheduled"
    canceled = await client.post(f"/v1/messages/{never['id']}/cancel", headers=admin)
    assert canceled.status == 200 and (await canceled.json())["status"] == "canceled"
    again = await client.post(f"/v1/messages/{never['id']}/cancel", headers=admin)
    assert again.status == 409
    await wait_for(lambda: len(sink.deliveries) == 1, within=20)
    assert time.time() >= due.timestamp() - 0.05
    await wait_for(lambda: dispatch_idle(redis))
    assert [d.rcpt_tos for d in sink.deliveries] == [["later@example.com"]]


async def test_fifty_concurrent_requests_with_one_key_send_one_message(
    client, admin, redis, sink, smtp_server
):
    headers = {**admin, "Idempotency-Key": "order-4711"}
    answers = await asyncio.gather(
        *[client.post("/v1/send", json=MESSAGE, headers=headers) for _ in range(50)]
    )
    statuses = [a.status for a in answers]
    assert statuses.count(202) >= 1 and set(statuses) <= {202, 409}
    ids = {(await a.json())["id"] for a in answers if a.status == 202}
    assert len(ids) == 1
    await wait_for(lambda: len(sink.deliveries) == 1)
    await wait_for(lambda: dispatch_idle(redis))
    assert len(sink.deliveries) == 1


async def test_failover_through_the_api(client, admin, redis):
    with SmtpSink() as primary, SmtpSink() as secondary:

        async def always_451(*args):
            return "451 4.3.0 Try again later"

        primary.handler.handle_RCPT = always_451
        await create_smtp_server(client, admin, primary.port, name="primary", priority=1)
        await create_smtp_server(client, admin, secondary.port, name="secondary", priority=2)
        messages = [{**MESSAGE, "to": f"f{i}@example.com"} for i in range(20)]
        assert (await client.post("/v1/send/bulk", json={"messages": messages}, headers=admin)).status == 202
        await wait_for(lambda: len(secondary.deliveries) == 20, within=60)
        await wait_for(lambda: dispatch_idle(redis))
        assert sorted(d.rcpt_tos[0] for d in secondary.deliveries) == sorted(m["to"] for m in messages)
        assert primary.deliveries == []


async def test_list_and_filter_messages(client, admin, sink, smtp_server):
    for i in range(5):
        body = {**MESSAGE, "to": f"l{i}@example.com", "tags": ["even" if i % 2 == 0 else "odd"]}
        assert (await client.post("/v1/send", json=body, headers=admin)).status == 202
    listed = await (await client.get("/v1/messages?tag=even&limit=2", headers=admin)).json()
    assert [m["to"] for m in listed["data"]] == [["l4@example.com"], ["l2@example.com"]] and listed[
        "has_more"
    ]
    rest = await (
        await client.get(f"/v1/messages?tag=even&limit=2&cursor={listed['next_cursor']}", headers=admin)
    ).json()
    assert [m["to"] for m in rest["data"]] == [["l0@example.com"]] and not rest["has_more"]
    mismatch = await client.get(f"/v1/messages?tag=odd&cursor={listed['next_cursor']}", headers=admin)
    assert mismatch.status == 400


async def test_a_suppression_added_after_acceptance_still_stops_a_scheduled_send(
    client, admin, sink, smtp_server
):
    due = datetime.now(UTC) + timedelta(seconds=2)
    accepted = await (
        await client.post(
            "/v1/send",
            json={**MESSAGE, "to": "changed-mind@example.com", "send_at": due.isoformat()},
            headers=admin,
        )
    ).json()
    assert accepted["status"] == "scheduled"
    added = await client.post(
        "/v1/suppressions",
        json={"email": "changed-mind@example.com", "reason": "unsubscribe", "scope": "workspace"},
        headers=admin,
    )
    assert added.status in (200, 201)
    assert await settled_status(client, admin, accepted["id"]) == "suppressed"
    assert sink.deliveries == []


async def test_a_send_writes_its_audit_entry_once_in_the_enqueue(client, admin, redis, smtp_server):
    import msgspec

    from security.audit_chain import AuditEntry
    from store import keyspace

    before = await redis.xlen(keyspace.AUDIT_STREAM)
    accepted = await (await client.post("/v1/send", json=MESSAGE, headers=admin)).json()
    bad = await client.post("/v1/send", json={**MESSAGE, "to": "nobody"}, headers=admin)
    assert bad.status == 422
    entries = [
        msgspec.msgpack.decode(f[keyspace.AUDIT_FIELD], type=AuditEntry)
        for _, f in (await redis.xrange(keyspace.AUDIT_STREAM))[before:]
    ]
    sends = [e for e in entries if e.action == "POST /v1/send"]
    assert [(e.status, e.resource_id) for e in sends] == [(202, accepted["id"]), (422, None)]
