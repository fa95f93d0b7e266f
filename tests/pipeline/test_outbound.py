"""`Outbound`, the send path of the runners: the same pipeline as the API, idempotent per derived id."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from actors.outbound.service import Accepted, Outbound, OutboundItem, Rejected
from schemas.ids import derived_id
from schemas.send import SendRequest, TemplateRef
from store import keyspace
from tests.conftest import make_settings
from tests.pipeline.conftest import dispatch_idle, wait_for

pytestmark = pytest.mark.usefixtures("smtp_server")


def _request(to: str, **fields) -> SendRequest:
    return SendRequest(from_="News <news@acme.test>", to=to, subject=fields.pop("subject", "Hi"), **fields)


@pytest.fixture
def outbound(redis, tmp_path, redis_url) -> Outbound:
    # RFC 8058 one-click needs an HTTPS public URL.
    return Outbound(redis, make_settings(tmp_path, redis_url, public_url="https://mail.acme.test"))


async def _template(client, headers) -> str:
    body = {
        "name": "welcome",
        "subject": "Hello {{ first_name }}",
        "html": "<p>Hi {{ first_name }}, <a href='https://acme.test/x'>go</a></p>",
        "variables": {"first_name": {"type": "string", "required": True}},
    }
    response = await client.post("/v1/templates", json=body, headers=headers)
    assert response.status == 201, await response.text()
    return (await response.json())["id"]


async def test_a_replayed_item_is_enqueued_once_and_arrives_once(
    client, admin, workspace, redis, sink, outbound
):
    template = await _template(client, admin)
    now = datetime.now(UTC)
    millis = int(time.time() * 1000)
    items = [
        OutboundItem(
            request=_request(
                f"reader{i}@example.com",
                subject="",
                template=TemplateRef(id=template, variables={"first_name": f"Reader {i}"}),
                unsubscribe=True,
            ),
            message_id=derived_id("msg", millis, "cmp_x", f"sub_{i}"),
            campaign_id="cmp_x",
        )
        for i in range(3)
    ]
    first = await outbound.send(workspace, items, now=now)
    assert [type(o) for o in first] == [Accepted] * 3
    assert [o.id for o in first] == [i.message_id for i in items]
    assert not any(o.replayed for o in first if isinstance(o, Accepted))

    # The per-message key gone (past its retention): the message hash itself still answers.
    await redis.delete(keyspace.send_item(workspace, "outbound", items[0].message_id))
    again = await outbound.send(workspace, items, now=now)
    assert [(o.id, o.replayed) for o in again if isinstance(o, Accepted)] == [
        (i.message_id, True) for i in items
    ]

    await wait_for(lambda: len(sink.deliveries) >= 3)
    await wait_for(lambda: dispatch_idle(redis))
    assert len(sink.deliveries) == 3
    mails = {m["To"]: m for m in (d.parsed() for d in sink.deliveries)}
    mail = mails["reader1@example.com"]
    assert mail["Subject"] == "Hello Reader 1"
    assert "List-Unsubscribe=One-Click" in mail["List-Unsubscribe-Post"]
    assert "https://" in mail["List-Unsubscribe"] and "mailto:" in mail["List-Unsubscribe"]
    view = await (await client.get(f"/v1/messages/{items[1].message_id}", headers=admin)).json()
    assert view["metadata"]["template_id"] == template
    listed = await (await client.get("/v1/messages?campaign_id=cmp_x", headers=admin)).json()
    assert sorted(m["id"] for m in listed["data"]) == sorted(i.message_id for i in items)


async def test_a_bad_item_is_rejected_with_its_reason_and_the_rest_go(client, admin, workspace, outbound):
    template = await _template(client, admin)
    items = [
        OutboundItem(request=_request("ok@example.com", html="<p>hi</p>")),
        OutboundItem(request=_request("a@example.com", subject="", template=TemplateRef(id=template))),
        OutboundItem(request=_request("not an address", html="<p>hi</p>")),
        OutboundItem(request=_request("b@example.com", html="<p>hi</p>"), message_id="msg_nope"),
    ]
    outcomes = await outbound.send(workspace, items, now=datetime.now(UTC))
    assert isinstance(outcomes[0], Accepted) and not outcomes[0].replayed
    assert isinstance(outcomes[1], Rejected) and outcomes[1].error.code == "template_error"
    assert outcomes[1].error.errors[0].pointer.startswith("#/items/1/template")
    assert isinstance(outcomes[2], Rejected) and outcomes[2].error.errors[0].pointer == "#/items/2/to"
    assert isinstance(outcomes[3], Rejected) and outcomes[3].error.errors[0].pointer == "#/items/3/message_id"
