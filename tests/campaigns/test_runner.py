"""The campaign runner body on real Redis, with the session's real dispatchers delivering into an aiosmtpd
sink: every subscriber exactly once, personalised, with the RFC 8058 headers; pause holds the sink; a
replayed chunk enqueues nothing twice; unsubscribes and suppressions mid-campaign; a missing variable
fails only its recipient, and retry-failed sends them once fixed."""

from __future__ import annotations

from collections import Counter

from schemas.audience import subscriber_decoder
from store import keyspace
from tests.campaigns.conftest import (
    SCOPES,
    campaign,
    drive,
    make_audience,
    make_campaign,
    make_template,
    packed_snapshot,
    parsed,
    recipients,
    runner,
    settle,
    smtp,
    smtp_campaign,
    store_state,
    until_sending,
)


async def test_every_subscriber_gets_one_personalised_message_with_rfc8058_headers(
    client, make_key, sink, redis, workspace
):
    headers, list_id, emails, template_id, campaign_id = await smtp_campaign(client, make_key, sink, 300)
    body = runner(client, in_flight=100, chunk=50)
    done = await drive(body, client, headers, campaign_id)

    assert sorted(recipients(sink)) == sorted(emails)  # each exactly once
    for delivery in sink.deliveries:
        message = parsed(delivery)
        to = delivery.rcpt_tos[0]
        i = int(to[1:].split("@")[0])
        assert message["Subject"] == f"Hi P{i}"
        assert f"Hello P{i} &lt;{to}&gt;" in message.get_body(("html",)).get_content()
        unsubscribe = message["List-Unsubscribe"]
        assert "<https://mailers.test/t/u/" in unsubscribe
        assert "<mailto:" in unsubscribe
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    counters = done["counters"]
    assert counters["audience"] == 300 and counters["remaining"] == 0 and counters["queued"] == 0
    assert counters["sent"] == 300 and counters["failed"] == 0
    assert done["completed_at"] is not None
    assert not await redis.exists(keyspace.campaign_audience(workspace, campaign_id))  # snapshot dropped
    listed = await client.get(
        "/v1/messages", params={"campaign_id": campaign_id, "limit": "100"}, headers=headers
    )
    assert listed.status == 200 and len((await listed.json())["data"]) == 100


async def test_pause_stops_the_sink_and_resume_completes_without_duplicates(
    client, make_key, sink, redis, workspace
):
    headers, list_id, emails, template_id, campaign_id = await smtp_campaign(client, make_key, sink, 400)
    window = 40
    body = runner(client, in_flight=window, chunk=20)
    await until_sending(body, redis, workspace, campaign_id)
    for _ in range(3):  # a few chunks out (the window lets two through), then pause
        await body.step()
    paused = await client.post(f"/v1/campaigns/{campaign_id}/pause", headers=headers)
    assert paused.status == 200, await paused.text()
    await settle(redis, body)
    held = len(sink.deliveries)
    state = await campaign(client, headers, campaign_id)
    assert 0 < held <= window  # at most the in-flight window went out after the pause
    assert state["status"] == "paused" and state["counters"]["queued"] == 0
    for _ in range(5):  # the runner keeps stepping: nothing more is queued, nothing more arrives
        await body.run_until_idle()
    await settle(redis, body)
    assert len(sink.deliveries) == held
    assert (await campaign(client, headers, campaign_id))["counters"]["remaining"] == 400 - held

    resumed = await client.post(f"/v1/campaigns/{campaign_id}/resume", headers=headers)
    assert resumed.status == 200
    done = await drive(body, client, headers, campaign_id)
    assert sorted(recipients(sink)) == sorted(emails)
    assert done["counters"]["sent"] == 400


async def test_a_chunk_replayed_after_a_lost_checkpoint_enqueues_nothing_twice(
    client, make_key, sink, redis, workspace
):
    headers, list_id, emails, template_id, campaign_id = await smtp_campaign(client, make_key, sink, 120)
    first = runner(client, in_flight=1000, chunk=30)
    await until_sending(first, redis, workspace, campaign_id)
    before = await redis.hgetall(keyspace.campaign(workspace, campaign_id))
    await first.step()  # one chunk: enqueued, checkpoint committed
    after = await store_state(redis, workspace, campaign_id)
    assert after.number("n:enq") == 30
    # The process "died" after the enqueue but before its checkpoint: the hash is as it was before.
    await redis.delete(keyspace.campaign(workspace, campaign_id))
    await redis.hset(keyspace.campaign(workspace, campaign_id), mapping=before)
    second = runner(client, in_flight=1000, chunk=30, consumer="runner-2")  # a restarted runner
    done = await drive(second, client, headers, campaign_id)
    assert Counter(recipients(sink)) == Counter(emails)  # nobody twice
    assert done["counters"]["sent"] == 120 and done["counters"]["queued"] == 0


async def test_unsubscribe_and_suppression_mid_campaign_stop_unsent_recipients(
    client, make_key, sink, redis, workspace
):
    headers, list_id, emails, template_id, campaign_id = await smtp_campaign(client, make_key, sink, 100)
    body = runner(client, in_flight=1000, chunk=20)
    await until_sending(body, redis, workspace, campaign_id)
    await body.step()  # the first 20 (by subscriber id) are queued
    order = await packed_snapshot(redis, workspace, campaign_id)
    unsubscribed, suppressed = order[50], order[80]
    subs = await redis.hmget(keyspace.subscribers(workspace), [unsubscribed, suppressed])
    gone = await client.delete(
        f"/v1/lists/{list_id}/subscribers/{unsubscribed}?mode=unsubscribe", headers=headers
    )
    assert gone.status == 200, await gone.text()
    suppressed_email = subscriber_decoder.decode(subs[1]).email
    unsubscribed_email = subscriber_decoder.decode(subs[0]).email
    added = await client.post("/v1/suppressions", json={"email": suppressed_email}, headers=headers)
    assert added.status in (200, 201), await added.text()
    done = await drive(body, client, headers, campaign_id)
    got = recipients(sink)
    assert unsubscribed_email not in got and suppressed_email not in got
    assert sorted(got) == sorted(set(emails) - {unsubscribed_email, suppressed_email})
    assert done["counters"]["suppressed"] == 2 and done["counters"]["sent"] == 98


async def test_missing_variable_fails_only_its_recipients_and_retry_sends_them(client, make_key, sink, redis):
    headers = await make_key(SCOPES)
    await smtp(client, headers, sink)
    list_id, emails = await make_audience(
        client, headers, 50, first_name=lambda i: None if i % 10 == 0 else f"P{i}"
    )
    template_id = await make_template(client, headers)
    campaign_id = await make_campaign(client, headers, list_id, template_id)
    body = runner(client, in_flight=1000, chunk=20)
    done = await drive(body, client, headers, campaign_id)
    missing = {e for i, e in enumerate(emails) if i % 10 == 0}
    assert sorted(recipients(sink)) == sorted(set(emails) - missing)
    assert done["counters"]["failed"] == 5 and done["counters"]["sent"] == 45

    page = await (
        await client.get(f"/v1/campaigns/{campaign_id}/recipients?status=failed&limit=3", headers=headers)
    ).json()
    rest = await (
        await client.get(
            f"/v1/campaigns/{campaign_id}/recipients",
            params={"status": "failed", "limit": "3", "cursor": page["next_cursor"]},
            headers=headers,
        )
    ).json()
    failed = page["data"] + rest["data"]
    assert {f["email"] for f in failed} == missing and not rest["has_more"]
    assert all(f["code"] == "template_error" and "first_name" in f["reason"] for f in failed)

    people = [{"email": e, "attributes": {"first_name": "Fixed"}} for e in sorted(missing)]
    fixed = await client.post(
        f"/v1/lists/{list_id}/subscribers", json={"subscribers": people}, headers=headers
    )
    assert fixed.status == 200
    retried = await client.post(f"/v1/campaigns/{campaign_id}/retry-failed", headers=headers)
    assert retried.status == 202 and (await retried.json())["retrying"] == 5
    done = await drive(body, client, headers, campaign_id)
    assert sorted(recipients(sink)) == sorted(emails)  # the five once, the others still once
    assert done["counters"]["failed"] == 0 and done["counters"]["sent"] == 50
    assert all(parsed(d)["Subject"] == "Hi Fixed" for d in sink.deliveries if d.rcpt_tos[0] in missing)


async def test_one_click_unsubscribes_from_every_list_of_the_campaign(
    client, make_key, sink, redis, workspace
):
    headers = await make_key(SCOPES)
    await smtp(client, headers, sink)
    first, emails = await make_audience(client, headers, 3)
    second = (await (await client.post("/v1/lists", json={"name": "Offers"}, headers=headers)).json())["id"]
    both = await client.post(
        f"/v1/lists/{second}/subscribers", json={"subscribers": [{"email": emails[0]}]}, headers=headers
    )
    assert both.status == 200
    template_id = await make_template(client, headers)
    campaign_id = await make_campaign(
        client, headers, first, template_id, audience={"lists": [first, second]}
    )
    await drive(runner(client), client, headers, campaign_id)
    assert sorted(recipients(sink)) == sorted(emails)  # p0 is on both lists and gets one message
    [mail] = [parsed(d) for d in sink.deliveries if d.rcpt_tos == [emails[0]]]
    url = mail["List-Unsubscribe"].split("<https://mailers.test", 1)[1].split(">", 1)[0]
    posted = await client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert posted.status == 200, await posted.text()
    found = await client.get(f"/v1/lists/{first}/subscribers", params={"email": emails[0]}, headers=headers)
    sub_id = (await found.json())["data"][0]["id"]
    person = await (await client.get(f"/v1/subscribers/{sub_id}", headers=headers)).json()
    assert {m["list"]: m["status"] for m in person["lists"]} == {
        first: "unsubscribed",
        second: "unsubscribed",
    }
    listed = await (await client.get("/v1/suppressions", params={"email": emails[0]}, headers=headers)).json()
    assert {(s["scope"], s.get("scope_value")) for s in listed["data"]} == {("list", first), ("list", second)}
