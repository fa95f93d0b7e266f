"""Runs end to end on real Redis, Ray (the app's dispatchers), DuckDB and an aiosmtpd sink; the runner body
is driven on an injected clock (`run_until_idle`), so waits pass without sleeping."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime

from actors.event_sink.body import EventSinkLoop
from ingress.context import SERVICES
from schemas.segments import SegmentQuery
from store import keyspace
from store.automation_runs import RunStore
from tests.audience.test_subscribers_api import new_list, upsert
from tests.automations.conftest import Clock, new_automation, new_template, runs_of, trigger
from tests.pipeline.conftest import dispatch_idle, wait_for
from tests.tracking.helpers import HUMAN

FROM = "Acme <hi@acme.com>"


def send(template_id: str, step_id: str, **extra) -> dict:
    return {"id": step_id, "type": "send", "template": {"id": template_id}, "from": FROM, **extra}


def html_of(delivery) -> str:
    return delivery.parsed().get_body(("html",)).get_content()


async def test_onboarding_welcome_wait_branch_on_a_real_open(
    client, admin, redis, workspace, sink, smtp_server, runner_for, store
):
    welcome = await new_template(client, admin, html="<p>Welcome {{ name }}</p>", subject="Welcome")
    tips = await new_template(client, admin, html="<p>Tips</p>", subject="Tips")
    nudge = await new_template(client, admin, html="<p>Still there?</p>", subject="Nudge")
    automation = await new_automation(
        client,
        admin,
        trigger={"type": "event", "event": "list.subscribed"},
        steps=[
            send(welcome["id"], "welcome"),
            {"id": "pause", "type": "wait", "seconds": 172800},
            {
                "id": "check",
                "type": "branch",
                "condition": {"event": "message.opened", "within_days": 2},
                "then": "tips",
                "else": "nudge",
            },
            send(tips["id"], "tips", next="done"),
            send(nudge["id"], "nudge"),
            {"id": "done", "type": "exit"},
        ],
    )
    clock = Clock(time.time())
    client.app[SERVICES].clock = clock  # the triggers' time is the runner's
    runner = runner_for(clock)
    await runner.consume_events()  # the consumer group starts here: what is subscribed from now on
    lst = await new_list(client, admin)
    await upsert(
        client, admin, lst["id"], [{"email": "ana@example.com", "name": "Ana"}, {"email": "bo@example.com"}]
    )
    await runner.run_until_idle()
    await wait_for(lambda: len(sink.deliveries) == 2)
    by_rcpt = {d.rcpt_tos[0]: d for d in sink.deliveries}
    assert by_rcpt["ana@example.com"].parsed()["Subject"] == "Welcome"
    assert "Welcome Ana" in html_of(by_rcpt["ana@example.com"])
    # RFC 8058: the one-click POST header comes with an https base URL; the test app's is http.
    assert "/t/u/" in by_rcpt["ana@example.com"].parsed()["List-Unsubscribe"]
    runs = {r["subscriber"]: r for r in await runs_of(client, admin, automation["id"])}
    assert {r["status"] for r in runs.values()} == {"waiting"}
    assert all(r["step"] == "pause" and r["wake_at"] for r in runs.values())
    sent = next(iter(runs.values()))["history"][0]
    message = await (await client.get(f"/v1/messages/{sent['message_id']}", headers=admin)).json()
    assert message["metadata"]["automation_id"] == automation["id"]
    assert message["metadata"]["run_id"] == next(iter(runs.values()))["id"]

    pixel = re.search(r'src="https?://[^"/]+(/t/o/[^"]+)"', html_of(by_rcpt["ana@example.com"]))
    assert pixel, html_of(by_rcpt["ana@example.com"])
    assert (await client.get(pixel.group(1), headers={"User-Agent": HUMAN})).status == 200
    analytics = EventSinkLoop(redis, store, consumer="test", max_latency=0)
    opened = SegmentQuery(filter={"event": "message.opened", "within_days": 2})

    async def open_stored() -> bool:  # the open reaches the analytics store the branch reads
        await analytics.run_until_idle()
        return await store.segment_count(workspace, opened) == 1

    await wait_for(open_stored)

    # Exactly the wait: the runs are due, and the branch's two-day window starts at the runner's time of
    # the welcome, before the real open (one second more and a quick open would fall outside it).
    clock.advance(172800)
    await runner.run_until_idle()
    await wait_for(lambda: len(sink.deliveries) == 4)
    later = sorted((d.rcpt_tos[0], d.parsed()["Subject"]) for d in sink.deliveries[2:])
    assert later == [("ana@example.com", "Tips"), ("bo@example.com", "Nudge")]
    ended = {r["subscriber"]: r for r in await runs_of(client, admin, automation["id"])}
    paths = sorted([h["step"] for h in r["history"]] for r in ended.values())
    assert paths == [
        ["welcome", "pause", "check", "nudge", "done"],
        ["welcome", "pause", "check", "tips", "done"],
    ]
    assert {(r["status"], r["reason"]) for r in ended.values()} == {("exited", "exit step")}
    await wait_for(lambda: dispatch_idle(redis))
    assert len(sink.deliveries) == 4


async def test_a_thousand_triggers_with_fifty_concurrent_duplicates_make_a_thousand_runs(
    client, admin, redis, workspace
):
    lst = await new_list(client, admin)
    emails = [f"p{i}@example.com" for i in range(1000)]
    await upsert(client, admin, lst["id"], [{"email": e} for e in emails])
    automation = await new_automation(
        client,
        admin,
        reentry="always",
        trigger={"type": "api"},
        steps=[{"id": "w", "type": "wait", "seconds": 3600}],
    )
    first = [trigger(client, admin, automation["id"], emails[0], key="k-0") for _ in range(50)]
    answers = await asyncio.gather(*first)
    assert {a.status for a in answers} <= {202, 409}
    runs = {(await a.json())["run"] for a in answers if a.status == 202}
    assert len(runs) == 1, "every answer for one key names the same run"
    for start in range(1, 1000, 50):
        batch = [
            trigger(client, admin, automation["id"], emails[i], key=f"k-{i}")
            for i in range(start, min(start + 50, 1000))
        ]
        assert {a.status for a in await asyncio.gather(*batch)} == {202}
    replay = await trigger(client, admin, automation["id"], emails[0], key="k-0")
    assert replay.status == 202 and replay.headers["Idempotent-Replayed"] == "true"
    assert await redis.hlen(keyspace.automation_runs(workspace, automation["id"])) == 1000
    assert len(await runs_of(client, admin, automation["id"])) == 1000


async def test_a_custom_event_triggers_only_the_subscribers_the_filter_matches(
    client, admin, redis, runner_for, store
):
    automation = await new_automation(
        client,
        admin,
        reentry="always",
        trigger={
            "type": "event",
            "event": "order.completed",
            "filter": {"attribute": "plan", "op": "eq", "value": "pro"},
        },
        steps=[{"id": "mark", "type": "update", "attributes": {"ordered": True}}],
    )
    runner = runner_for(Clock(time.time()))
    await runner.consume_events()
    lst = await new_list(client, admin)
    await upsert(
        client,
        admin,
        lst["id"],
        [
            {"email": "ana@example.com", "attributes": {"plan": "pro"}},
            {"email": "bo@example.com", "attributes": {"plan": "free"}},
        ],
    )
    await EventSinkLoop(
        redis, store, consumer="test", max_latency=0
    ).run_until_idle()  # the mirror the filter reads
    for email in ("ana@example.com", "bo@example.com", "nobody@example.com"):
        body = {"name": "order.completed", "email": email, "properties": {"total": 12}}
        assert (await client.post("/v1/events", json=body, headers=admin)).status == 202
    await runner.run_until_idle()
    runs = await runs_of(client, admin, automation["id"])
    assert [r["status"] for r in runs] == ["completed"]
    page = await (await client.get(f"/v1/lists/{lst['id']}/subscribers", headers=admin)).json()
    ordered = {s["email"]: s["attributes"].get("ordered") for s in page["data"]}
    assert ordered == {"ana@example.com": True, "bo@example.com": None}
    assert runs[0]["subscriber"] == next(s["id"] for s in page["data"] if s["email"] == "ana@example.com")


def _utc_ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)


async def test_a_schedule_fires_at_nine_in_berlin_on_both_sides_of_dst(
    client, admin, redis, workspace, runner_for
):
    clock = Clock(_utc_ms(2026, 3, 28, 12) / 1000)
    client.app[SERVICES].clock = clock
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}])
    automation = await new_automation(
        client,
        admin,
        reentry="always",
        trigger={
            "type": "schedule",
            "cron": "0 9 * * *",
            "timezone": "Europe/Berlin",
            "audience": {"lists": [lst["id"]]},
        },
        steps=[{"id": "w", "type": "wait", "seconds": 60}],
    )
    member = f"{workspace}|{automation['id']}"
    # Summer time began on 2026-03-29 at 02:00 local: 09:00 CEST is 07:00 UTC.
    assert await redis.zscore(keyspace.AUTOMATION_SCHEDULES, member) == _utc_ms(2026, 3, 29, 7)
    runner = runner_for(clock)
    clock.now = _utc_ms(2026, 3, 29, 6, 59) / 1000
    await runner.run_until_idle()
    assert await runs_of(client, admin, automation["id"]) == []
    clock.now = _utc_ms(2026, 3, 29, 7) / 1000
    await runner.run_until_idle()
    assert len(await runs_of(client, admin, automation["id"])) == 1
    assert await redis.zscore(keyspace.AUTOMATION_SCHEDULES, member) == _utc_ms(2026, 3, 30, 7)
    # Winter time again from 2026-10-25 03:00 local: 09:00 CET is 08:00 UTC. Missed days are not replayed.
    clock.now = _utc_ms(2026, 10, 24, 12) / 1000
    await runner.run_until_idle()
    assert len(await runs_of(client, admin, automation["id"])) == 2
    assert await redis.zscore(keyspace.AUTOMATION_SCHEDULES, member) == _utc_ms(2026, 10, 25, 8)
    clock.now = _utc_ms(2026, 10, 25, 7, 59) / 1000
    await runner.run_until_idle()
    assert len(await runs_of(client, admin, automation["id"])) == 2
    clock.now = _utc_ms(2026, 10, 25, 8) / 1000
    await runner.run_until_idle()
    assert len(await runs_of(client, admin, automation["id"])) == 3


async def test_running_runs_finish_on_their_version(client, admin, runner_for):
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}, {"email": "bo@example.com"}])
    automation = await new_automation(
        client,
        admin,
        reentry="always",
        trigger={"type": "api"},
        steps=[
            {"id": "w", "type": "wait", "seconds": 60},
            {"id": "v1", "type": "update", "attributes": {"seen": 1}},
        ],
    )
    clock = Clock(time.time())
    client.app[SERVICES].clock = clock  # the triggers' time is the runner's
    runner = runner_for(clock)
    old = (await (await trigger(client, admin, automation["id"], "ana@example.com")).json())["run"]
    await runner.run_until_idle()
    steps = [
        {"id": "w", "type": "wait", "seconds": 60},
        {"id": "v2", "type": "update", "attributes": {"seen": 2}},
    ]
    edited = await client.patch(f"/v1/automations/{automation['id']}", json={"steps": steps}, headers=admin)
    assert (await edited.json())["version"] == 2
    new = (await (await trigger(client, admin, automation["id"], "bo@example.com")).json())["run"]
    await runner.run_until_idle()
    clock.advance(61)
    await runner.run_until_idle()
    runs = {r["id"]: r for r in await runs_of(client, admin, automation["id"])}
    assert (runs[old]["version"], [h["step"] for h in runs[old]["history"]]) == (1, ["w", "v1"]), [
        (r["version"], r["status"], r["reason"], r["history"]) for r in runs.values()
    ]
    assert (runs[new]["version"], [h["step"] for h in runs[new]["history"]]) == (2, ["w", "v2"])
    assert {r["status"] for r in runs.values()} == {"completed"}


async def test_a_webhook_step_to_a_private_address_fails_the_run_with_the_reason(client, admin, runner_for):
    from tests.webhooks.conftest import FixedDns

    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}])
    automation = await new_automation(
        client,
        admin,
        trigger={"type": "api"},
        steps=[
            {"id": "call", "type": "webhook", "url": "https://hooks.example.com/x"},
            {"id": "after", "type": "exit"},
        ],
    )
    from actors.webhooks.sender import WebhookSender

    sender = WebhookSender(timeout=5, allow_private=False, allow_http=False, resolver=FixedDns("10.1.2.3"))
    client.app[SERVICES].clock = clock = Clock(time.time())
    runner = runner_for(clock, webhooks=sender)
    run = (await (await trigger(client, admin, automation["id"], "ana@example.com")).json())["run"]
    await runner.run_until_idle()
    await sender.close()
    view = await (await client.get(f"/v1/automations/{automation['id']}/runs/{run}", headers=admin)).json()
    assert view["status"] == "failed"
    assert "webhook_url_private_address" in view["reason"], view
    assert [h["step"] for h in view["history"]] == ["call"]


async def test_a_runner_that_dies_after_sending_sends_nothing_twice(
    client, admin, redis, workspace, sink, smtp_server, runner_for
):
    welcome = await new_template(client, admin, html="<p>Welcome</p>", subject="Welcome")
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": f"p{i}@example.com"} for i in range(20)])
    automation = await new_automation(
        client,
        admin,
        trigger={"type": "api"},
        steps=[send(welcome["id"], "welcome"), {"id": "w", "type": "wait", "seconds": 60}],
    )
    clock = Clock(time.time())
    client.app[SERVICES].clock = clock
    for i in range(20):
        assert (await trigger(client, admin, automation["id"], f"p{i}@example.com")).status == 202
    dying = runner_for(clock)
    claimed = (
        await RunStore(redis).claim_batch(
            workspace, automation["id"], now_ms=int(clock() * 1000), lease_ms=60_000, limit=500
        )
    ).runs
    head = await dying.automations.get(workspace, automation["id"])
    definition = await dying.definition(workspace, automation["id"], 1)
    subscribers = {
        s.id: s for s in await dying.subscribers.many(workspace, [c.record.subscriber for c in claimed])
    }
    sends = [(c, definition, definition.steps[0], subscribers[c.record.subscriber]) for c in claimed]
    await dying.do_sends(workspace, head, sends, int(clock() * 1000))  # enqueued, then the runner "dies"
    await wait_for(lambda: len(sink.deliveries) == 20)
    # A runner that is not a restart (it takes over nothing) leaves the claimed runs to their lease.
    await runner_for(clock, release_on_start=False).run_until_idle()
    assert all(r["status"] == "running" for r in await runs_of(client, admin, automation["id"])), "leased"
    clock.advance(1)
    # The restarted runner takes the dead one's runs at once (no lease's wait) and redoes the send step.
    await runner_for(clock).run_until_idle()
    runs = await runs_of(client, admin, automation["id"])
    assert {r["status"] for r in runs} == {"waiting"}
    assert all([h["outcome"] for h in r["history"]] == ["sent", "waiting"] for r in runs)
    await wait_for(lambda: dispatch_idle(redis))
    assert sorted(d.rcpt_tos[0] for d in sink.deliveries) == sorted(f"p{i}@example.com" for i in range(20))


async def test_a_cancelled_run_does_no_further_step(client, admin, runner_for):
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}])
    automation = await new_automation(
        client,
        admin,
        trigger={"type": "api"},
        steps=[
            {"id": "w", "type": "wait", "seconds": 60},
            {"id": "u", "type": "update", "attributes": {"x": 1}},
        ],
    )
    clock = Clock(time.time())
    client.app[SERVICES].clock = clock  # the triggers' time is the runner's
    runner = runner_for(clock)
    run = (await (await trigger(client, admin, automation["id"], "ana@example.com")).json())["run"]
    await runner.run_until_idle()
    path = f"/v1/automations/{automation['id']}/runs/{run}"
    cancelled = await (await client.post(f"{path}/cancel", headers=admin)).json()
    assert (cancelled["status"], cancelled["reason"]) == ("exited", "cancelled")
    clock.advance(61)
    await runner.run_until_idle()
    view = await (await client.get(path, headers=admin)).json()
    assert [h["step"] for h in view["history"]] == ["w"] and view["status"] == "exited"
    assert [r["id"] for r in await runs_of(client, admin, automation["id"], status="exited")] == [run]
    assert await runs_of(client, admin, automation["id"], status="waiting") == []
    assert (await client.post(f"{path}/cancel", headers=admin)).status == 409


async def test_a_subscriber_entering_a_segment_starts_one_run(client, admin, redis, runner_for, store):
    lst = await new_list(client, admin)
    await upsert(
        client,
        admin,
        lst["id"],
        [
            {"email": "ana@example.com", "attributes": {"plan": "pro"}},
            {"email": "bo@example.com", "attributes": {"plan": "free"}},
        ],
    )
    body = {"name": "Pro", "lists": [lst["id"]], "filter": {"attribute": "plan", "op": "eq", "value": "pro"}}
    segment = await (await client.post("/v1/segments", json=body, headers=admin)).json()
    automation = await new_automation(
        client,
        admin,
        reentry="always",
        trigger={"type": "segment_entry", "segment": segment["id"]},
        steps=[{"id": "w", "type": "wait", "seconds": 3600}],
    )
    sink = EventSinkLoop(redis, store, consumer="test", max_latency=0)
    await sink.run_until_idle()
    runner = runner_for(Clock(time.time()))
    await runner.run_until_idle()
    runs = await runs_of(client, admin, automation["id"])
    page = await (await client.get(f"/v1/lists/{lst['id']}/subscribers", headers=admin)).json()
    ids = {s["email"]: s["id"] for s in page["data"]}
    assert [r["subscriber"] for r in runs] == [ids["ana@example.com"]]
    patched = await client.patch(
        f"/v1/subscribers/{ids['bo@example.com']}", json={"attributes": {"plan": "pro"}}, headers=admin
    )
    assert patched.status == 200
    await sink.run_until_idle()
    await runner.run_until_idle()
    runs = await runs_of(client, admin, automation["id"])
    assert sorted(r["subscriber"] for r in runs) == sorted(ids.values()), (
        "bo entered; ana did not enter twice"
    )


async def test_runs_are_listed_newest_first_with_a_stable_cursor_and_a_status_filter(
    client, admin, runner_for
):
    lst = await new_list(client, admin)
    emails = [f"n{i}@example.com" for i in range(25)]
    await upsert(client, admin, lst["id"], [{"email": e} for e in emails])
    automation = await new_automation(
        client,
        admin,
        reentry="always",
        trigger={"type": "api"},
        steps=[{"id": "w", "type": "wait", "seconds": 60}, {"id": "x", "type": "exit"}],
    )
    clock = Clock(time.time())
    client.app[SERVICES].clock = clock
    started = []
    for email in emails[:20]:
        started.append((await (await trigger(client, admin, automation["id"], email)).json())["run"])
        clock.advance(0.01)
    runner = runner_for(clock)
    await runner.run_until_idle()  # all 20 waiting
    path = f"/v1/automations/{automation['id']}/runs"
    first = await client.get(path, params={"limit": "7"}, headers=admin)
    page = await first.json()
    assert [r["id"] for r in page["data"]] == started[::-1][:7] and page["has_more"]
    assert 'rel="next"' in first.headers["Link"]
    for email in emails[20:]:  # runs added while paging do not move the pages already begun
        started.append((await (await trigger(client, admin, automation["id"], email)).json())["run"])
    seen = [r["id"] for r in page["data"]]
    cursor = page["next_cursor"]
    while cursor:
        page = await (await client.get(path, params={"limit": "7", "cursor": cursor}, headers=admin)).json()
        assert len(page["data"]) <= 7
        seen += [r["id"] for r in page["data"]]
        cursor = page["next_cursor"]
    assert seen == started[:20][::-1]
    assert [r["id"] for r in await runs_of(client, admin, automation["id"])] == started[::-1]
    # The filter: the five new runs are running (not stepped yet), the first twenty waiting.
    running = await runs_of(client, admin, automation["id"], status="running")
    assert [r["id"] for r in running] == started[20:][::-1]
    waiting = await (await client.get(path, params={"status": "waiting", "limit": "3"}, headers=admin)).json()
    assert [r["id"] for r in waiting["data"]] == started[:20][::-1][:3]
    assert all(r["status"] == "waiting" and r["wake_at"] for r in waiting["data"])
    other = await client.get(
        path, params={"status": "running", "cursor": waiting["next_cursor"]}, headers=admin
    )
    assert other.status == 400 and (await other.json())["code"] == "invalid_cursor"
    one = await (await client.get(f"{path}/{started[0]}", headers=admin)).json()
    assert [(h["step"], h["outcome"]) for h in one["history"]] == [("w", "waiting")]
    assert one["step"] == "w" and one["status"] == "waiting"


async def _wait_then_update(client, admin, runner_for):
    """An API-triggered automation that waits 60 s then sets `done`, with an injected clock and its runner."""
    automation = await new_automation(
        client,
        admin,
        trigger={"type": "api"},
        steps=[
            {"id": "w", "type": "wait", "seconds": 60},
            {"id": "u", "type": "update", "attributes": {"done": True}},
        ],
    )
    clock = Clock(time.time())
    client.app[SERVICES].clock = clock
    return automation, clock, runner_for(clock)


async def test_pausing_holds_started_runs_where_they_are_and_activating_resumes_them(
    client, admin, redis, workspace, runner_for
):
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}, {"email": "bo@example.com"}])
    automation, clock, runner = await _wait_then_update(client, admin, runner_for)
    base = f"/v1/automations/{automation['id']}"
    waiting = (await (await trigger(client, admin, automation["id"], "ana@example.com")).json())["run"]
    await runner.run_until_idle()
    fresh = (await (await trigger(client, admin, automation["id"], "bo@example.com")).json())["run"]
    paused = await client.post(f"{base}/pause", headers=admin)
    assert paused.status == 200 and (await paused.json())["status"] == "paused"
    clock.advance(3600)  # ana's wait is long over; bo's first step was due before the pause
    await runner.run_until_idle()
    runs = {r["id"]: r for r in await runs_of(client, admin, automation["id"])}
    assert (runs[waiting]["status"], len(runs[waiting]["history"])) == ("waiting", 1), "held at its wait"
    assert (runs[fresh]["status"], runs[fresh]["history"]) == ("running", []), "held before its first step"
    people = await (await client.get(f"/v1/lists/{lst['id']}/subscribers", headers=admin)).json()
    assert all("done" not in p.get("attributes", {}) for p in people["data"]), "no step was done"
    refused = await trigger(client, admin, automation["id"], "ana@example.com")
    assert refused.status == 409  # and it starts no new run
    assert (await client.post(f"{base}/activate", headers=admin)).status == 200
    await runner.run_until_idle()
    runs = {r["id"]: r for r in await runs_of(client, admin, automation["id"])}
    assert runs[waiting]["status"] == "completed", runs[waiting]
    assert [h["step"] for h in runs[waiting]["history"]] == ["w", "u"]
    assert runs[fresh]["status"] == "waiting", "bo went on from where he was held"
    clock.advance(61)
    await runner.run_until_idle()
    assert {r["status"] for r in await runs_of(client, admin, automation["id"])} == {"completed"}
    people = await (await client.get(f"/v1/lists/{lst['id']}/subscribers", headers=admin)).json()
    assert all(p["attributes"].get("done") is True for p in people["data"])


async def test_deleting_an_automation_stops_its_live_runs(client, admin, redis, workspace, runner_for):
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}])
    automation, clock, runner = await _wait_then_update(client, admin, runner_for)
    assert (await trigger(client, admin, automation["id"], "ana@example.com")).status == 202
    await runner.run_until_idle()
    assert (await client.delete(f"/v1/automations/{automation['id']}", headers=admin)).status == 200
    clock.advance(61)
    await runner.run_until_idle()
    people = await (await client.get(f"/v1/lists/{lst['id']}/subscribers", headers=admin)).json()
    assert "done" not in people["data"][0].get("attributes", {})
    assert not await redis.exists(
        keyspace.automation_runs(workspace, automation["id"]),
        keyspace.automation_due(workspace, automation["id"]),
        keyspace.automation_run_order(workspace, automation["id"]),
    )
    assert (await client.get(f"/v1/automations/{automation['id']}/runs", headers=admin)).status == 404


async def test_reentry_never_always_and_after_exit(client, admin, runner_for):
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}])
    clock = Clock(time.time())
    client.app[SERVICES].clock = clock
    runner = runner_for(clock)
    steps = [{"id": "w", "type": "wait", "seconds": 60}, {"id": "x", "type": "exit"}]
    made = {
        rule: await new_automation(client, admin, reentry=rule, trigger={"type": "api"}, steps=steps)
        for rule in ("never", "always", "after_exit")
    }

    async def enter(rule: str) -> int:
        return (await trigger(client, admin, made[rule]["id"], "ana@example.com")).status

    assert [await enter(rule) for rule in made] == [202, 202, 202]
    await runner.run_until_idle()  # each run waits
    assert [await enter(rule) for rule in made] == [409, 202, 409], "after_exit: ana is in a live run"
    clock.advance(61)
    await runner.run_until_idle()  # the runs exit
    assert [await enter(rule) for rule in made] == [409, 202, 202], "never: not even after the first ended"
    counts = {rule: len(await runs_of(client, admin, made[rule]["id"])) for rule in made}
    assert counts == {"never": 1, "always": 3, "after_exit": 2}


async def test_a_blocklisted_subscriber_is_skipped_an_unsubscribed_one_exits_and_the_stream_says_so(
    client, admin, redis, workspace, sink, smtp_server, runner_for
):
    letter = await new_template(client, admin, html="<p>Later</p>", subject="Later")
    automation = await new_automation(
        client,
        admin,
        trigger={"type": "event", "event": "list.subscribed"},
        steps=[{"id": "w", "type": "wait", "seconds": 60}, send(letter["id"], "letter")],
    )
    clock = Clock(time.time())
    client.app[SERVICES].clock = clock
    runner = runner_for(clock)
    await runner.consume_events()  # the consumer group starts here
    lst = await new_list(client, admin)
    emails = ["ana@example.com", "bo@example.com", "cy@example.com"]
    await upsert(client, admin, lst["id"], [{"email": e} for e in emails])
    await runner.run_until_idle()
    page = await (await client.get(f"/v1/lists/{lst['id']}/subscribers", headers=admin)).json()
    ids = {s["email"]: s["id"] for s in page["data"]}
    blocked = await client.patch(
        f"/v1/subscribers/{ids['ana@example.com']}", json={"status": "blocklisted"}, headers=admin
    )
    assert blocked.status == 200, await blocked.text()
    gone = await client.delete(
        f"/v1/lists/{lst['id']}/subscribers/{ids['bo@example.com']}?mode=unsubscribe", headers=admin
    )
    assert gone.status in (200, 204), await gone.text()
    clock.advance(61)
    await runner.run_until_idle()
    runs = {r["subscriber"]: r for r in await runs_of(client, admin, automation["id"])}
    ana, bo, cy = (runs[ids[e]] for e in emails)
    assert (ana["status"], [h["outcome"] for h in ana["history"]]) == ("completed", ["waiting", "skipped"])
    assert (bo["status"], bo["reason"], [h["outcome"] for h in bo["history"]]) == (
        "exited",
        "unsubscribed",
        ["waiting", "exited"],
    )
    assert (cy["status"], [h["outcome"] for h in cy["history"]]) == ("completed", ["waiting", "sent"])
    await wait_for(lambda: dispatch_idle(redis))
    assert [d.rcpt_tos[0] for d in sink.deliveries] == ["cy@example.com"]
    # The stream carries each run's triggered, step and ended events (what webhooks and analytics see).
    from store.event_entries import entry_events

    seen: dict[str, list[tuple[str, str | None]]] = {}
    for _, fields in await redis.xrange(keyspace.EVENT_STREAM):
        for event in entry_events(fields):  # new subscribers' events arrive as one chunk
            if event.type.startswith("automation.") and event.data.get("automation_id") == automation["id"]:
                seen.setdefault(event.data["run_id"], []).append((event.type, event.data.get("outcome")))
    assert seen[ana["id"]] == [
        ("automation.triggered", None),
        ("automation.step_completed", "waiting"),
        ("automation.run_ended", "skipped"),
    ]
    assert seen[bo["id"]][-1] == ("automation.run_ended", "exited")
    assert seen[cy["id"]][-1] == ("automation.run_ended", "sent")
    assert len(seen) == 3


async def test_concurrent_triggers_batched_together_each_get_their_own_answer(
    client, admin, redis, workspace
):
    lst = await new_list(client, admin)
    emails = [f"q{i}@example.com" for i in range(30)]
    await upsert(client, admin, lst["id"], [{"email": e} for e in emails])
    page = await (await client.get(f"/v1/lists/{lst['id']}/subscribers?limit=100", headers=admin)).json()
    blocked = next(s["id"] for s in page["data"] if s["email"] == "q29@example.com")
    patched = await client.patch(f"/v1/subscribers/{blocked}", json={"status": "blocklisted"}, headers=admin)
    assert patched.status == 200
    wait = [{"id": "w", "type": "wait", "seconds": 3600}]
    once = await new_automation(client, admin, reentry="never", trigger={"type": "api"}, steps=wait)
    always = await new_automation(client, admin, reentry="always", trigger={"type": "api"}, steps=wait)
    paused = await new_automation(client, admin, status="paused", trigger={"type": "api"}, steps=wait)
    calls = (
        [(once["id"], e) for e in emails[:20]]  # 202 each
        + [(once["id"], emails[0])] * 3  # the same subscriber again: 409 (reentry never), whoever wins
        + [(always["id"], e) for e in emails[:10]]  # 202 each
        + [(always["id"], "nobody@example.com"), (always["id"], "not-an-address")]  # 422, 422
        + [(always["id"], "q29@example.com")]  # 422 blocklisted
        + [(paused["id"], emails[0]), ("aut_" + "0" * 26, emails[0])]  # 409 paused, 404
    )
    answers = await asyncio.gather(*(trigger(client, admin, a, e) for a, e in calls))
    statuses = [a.status for a in answers]
    bodies = [await a.json() for a in answers]
    assert statuses[:20] == [202] * 20 and len({b["run"] for b in bodies[:20]}) == 20
    assert sorted(statuses[:23][i] for i in (0, 20, 21, 22)) == [202, 409, 409, 409]
    assert statuses[23:33] == [202] * 10
    codes = [(b.get("errors") or [{}])[0].get("code") for b in bodies[33:36]]
    assert statuses[33:36] == [422] * 3 and codes == [
        "unknown_subscriber",
        "invalid_email",
        "subscriber_blocklisted",
    ]
    assert statuses[36:] == [409, 404]
    assert await redis.hlen(keyspace.automation_runs(workspace, once["id"])) == 20
    assert await redis.hlen(keyspace.automation_runs(workspace, always["id"])) == 10
    assert not await redis.exists(keyspace.automation_runs(workspace, paused["id"]))


async def test_a_webhook_step_posts_the_run_signed_with_the_automations_secret(client, admin, runner_for):
    import msgspec
    from standardwebhooks.webhooks import Webhook

    from tests.webhooks.receiver import Receiver

    receiver = await Receiver(answer=lambda _id, attempt: 500 if attempt == 1 else 200).start()
    try:
        services = client.app[SERVICES]
        services.settings = msgspec.structs.replace(
            services.settings, allow_private_webhooks=True, allow_http_webhooks=True
        )
        lst = await new_list(client, admin)
        await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}])
        automation = await new_automation(
            client,
            admin,
            trigger={"type": "api"},
            steps=[{"id": "call", "type": "webhook", "url": receiver.url()}, {"id": "done", "type": "exit"}],
        )
        clock = Clock(time.time())
        services.clock = clock
        runner = runner_for(clock, settings={"allow_private_webhooks": True, "allow_http_webhooks": True})
        answer = await trigger(client, admin, automation["id"], "ana@example.com", data={"plan": "pro"})
        run = (await answer.json())["run"]
        await runner.run_until_idle()  # the first attempt answers 500: retried in 30 s
        path = f"/v1/automations/{automation['id']}/runs/{run}"
        view = await (await client.get(path, headers=admin)).json()
        assert (view["status"], [h["outcome"] for h in view["history"]]) == ("running", ["retry"])
        clock.advance(31)
        await runner.run_until_idle()
        await runner.webhooks.close()
        view = await (await client.get(path, headers=admin)).json()
        assert (view["status"], [h["outcome"] for h in view["history"]]) == (
            "exited",
            ["retry", "delivered", "exited"],
        )
        assert len(receiver.received) == 2
        first, second = receiver.received
        assert first.headers["webhook-id"] == second.headers["webhook-id"], "a retry carries the same id"
        Webhook(automation["webhook_secret"]).verify(second.body, second.headers)
        sent = msgspec.json.decode(second.body)
        assert sent["type"] == "automation.webhook"
        assert (sent["data"]["run_id"], sent["data"]["step"], sent["data"]["data"]) == (
            run,
            "call",
            {"plan": "pro"},
        )
        assert sent["data"]["subscriber"]["email"] == "ana@example.com"
    finally:
        await receiver.stop()


async def test_a_message_event_and_subscriber_created_start_runs_for_their_subscriber(
    client, admin, sink, smtp_server, runner_for
):
    from tests.pipeline.conftest import send_and_settle

    update = [{"id": "u", "type": "update", "attributes": {"seen": True}}]
    created = await new_automation(
        client, admin, trigger={"type": "event", "event": "subscriber.created"}, steps=update
    )
    on_sent = await new_automation(
        client, admin, trigger={"type": "event", "event": "message.sent"}, steps=update
    )
    clock = Clock(time.time())
    client.app[SERVICES].clock = clock
    runner = runner_for(clock)
    await runner.consume_events()  # the consumer group starts here
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}, {"email": "bo@example.com"}])
    await runner.run_until_idle()
    page = await (await client.get(f"/v1/lists/{lst['id']}/subscribers", headers=admin)).json()
    ids = {s["email"]: s["id"] for s in page["data"]}
    made = await runs_of(client, admin, created["id"])
    assert sorted(r["subscriber"] for r in made) == sorted(ids.values())
    assert {r["status"] for r in made} == {"completed"}
    assert await runs_of(client, admin, on_sent["id"]) == []
    body = {"from": FROM, "to": "bo@example.com", "subject": "Hi", "text": "Hi"}
    assert await send_and_settle(client, admin, body) == "sent"  # SMTP: accepted is as far as it goes

    async def started() -> bool:
        await runner.run_until_idle()
        return len(await runs_of(client, admin, on_sent["id"])) == 1

    await wait_for(started)
    [run] = await runs_of(client, admin, on_sent["id"])
    assert (run["subscriber"], run["status"]) == (ids["bo@example.com"], "completed")
