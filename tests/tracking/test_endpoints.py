"""`/t/o`, `/t/c` and `/t/u` on the real app and Redis: answers, and exactly what gets recorded."""

from __future__ import annotations

import pytest

from actors.outbound.tracking import Tracking, tracking_for
from ingress.context import SERVICES
from ingress.routes.tracking import PIXEL
from schemas.ids import new_id
from security.tracking import ClickToken
from store import keyspace
from store.suppressions import SuppressionStore

from .helpers import (
    BLOG,
    HUMAN,
    SHOP,
    altered,
    clicks_in,
    outbound,
    store_sent,
    streamed,
    timeline,
    tokens_in,
    unsubscribe_token,
)

NO_STORE = "no-store, no-cache, must-revalidate, private"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
LIST_ID = "lst_01J0000000000000000000000A"


def tracking_of(client) -> Tracking:
    return tracking_for(client.server.app[SERVICES].settings)


async def sent_tracked(client, redis, **options):
    """Prepare a message with the app's own key, store it as sent; the stored message."""
    message, links = tracking_of(client).prepare(
        outbound(), track_opens=True, track_clicks=True, unsubscribe=True, **options
    )
    await store_sent(redis, message, links)
    return message


async def recorded(redis, message) -> tuple[list[str], list[str]]:
    """Event types in the message's timeline and in the event stream."""
    return [e.type for e in await timeline(redis, message)], [e.type for e in await streamed(redis)]


@pytest.fixture
async def app(app_client):
    return await app_client(public_url="http://127.0.0.1")


async def test_an_open_answers_an_uncached_gif_and_records_one_open(app, redis) -> None:
    message = await sent_tracked(app, redis)
    [token] = tokens_in(message.html, "o")
    response = await app.get(f"/t/o/{token}", headers={"User-Agent": HUMAN})
    assert response.status == 200 and await response.read() == PIXEL and response.content_type == "image/gif"
    # GIF89a, 1×1, a graphic control extension with the transparency flag set, the trailer.
    assert PIXEL[:10] == b"GIF89a\x01\x00\x01\x00" and b"\x21\xf9\x04\x01" in PIXEL and PIXEL[-1:] == b";"
    assert (response.headers["Cache-Control"], response.headers["Pragma"], response.headers["Expires"]) == (
        NO_STORE,
        "no-cache",
        "0",
    )
    assert await recorded(redis, message) == (
        ["message.accepted", "message.opened"],
        ["message.accepted", "message.opened"],
    )
    opened = (await timeline(redis, message))[-1]
    assert opened.data == {"user_agent": HUMAN, "ip": "127.0.0.1", "machine_open": False}
    assert opened == (await streamed(redis))[-1]
    assert (opened.workspace, opened.message.id, opened.message.to, opened.message.from_) == (
        "acme",
        message.id,
        "reader@tracking.example",
        "hello@acme.com",
    )
    assert (opened.message.tags, opened.message.metadata, opened.message.server) == (
        ["news"],
        {"user_id": "42"},
        "srv_test",
    )


async def test_a_proxy_fetch_is_a_machine_open_and_forwarded_for_is_trusted_only_when_enabled(
    app_client, redis
):
    apple = {"User-Agent": "Mozilla/5.0", "X-Forwarded-For": "203.0.113.9, 17.58.1.2"}
    direct = await app_client(tracking_dedup_seconds=0)  # the same open twice: both recorded
    message = await sent_tracked(direct, redis)
    [token] = tokens_in(message.html, "o")
    assert (await direct.get(f"/t/o/{token}", headers=apple)).status == 200
    behind_proxy = await app_client(trust_forwarded_for=True, tracking_dedup_seconds=0)
    assert (await behind_proxy.get(f"/t/o/{token}", headers={**apple, "User-Agent": HUMAN})).status == 200
    first, second = (await timeline(redis, message))[1:]
    assert first.data == {"user_agent": "Mozilla/5.0", "ip": "127.0.0.1", "machine_open": True}
    assert second.data == {"user_agent": HUMAN, "ip": "17.58.1.2", "machine_open": True}


async def test_a_click_redirects_to_the_exact_original_url_and_records_one_click(app, redis) -> None:
    message = await sent_tracked(app, redis)
    first = clicks_in(message.html)[0]
    response = await app.get(f"/t/c/{first}", headers={"User-Agent": HUMAN}, allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == SHOP
    assert response.headers["Cache-Control"] == NO_STORE
    assert await recorded(redis, message) == (
        ["message.accepted", "message.clicked"],
        ["message.accepted", "message.clicked"],
    )
    clicked = (await timeline(redis, message))[-1]
    assert clicked.data == {"url": SHOP, "user_agent": HUMAN, "ip": "127.0.0.1", "machine_open": False}
    assert clicked.message.to == "reader@tracking.example"


@pytest.mark.parametrize("kind", ["o", "c", "u"])
async def test_an_altered_or_wrong_kind_token_is_404_and_records_nothing(app, redis, kind: str) -> None:
    message = await sent_tracked(app, redis)
    good = {"o": tokens_in(message.html, "o")[0], "u": unsubscribe_token(message)}
    good["c"] = good["o"]  # a link's token is the recipient token, its index after it
    other_kind = good["u" if kind != "u" else "o"]
    link = "/0" if kind == "c" else ""
    for token in (altered(good[kind]), other_kind, good[kind][:-1], "x"):
        for method in ("GET", "POST") if kind == "u" else ("GET",):
            path = f"/t/{kind}/{token}{link}"
            response = await app.request(method, path, data=ONE_CLICK, allow_redirects=False)
            assert response.status == 404, (method, token)
            assert response.content_type == "application/problem+json"
            assert (await response.json())["code"] == "not_found"
    assert await recorded(redis, message) == (["message.accepted"], ["message.accepted"])
    assert not await SuppressionStore(redis).is_suppressed("acme", "reader@tracking.example", "workspace")


async def test_a_link_index_beyond_the_message_links_or_not_in_its_pattern_is_404(app, redis) -> None:
    message = await sent_tracked(app, redis)
    [token] = tokens_in(message.html, "o")
    assert clicks_in(message.html) == [f"{token}/0", f"{token}/1", f"{token}/0"]  # two links
    for index in ("2", "999", "1000", "01", "-1", "1.0", "+1", "٣", "00"):
        response = await app.get(f"/t/c/{token}/{index}", allow_redirects=False)
        assert response.status == 404 and "Location" not in response.headers, index
        assert response.content_type == "application/problem+json"
    assert await recorded(redis, message) == (["message.accepted"], ["message.accepted"])
    response = await app.get(f"/t/c/{token}/1", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == BLOG


async def test_a_sealed_click_token_of_the_links_issued_before_still_redirects(app, redis) -> None:
    """Mail already sent carries `/t/c/{click token}` (the index sealed in): it keeps working."""
    message = await sent_tracked(app, redis)
    sealed = tracking_of(app).tokens.issue(
        ClickToken(workspace="acme", message_id=message.id, recipient="reader@tracking.example", link_index=1)
    )
    response = await app.get(f"/t/c/{sealed}", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == BLOG
    assert (await timeline(redis, message))[-1].data["url"] == BLOG


async def test_a_sealed_click_token_beyond_the_message_links_is_404(app, redis) -> None:
    message = await sent_tracked(app, redis)
    beyond = tracking_of(app).tokens.issue(
        ClickToken(workspace="acme", message_id=message.id, recipient="reader@tracking.example", link_index=2)
    )
    response = await app.get(f"/t/c/{beyond}", allow_redirects=False)
    assert response.status == 404 and "Location" not in response.headers
    missing = tracking_of(app).tokens.issue(
        ClickToken(
            workspace="acme", message_id=new_id("msg"), recipient="reader@tracking.example", link_index=0
        )
    )
    assert (await app.get(f"/t/c/{missing}", allow_redirects=False)).status == 404
    assert await recorded(redis, message) == (["message.accepted"], ["message.accepted"])


async def test_the_unsubscribe_page_only_asks(app, redis) -> None:
    message = await sent_tracked(app, redis)
    response = await app.get(f"/t/u/{unsubscribe_token(message)}")
    page = await response.text()
    assert response.status == 200 and response.content_type == "text/html"
    assert '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">' in page
    assert "reader@tracking.example" in page and response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert not await SuppressionStore(redis).is_suppressed("acme", "reader@tracking.example", "workspace")
    assert await recorded(redis, message) == (["message.accepted"], ["message.accepted"])


async def test_one_click_unsubscribes_once_and_answers_200_without_redirect(app, redis) -> None:
    message = await sent_tracked(app, redis)
    url = f"/t/u/{unsubscribe_token(message)}"
    for _ in range(2):
        response = await app.post(url, data=ONE_CLICK, allow_redirects=False)
        assert response.status == 200 and "Location" not in response.headers
        assert "no more emails" in await response.text()
    assert await SuppressionStore(redis).is_suppressed("acme", "reader@tracking.example", "workspace")
    [record] = await SuppressionStore(redis).records("acme", [_entry("workspace", None)])
    assert (record.reason, record.source) == ("unsubscribe", "unsubscribe")
    assert await recorded(redis, message) == (
        ["message.accepted", "subscriber.unsubscribed"],
        ["message.accepted", "subscriber.unsubscribed"],
    )
    event = (await timeline(redis, message))[-1]
    assert event.data == {"recipient": "reader@tracking.example", "scope": "workspace", "list_id": None}
    assert (event.message.id, event.message.to) == (message.id, "reader@tracking.example")


async def test_the_page_form_as_multipart_unsubscribes_from_the_list_only(app, redis) -> None:
    import aiohttp

    message = await sent_tracked(app, redis, list_id=LIST_ID)
    form = aiohttp.FormData({"List-Unsubscribe": "One-Click"}, default_to_multipart=True)
    response = await app.post(f"/t/u/{unsubscribe_token(message)}", data=form)
    assert response.status == 200
    store = SuppressionStore(redis)
    assert await store.is_suppressed("acme", "reader@tracking.example", "list", LIST_ID)
    assert not await store.is_suppressed("acme", "reader@tracking.example", "workspace")
    assert (await timeline(redis, message))[-1].data == {
        "recipient": "reader@tracking.example",
        "scope": "list",
        "list_id": LIST_ID,
    }


async def test_a_post_without_the_one_click_body_unsubscribes_nobody(app, redis) -> None:
    message = await sent_tracked(app, redis)
    url = f"/t/u/{unsubscribe_token(message)}"
    assert (await app.post(url, data={"List-Unsubscribe": "Nope"})).status == 422
    assert (
        await app.post(url, data=b"List-Unsubscribe=One-Click", headers={"Content-Type": "text/plain"})
    ).status == 415
    assert not await SuppressionStore(redis).is_suppressed("acme", "reader@tracking.example", "workspace")
    assert await recorded(redis, message) == (["message.accepted"], ["message.accepted"])


async def test_an_unsubscribe_is_honoured_after_the_message_is_gone(app, redis) -> None:
    message = await sent_tracked(app, redis)
    await redis.delete(
        keyspace.message(message.workspace, message.id),
        keyspace.message_events(message.workspace, message.id),
    )
    response = await app.post(f"/t/u/{unsubscribe_token(message)}", data=ONE_CLICK)
    assert response.status == 200
    assert await SuppressionStore(redis).is_suppressed("acme", "reader@tracking.example", "workspace")
    event = (await streamed(redis))[-1]
    assert event.type == "subscriber.unsubscribed" and event.message is None and event.workspace == "acme"
    assert event.data["message_id"] == message.id
    assert not await redis.exists(keyspace.message_events(message.workspace, message.id))


def _entry(scope: str, value: str | None):
    from schemas.suppressions import SuppressionEntry

    return SuppressionEntry(email="reader@tracking.example", scope=scope, scope_value=value)  # type: ignore[arg-type]


async def test_a_link_with_an_encoded_newline_redirects_where_a_browser_would_go(app, redis) -> None:
    message, links = tracking_of(app).prepare(
        outbound(html='<a href="https://x.example/a&#10;b?q=1">x</a>'),
        track_opens=False,
        track_clicks=True,
        unsubscribe=False,
    )
    await store_sent(redis, message, links)
    response = await app.get(f"/t/c/{clicks_in(message.html)[0]}", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "https://x.example/ab?q=1"
    assert (await timeline(redis, message))[-1].data["url"] == "https://x.example/a\nb?q=1"
