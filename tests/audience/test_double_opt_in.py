"""Double opt-in end to end on real Redis, Ray and an aiosmtpd sink: the confirmation mail arrives (from
the API and from a CSV import), POSTing its link makes the member `subscribed` with `list.subscribed`."""

from __future__ import annotations

import re

from actors.imports.body import ImportRunner
from tests.audience.test_imports import import_csv
from tests.audience.test_subscribers_api import events, new_list, upsert
from tests.pipeline.conftest import dispatch_idle, wait_for

DOUBLE = {"opt_in": "double", "confirmation_from": "News <news@acme.com>"}


def confirm_path(delivery) -> str:
    text = delivery.parsed().get_body(("plain",)).get_content()
    found = re.search(r"https?://[^/\s]+(/c/[^\s]+)", text)
    assert found, text
    return found.group(1)


async def status_of(client, headers, list_id: str, email: str) -> str:
    page = await (await client.get(f"/v1/lists/{list_id}/subscribers?email={email}", headers=headers)).json()
    return page["data"][0]["lists"][0]["status"]


async def test_a_new_member_confirms_through_the_mailed_link(client, admin, redis, sink, smtp_server):
    lst = await new_list(client, admin, **DOUBLE)
    await upsert(client, admin, lst["id"], [{"email": "ana@example.com"}])
    assert await status_of(client, admin, lst["id"], "ana@example.com") == "unconfirmed"
    await wait_for(lambda: len(sink.deliveries) == 1)
    delivery = sink.deliveries[0]
    assert delivery.rcpt_tos == ["ana@example.com"]
    path = confirm_path(delivery)

    page = await client.get(path)  # a link scanner's GET confirms nothing
    assert page.status == 200 and "<form" in await page.text()
    assert await status_of(client, admin, lst["id"], "ana@example.com") == "unconfirmed"
    assert (await client.post(path)).status == 200
    assert await status_of(client, admin, lst["id"], "ana@example.com") == "subscribed"
    subscribed = [e for e in await events(redis) if e.type == "list.subscribed"]
    assert [(e.data["email"], e.data["list"]) for e in subscribed] == [("ana@example.com", lst["id"])]
    await wait_for(lambda: dispatch_idle(redis))
    assert len(sink.deliveries) == 1, "one mail per new member, none on confirming"


async def test_imported_members_of_a_double_opt_in_list_get_their_mail(
    client, admin, redis, sink, smtp_server
):
    lst = await new_list(client, admin, **DOUBLE)
    await import_csv(client, admin, lst["id"], "email,name\nana@example.com,Ana\nBo@Example.org,Bo\n")
    await ImportRunner(redis).run_until_idle()
    await wait_for(lambda: len(sink.deliveries) == 2)
    assert sorted(d.rcpt_tos[0] for d in sink.deliveries) == ["ana@example.com", "bo@example.org"]
    bo = next(d for d in sink.deliveries if d.rcpt_tos == ["bo@example.org"])
    assert (await client.post(confirm_path(bo))).status == 200
    assert await status_of(client, admin, lst["id"], "bo@example.org") == "subscribed"
    assert await status_of(client, admin, lst["id"], "ana@example.com") == "unconfirmed"
    await ImportRunner(redis).run_until_idle()  # nothing re-applied, nobody mailed twice
    await wait_for(lambda: dispatch_idle(redis))
    assert len(sink.deliveries) == 2
