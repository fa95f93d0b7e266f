"""`/v1/automations` over HTTP: create, read, version, pause, delete, and every kind of bad definition
answered 422 with a pointer (nothing written)."""

from __future__ import annotations

import pytest

from store import keyspace
from tests.audience.test_subscribers_api import new_list, upsert
from tests.automations.conftest import new_automation, new_template, trigger

API = {"type": "api"}


def send(template_id: str, step_id: str = "hello", **extra) -> dict:
    return {
        "id": step_id,
        "type": "send",
        "template": {"id": template_id},
        "from": "Acme <hi@acme.com>",
        **extra,
    }


async def blocklist(client, headers, list_id: str, email: str) -> None:
    page = await (await client.get(f"/v1/lists/{list_id}/subscribers?email={email}", headers=headers)).json()
    path = f"/v1/subscribers/{page['data'][0]['id']}"
    response = await client.patch(path, json={"status": "blocklisted"}, headers=headers)
    assert response.status == 200, await response.text()


async def refused(client, headers, body: dict) -> dict:
    response = await client.post("/v1/automations", json={"name": "A", **body}, headers=headers)
    assert response.status == 422, await response.text()
    return await response.json()


async def test_create_pins_the_template_version_and_reads_back(client, admin):
    template = await new_template(client, admin)
    created = await new_automation(
        client,
        admin,
        trigger={
            "type": "event",
            "event": "list.subscribed",
            "filter": {"attribute": "plan", "op": "eq", "value": "pro"},
        },
        steps=[
            send(template["id"]),
            {"id": "pause", "type": "wait", "seconds": 172800},
            {"id": "done", "type": "exit"},
        ],
    )
    assert created["id"].startswith("aut_") and created["version"] == 1 and created["status"] == "active"
    assert created["steps"][0]["template"] == {"id": template["id"], "version": 1}
    assert created["webhook_secret"].startswith("whsec_")
    got = await (await client.get(f"/v1/automations/{created['id']}", headers=admin)).json()
    assert got == created
    listed = await (await client.get("/v1/automations", headers=admin)).json()
    assert [a["id"] for a in listed["data"]] == [created["id"]]


async def test_an_update_of_the_steps_is_a_new_version_and_a_rename_is_not(client, admin, redis, workspace):
    created = await new_automation(
        client, admin, trigger=API, steps=[{"id": "w", "type": "wait", "seconds": 60}]
    )
    path = f"/v1/automations/{created['id']}"
    renamed = await (await client.patch(path, json={"name": "B"}, headers=admin)).json()
    assert (renamed["name"], renamed["version"]) == ("B", 1)
    changed = await (
        await client.patch(path, json={"steps": [{"id": "w", "type": "wait", "seconds": 120}]}, headers=admin)
    ).json()
    assert changed["version"] == 2 and changed["steps"][0]["seconds"] == 120
    versions = await redis.hkeys(keyspace.automation_versions(workspace, created["id"]))
    assert sorted(versions) == [b"1", b"2"]
    paused = await (await client.post(f"{path}/pause", headers=admin)).json()
    assert paused["status"] == "paused" and paused["version"] == 2
    assert not await redis.sismember(keyspace.AUTOMATIONS_LIVE, f"{workspace}|{created['id']}")
    active = await (await client.post(f"{path}/activate", headers=admin)).json()
    assert active["status"] == "active"
    assert (await client.delete(path, headers=admin)).status == 200
    assert (await client.get(path, headers=admin)).status == 404
    assert not await redis.exists(keyspace.automation_versions(workspace, created["id"]))


WAIT = {"id": "w", "type": "wait", "seconds": 60}


@pytest.mark.parametrize(
    ("body", "pointer", "code"),
    [
        ({"trigger": {"type": "webhook"}, "steps": [WAIT]}, "#/trigger/type", None),
        ({"trigger": API, "steps": [{"id": "x", "type": "sms"}]}, "#/steps/0/type", None),
        (
            {"trigger": API, "steps": [{"id": "w", "type": "wait", "seconds": 0}]},
            "#/steps/0/seconds",
            "invalid_wait",
        ),
        (
            {"trigger": API, "steps": [{"id": "w", "type": "wait", "seconds": 10 * 365 * 86400}]},
            "#/steps/0/seconds",
            "invalid_wait",
        ),
        (
            {"trigger": API, "steps": [{"id": "w", "type": "wait", "until": "25:00"}]},
            "#/steps/0/until",
            "invalid_wait",
        ),
        ({"trigger": API, "steps": [{**WAIT, "next": "nowhere"}]}, "#/steps/0/next", "unknown_step"),
        (
            {"trigger": API, "steps": [{"id": "a", "type": "exit"}, {"id": "b", "type": "exit"}]},
            "#/steps/1",
            "unreachable_step",
        ),
        (
            {
                "trigger": API,
                "steps": [
                    {"id": "a", "type": "update", "attributes": {"n": 1}},
                    {
                        "id": "b",
                        "type": "branch",
                        "condition": {"attribute": "n", "op": "eq", "value": 1},
                        "then": "a",
                    },
                ],
            },
            "#/steps/0",
            "cycle_without_wait",
        ),
        (
            {
                "trigger": API,
                "steps": [{"id": "b", "type": "branch", "condition": {"attribute": "n", "op": "near"}}],
            },
            "#/steps/0/condition/op",
            "unknown_op",
        ),
        (
            {"trigger": {"type": "event", "event": "nonsense"}, "steps": [WAIT]},
            "#/trigger/event",
            "unknown_event_type",
        ),
        (
            {"trigger": API, "steps": [{"id": "h", "type": "webhook", "url": "https://10.0.0.7/hook"}]},
            "#/steps/0/url",
            "webhook_url_private_address",
        ),
        (
            {"trigger": API, "steps": [{"id": "h", "type": "webhook", "url": "https://169.254.169.254/x"}]},
            "#/steps/0/url",
            "webhook_url_private_address",
        ),
        (
            {
                "trigger": {
                    "type": "schedule",
                    "cron": "0 9 * * * *",
                    "timezone": "Europe/Berlin",
                    "audience": {},
                },
                "steps": [WAIT],
            },
            "#/trigger/cron",
            "invalid_schedule",
        ),
        (
            {
                "trigger": {
                    "type": "schedule",
                    "cron": "0 9 * * *",
                    "timezone": "Mars/Olympus",
                    "audience": {},
                },
                "steps": [WAIT],
            },
            "#/trigger/timezone",
            "invalid_schedule",
        ),
    ],
)
async def test_a_bad_definition_is_refused_with_a_pointer(
    client, admin, redis, workspace, body, pointer, code
):
    problem = await refused(client, admin, body)
    assert problem["code"] == "validation_error"
    assert any(e["pointer"] == pointer and (code is None or e["code"] == code) for e in problem["errors"]), (
        problem
    )
    assert not await redis.exists(keyspace.automation_index(workspace))


async def test_a_cycle_through_a_wait_is_allowed(client, admin):
    await new_automation(
        client,
        admin,
        trigger=API,
        steps=[
            {"id": "a", "type": "update", "attributes": {"n": 1}},
            {"id": "w", "type": "wait", "seconds": 3600, "next": "a"},
        ],
    )


async def test_a_send_whose_template_requires_what_the_trigger_cannot_supply_is_refused(client, admin):
    template = await new_template(
        client,
        admin,
        html="<p>{{ first_name }} {{ order_id }}</p>",
        variables={
            "first_name": {"type": "string", "required": True},
            "order_id": {"type": "string", "required": True},
        },
    )
    problem = await refused(client, admin, {"trigger": API, "steps": [send(template["id"])]})
    details = [(e["pointer"], e["code"]) for e in problem["errors"]]
    assert details == [("#/steps/0/template", "missing_variable")] * 2
    # A default in the step and the api trigger's declared data supply both.
    await new_automation(
        client,
        admin,
        trigger={"type": "api", "data": ["order_id"]},
        steps=[send(template["id"], variables={"first_name": "friend"})],
    )
    unknown = await refused(client, admin, {"trigger": API, "steps": [send("tpl_" + "0" * 26)]})
    assert unknown["errors"][0]["pointer"] == "#/steps/0/template/id"


async def test_a_trigger_for_an_unknown_or_blocklisted_subscriber_is_refused(client, admin, redis, workspace):
    automation = await new_automation(client, admin, trigger=API, steps=[WAIT])
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}, {"email": "bo@example.com"}])
    await blocklist(client, admin, lst["id"], "bo@example.com")
    unknown = await trigger(client, admin, automation["id"], "nobody@example.com")
    assert unknown.status == 422 and (await unknown.json())["errors"][0]["code"] == "unknown_subscriber"
    blocked = await trigger(client, admin, automation["id"], "bo@example.com")
    assert blocked.status == 422 and (await blocked.json())["errors"][0]["code"] == "subscriber_blocklisted"
    assert not await redis.exists(keyspace.automation_runs(workspace, automation["id"]))
    accepted = await trigger(client, admin, automation["id"], "Ana@Example.com")
    assert accepted.status == 202 and (await accepted.json())["run"].startswith("run_")
    again = await trigger(client, admin, automation["id"], "ana@example.com")
    assert again.status == 409, "reentry `never`: one run per subscriber, ever"


async def test_a_retried_trigger_whose_stored_answer_was_lost_finds_the_same_run(
    client, admin, redis, workspace
):
    automation = await new_automation(client, admin, reentry="always", trigger=API, steps=[WAIT])
    lst = await new_list(client, admin)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}])
    first = await (await trigger(client, admin, automation["id"], "ana@example.com", key="order-1")).json()
    # As after a crash between the run's script and the stored answer: the idempotency record is gone.
    async for key in redis.scan_iter(match=f"m:{{{workspace}}}:idem:*"):
        await redis.delete(key)
    again = await trigger(client, admin, automation["id"], "ana@example.com", key="order-1")
    assert again.status == 202 and (await again.json())["run"] == first["run"]
    assert await redis.hlen(keyspace.automation_runs(workspace, automation["id"])) == 1
    other = await trigger(client, admin, automation["id"], "ana@example.com", key="order-2")
    assert other.status == 202 and (await other.json())["run"] != first["run"], "reentry `always`"
