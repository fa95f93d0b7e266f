"""Tracking through `/v1/send`: what the send path stores and sends, and unsubscribes it then honours."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from security.tracking import UnsubscribeToken
from store.messages import MessageStore
from tests.pipeline.conftest import send_and_settle
from tests.smtp.sink import SmtpSink

from .helpers import SHOP, clicks_in, outbound, store_sent, tokens_in, wait_for
from .test_endpoints import ONE_CLICK, tracking_of

MESSAGE = {
    "from": "Acme <hello@acme.com>",
    "subject": "News",
    "html": '<html><body><a href="https://shop.example.com/p?id=1&amp;utm=mail">shop</a></body></html>',
    "text": "Hi",
}


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


@pytest.fixture
async def app(app_client, admin, sink):
    client = await app_client(public_url="https://mail.acme.test")
    body = {
        "name": "sink",
        "provider": "smtp",
        "config": {"host": "127.0.0.1", "port": sink.port, "security": "none", "pool_size": 2},
    }
    created = await client.post("/v1/sending-servers", json=body, headers=admin)
    assert created.status == 201, await created.text()
    return client


def fresh_address() -> str:
    """An address no other test used: SuppressionShard actors live for the whole session, across flushes."""
    return f"reader-{uuid.uuid4().hex[:12]}@tracking.example"


async def send_status(app, admin, to: str) -> str:
    """The status a send to `to` settles at (suppressions apply at send time, in the dispatcher)."""
    return await send_and_settle(app, admin, {**MESSAGE, "to": to})


async def test_after_a_one_click_unsubscribe_sends_to_the_address_are_suppressed(
    app, admin, redis, workspace
) -> None:
    reader = fresh_address()
    assert await send_status(app, admin, reader) == "sent"
    message, links = tracking_of(app).prepare(
        outbound(to=reader, workspace=workspace), track_opens=False, track_clicks=False, unsubscribe=True
    )
    await store_sent(redis, message, links)
    token = message.headers["List-Unsubscribe"].split("/t/u/")[1].split(">")[0]
    assert (await app.post(f"/t/u/{token}", data=ONE_CLICK)).status == 200

    async def suppressed() -> bool:
        return await send_status(app, admin, reader) == "suppressed"

    await wait_for(suppressed, within=10, every=0.2)
    assert await send_status(app, admin, fresh_address()) == "sent"


async def test_a_tracked_send_is_stored_and_sent_with_tracking_and_its_links_work(
    app, admin, redis, sink, workspace
) -> None:
    reader = fresh_address()
    body = {**MESSAGE, "to": reader, "tracking": {"opens": True, "clicks": True}, "unsubscribe": True}
    response = await app.post("/v1/send", json=body, headers=admin)
    assert response.status == 202, await response.text()
    message_id = (await response.json())["id"]
    stored = await MessageStore(redis).get(workspace, message_id)
    assert stored is not None and stored.meta.links == [SHOP]
    assert len(tokens_in(stored.message.html, "c")) == 1 and len(tokens_in(stored.message.html, "o")) == 1
    await wait_for(lambda: _arrived(sink))
    delivered = sink.deliveries[0].parsed()
    assert delivered["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_url = delivered["List-Unsubscribe"].split(">")[0].removeprefix("<")
    assert unsubscribe_url.startswith("https://mail.acme.test/t/u/")
    token = unsubscribe_url.rsplit("/", 1)[1]
    assert tracking_of(app).read("u", token) == UnsubscribeToken(
        workspace=workspace, message_id=message_id, recipient=reader, list_id=None, scope="workspace"
    )
    [click] = clicks_in(delivered.get_body(("html",)).get_content())
    redirect = await app.get(f"/t/c/{click}", allow_redirects=False)
    assert redirect.status == 302 and redirect.headers["Location"] == SHOP


async def _arrived(sink: SmtpSink) -> bool:
    return len(sink.deliveries) == 1
