"""What a campaign message keeps in Redis once sent: its envelope, not its body (docs/campaigns.md,
"Memory"). The body is the campaign's pinned template version rendered for the subscriber; an API send
keeps its body as before."""

from __future__ import annotations

from schemas.messages import outbound_decoder
from store import keyspace
from tests.campaigns.conftest import drive, recipients, runner, settle, smtp_campaign


async def test_a_sent_campaign_message_keeps_its_envelope_and_an_api_send_its_body(
    client, make_key, sink, redis, workspace
):
    headers, _, emails, _, campaign_id = await smtp_campaign(client, make_key, sink, 30)
    body = runner(client, in_flight=100, chunk=10)
    await drive(body, client, headers, campaign_id)
    await settle(redis, body)
    assert sorted(recipients(sink)) == sorted(emails)
    # The body went out whole (rendered, with the RFC 8058 headers) before it was dropped.
    assert all(b"List-Unsubscribe:" in d.content and b"Hello P" in d.content for d in sink.deliveries)

    listed = await client.get(
        "/v1/messages", params={"campaign_id": campaign_id, "limit": "100"}, headers=headers
    )
    assert listed.status == 200
    rows = (await listed.json())["data"]
    assert len(rows) == 30 and all(r["status"] == "sent" for r in rows)
    for row in rows:
        stored = outbound_decoder.decode(await redis.hget(keyspace.message(workspace, row["id"]), "p"))
        assert stored.html is None and stored.text is None and stored.headers == {}
        assert stored.attachments == []
        # The envelope stays: who, from whom, the subject, what it was for.
        assert stored.campaign_id == campaign_id and stored.metadata["subscriber_id"].startswith("sub_")
        assert [a.email for a in stored.to] == row["to"] and stored.subject == row["subject"]
        assert stored.from_.email == "news@acme.test"
    view = await client.get(f"/v1/messages/{rows[0]['id']}", headers=headers)
    assert view.status == 200
    got = await view.json()
    assert got["campaign_id"] == campaign_id and got["subject"].startswith("Hi P")
    assert [e["type"] for e in got["events"]] == ["message.accepted", "message.sent"]

    admin = await make_key(["admin"])
    sent = {
        "from": "Acme <hello@acme.test>",
        "to": ["ana@example.com"],
        "subject": "Welcome",
        "html": "<p>Hi Ana</p>",
        "routing": {"server": got["server"]},
    }
    response = await client.post("/v1/send", json=sent, headers=admin)
    assert response.status == 202, await response.text()
    message_id = (await response.json())["id"]
    await settle(redis, body)
    kept = outbound_decoder.decode(await redis.hget(keyspace.message(workspace, message_id), "p"))
    assert kept.html == "<p>Hi Ana</p>" and kept.campaign_id is None
