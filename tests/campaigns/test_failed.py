"""The campaign status `failed` (docs/campaigns.md, "Failed"): a campaign whose pinned template is deleted
mid-send fails at once and sends nothing more; one where no recipient's message was sent and some failed
ends `failed` instead of `sent`, and retry-failed takes it back to `sending` once the cause is fixed. The
runner body on real Redis, the session's real dispatchers delivering into an aiosmtpd sink."""

from __future__ import annotations

from schemas.events import events_msgpack_decoder
from store import keyspace
from store.campaigns import CampaignStore
from tests.campaigns.conftest import (
    SCOPES,
    campaign,
    drive,
    make_audience,
    make_campaign,
    make_template,
    recipients,
    runner,
    settle,
    smtp,
    smtp_campaign,
    until_sending,
)


async def _completed_events(redis, campaign_id: str) -> list[dict]:
    found = []
    for _, fields in await redis.xrange(keyspace.EVENT_STREAM):
        blob = fields.get(keyspace.EVENT_FIELD)
        for event in events_msgpack_decoder.decode(blob) if blob else []:
            if event.type == "campaign.completed" and event.data["campaign"]["id"] == campaign_id:
                found.append(event.data)
    return found


async def test_a_deleted_template_fails_the_campaign_and_nothing_more_is_sent(
    client, make_key, sink, redis, workspace
):
    headers, list_id, _, template_id, campaign_id = await smtp_campaign(client, make_key, sink, 60)
    body = runner(client, in_flight=1000, chunk=20)
    await until_sending(body, redis, workspace, campaign_id)
    await body.step()  # the first chunk of 20 is queued
    deleted = await client.delete(f"/v1/templates/{template_id}", headers=headers)
    assert deleted.status == 200, await deleted.text()

    done = await drive(body, client, headers, campaign_id, until=("failed", "sent"))
    await settle(redis, body)
    assert done["status"] == "failed"
    assert done["progress"]["failure"] == "template_deleted"
    assert done["completed_at"] is not None
    assert len(recipients(sink)) == 20  # the chunk queued before the deletion, nothing after
    state = await campaign(client, headers, campaign_id)
    assert state["counters"]["remaining"] == 40 and state["counters"]["failed"] == 0
    assert (workspace, campaign_id) not in await CampaignStore(redis).active()
    assert not await redis.exists(keyspace.campaign_audience(workspace, campaign_id))
    [event] = await _completed_events(redis, campaign_id)
    assert event["status"] == "failed" and event["reason"] == "template_deleted"

    # Finished: nothing to retry (no recipient failed), no pause; it stays failed.
    retried = await client.post(f"/v1/campaigns/{campaign_id}/retry-failed", headers=headers)
    answer = await retried.json()
    assert retried.status == 202 and (answer["retrying"], answer["status"]) == (0, "failed")
    paused = await client.post(f"/v1/campaigns/{campaign_id}/pause", headers=headers)
    assert paused.status == 409
    assert (await paused.json())["code"] == "invalid_campaign_status"
    await body.run_until_idle()
    await settle(redis, body)
    assert len(recipients(sink)) == 20


async def test_every_recipient_failed_ends_failed_and_retry_after_the_fix_sends_them(
    client, make_key, sink, redis, workspace
):
    headers = await make_key(SCOPES)
    await smtp(client, headers, sink)
    list_id, emails = await make_audience(client, headers, 30, first_name=lambda i: None)
    template_id = await make_template(client, headers)
    campaign_id = await make_campaign(client, headers, list_id, template_id)
    body = runner(client, in_flight=1000, chunk=20)

    done = await drive(body, client, headers, campaign_id, until=("failed", "sent"))
    assert done["status"] == "failed"
    assert done["progress"]["failure"] == "all_recipients_failed"
    assert done["counters"]["failed"] == 30 and done["counters"]["sent"] == 0
    assert recipients(sink) == []
    [event] = await _completed_events(redis, campaign_id)
    assert event["status"] == "failed" and event["reason"] == "all_recipients_failed"

    people = [{"email": e, "attributes": {"first_name": "Fixed"}} for e in emails]
    fixed = await client.post(
        f"/v1/lists/{list_id}/subscribers", json={"subscribers": people}, headers=headers
    )
    assert fixed.status == 200
    retried = await client.post(f"/v1/campaigns/{campaign_id}/retry-failed", headers=headers)
    body_json = await retried.json()
    assert retried.status == 202 and body_json["retrying"] == 30 and body_json["status"] == "sending"
    again = await campaign(client, headers, campaign_id)
    assert again["status"] == "sending" and again["progress"]["failure"] is None
    done = await drive(body, client, headers, campaign_id)
    assert done["status"] == "sent" and done["counters"]["sent"] == 30 and done["counters"]["failed"] == 0
    assert sorted(recipients(sink)) == sorted(emails)
