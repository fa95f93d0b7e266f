"""`Tracking.prepare`: what a tracked message looks like before it is stored (pure, no Redis)."""

from __future__ import annotations

import re

import msgspec
import pytest

from actors.outbound.tracking import Tracking, tracking_for
from schemas.settings import load_settings
from security.tracking import OpenToken, UnsubscribeToken

from .helpers import BLOG, NEWSLETTER, SHOP, clicks_in, outbound, tokens_in, unsubscribe_token

BASE = "https://mail.acme.test"


@pytest.fixture
def tracking() -> Tracking:
    return tracking_for(load_settings({}, secret_key="k" * 40, public_url=BASE + "/"))


def test_clicks_rewrite_every_web_link_and_list_them_in_index_order(tracking: Tracking) -> None:
    message = outbound()
    prepared, links = tracking.prepare(message, track_opens=False, track_clicks=True, unsubscribe=False)
    assert links == [SHOP, BLOG]
    # One recipient token for every link (one AES-SIV a message, not one a link), the link's index after it.
    token = tokens_in(prepared.html, "c")[0]
    assert clicks_in(prepared.html) == [f"{token}/0", f"{token}/1", f"{token}/0"]
    assert tracking.read("o", token) == OpenToken(
        workspace="acme", message_id=message.id, recipient="reader@tracking.example"
    )
    assert tracking.read("c", token) is None  # not a sealed click token of the links issued before
    assert f'href="{BASE}/t/c/{token}/0"' in prepared.html and "mailto:help@acme.com" in prepared.html
    assert SHOP not in prepared.html and BLOG not in prepared.html
    assert tokens_in(prepared.html, "o") == [] and prepared.headers == {}
    assert prepared.text == message.text and message.html == NEWSLETTER


def test_opens_add_one_pixel_before_the_body_end_and_leave_links_alone(tracking: Tracking) -> None:
    message = outbound()
    prepared, links = tracking.prepare(message, track_opens=True, track_clicks=False, unsubscribe=False)
    assert links == [] and tokens_in(prepared.html, "c") == []
    [token] = tokens_in(prepared.html, "o")
    pixel = f'<img src="{BASE}/t/o/{token}" width="1" height="1" alt="" style="display:none">'
    assert prepared.html == NEWSLETTER.replace("</BODY>", pixel + "</BODY>")
    assert tracking.read("o", token) == OpenToken(
        workspace="acme", message_id=message.id, recipient="reader@tracking.example"
    )


def test_opens_and_clicks_together_and_a_body_without_body_tag(tracking: Tracking) -> None:
    prepared, links = tracking.prepare(
        outbound(html='<a href="https://x.example/">x</a>'),
        track_opens=True,
        track_clicks=True,
        unsubscribe=False,
    )
    assert links == ["https://x.example/"]
    assert re.fullmatch(
        rf'<a href="{BASE}/t/c/([\w-]+)/0">x</a><img src="{BASE}/t/o/\1" [^>]+>', prepared.html
    )
    bare, _ = tracking.prepare(
        outbound(html="<p>hi</p>"), track_opens=True, track_clicks=False, unsubscribe=False
    )
    assert bare.html.startswith("<p>hi</p><img src=")


def test_nothing_asked_changes_nothing(tracking: Tracking) -> None:
    message = outbound()
    assert tracking.prepare(message, track_opens=False, track_clicks=False, unsubscribe=False) == (
        message,
        [],
    )
    text_only = outbound(html=None)
    prepared, links = tracking.prepare(text_only, track_opens=True, track_clicks=True, unsubscribe=False)
    assert prepared is text_only and links == []
    nobody_left = msgspec.structs.replace(message, to=[])  # every recipient suppressed
    assert tracking.prepare(nobody_left, track_opens=True, track_clicks=True, unsubscribe=True) == (
        nobody_left,
        [],
    )


def test_unsubscribe_headers_have_the_exact_rfc_8058_form(tracking: Tracking) -> None:
    message = outbound(headers={"X-Entity-Ref-ID": "7"})
    prepared, links = tracking.prepare(message, track_opens=False, track_clicks=False, unsubscribe=True)
    token = unsubscribe_token(prepared)
    assert prepared.headers == {
        "X-Entity-Ref-ID": "7",
        "List-Unsubscribe": f"<{BASE}/t/u/{token}>, <mailto:unsubscribe+{token}@acme.com>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert links == [] and prepared.html == message.html and message.headers == {"X-Entity-Ref-ID": "7"}
    assert tracking.read("u", token) == UnsubscribeToken(
        workspace="acme",
        message_id=message.id,
        recipient="reader@tracking.example",
        list_id=None,
        scope="workspace",
    )
    assert tracking.read("o", token) is None and tracking.read("c", token) is None


def test_a_list_message_unsubscribes_from_the_list(tracking: Tracking) -> None:
    prepared, _ = tracking.prepare(
        outbound(),
        track_opens=False,
        track_clicks=False,
        unsubscribe=True,
        list_id="lst_01J0000000000000000000000A",
    )
    payload = tracking.read("u", unsubscribe_token(prepared))
    assert isinstance(payload, UnsubscribeToken)
    assert (payload.scope, payload.list_id) == ("list", "lst_01J0000000000000000000000A")


def test_without_an_https_public_url_there_is_no_one_click_header() -> None:
    plain = tracking_for(load_settings({}, secret_key="k" * 40, public_url="http://127.0.0.1:8080"))
    prepared, _ = plain.prepare(outbound(), track_opens=False, track_clicks=False, unsubscribe=True)
    token = unsubscribe_token(prepared)
    assert prepared.headers == {
        "List-Unsubscribe": f"<http://127.0.0.1:8080/t/u/{token}>, <mailto:unsubscribe+{token}@acme.com>"
    }


def test_tokens_are_bound_to_the_key(tracking: Tracking) -> None:
    prepared, _ = tracking.prepare(outbound(), track_opens=True, track_clicks=False, unsubscribe=False)
    other = tracking_for(load_settings({}, secret_key="z" * 40, public_url=BASE))
    [token] = tokens_in(prepared.html, "o")
    assert tracking.read("o", token) is not None and other.read("o", token) is None


def test_a_long_newsletter_gets_every_link_rewritten(tracking: Tracking) -> None:
    """The cost of this (≈ 0.075 ms per message on the 2-core box) is a row of `python -m bench --phases
    micro`, measured beside msgspec-encoding the same message; here only what it produces."""
    body = "".join(
        f'<p><a href="https://shop.example.com/p/{i}?utm=mail&amp;c=spring">Item {i}</a> '
        f"{'words ' * 20}</p>\n"
        for i in range(10)
    )
    message = outbound(html=f"<html><body>{body}</body></html>")
    assert 1800 < len(message.html) < 2600
    prepared, links = tracking.prepare(message, track_opens=True, track_clicks=True, unsubscribe=True)
    assert links == [f"https://shop.example.com/p/{i}?utm=mail&c=spring" for i in range(10)]
    [opened] = tokens_in(prepared.html, "o")
    assert clicks_in(prepared.html) == [f"{opened}/{i}" for i in range(10)]
    assert "shop.example.com" not in prepared.html
