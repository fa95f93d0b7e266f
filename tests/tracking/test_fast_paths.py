"""The campaign fan-out's shortcuts in tracking (issue #13) answer exactly what the general code does.

- Tokens: a known-answer vector per kind, made by the code before the shortcuts (AES-SIV is
  deterministic), so links in mail already sent keep reading and new ones keep the format.
- A body with neither `<a` nor `</body` skips the link scan (`security.link_rewrite.may_have_tags`): the
  scan finds nothing in any body it lets skip, and any body that has one of them (in any case, in a
  comment, ...) still goes through the scan.
- The RFC 8058 headers built from once-checked parts equal `list_unsubscribe_headers`'s.
"""

from __future__ import annotations

import pytest

from actors.outbound.tracking import Tracking, token_recipient, tracking_for
from schemas.settings import load_settings
from security.html_tags import scan_anchors
from security.link_rewrite import may_have_tags, rewrite_html
from security.tracking import ClickToken, OpenToken, TrackingTokens, UnsubscribeToken
from security.unsubscribe import list_unsubscribe_headers

from .helpers import outbound

BASE = "https://mail.acme.test"
MSG = "msg_01J9ZXQ4N8D6B2K7T3W5Y1H0RA"
LST = "lst_01J9ZXQ4N8D6B2K7T3W5Y1H0RB"

KNOWN_TOKENS = [
    (
        OpenToken("ws_01J9ZXQ4N8D6B2K7T3W5Y1H0RC", MSG, "ana@example.com"),
        "AXWeJacebldApo88j-tbxrjCTVecW19v37N4MhLm6lOn7hluD6FTXjUeRUwZPtIaKt-gRIGb9bso-d2bUaNqjHUrqHIsxGy-5xnEKDY",
    ),
    (
        UnsubscribeToken("acme", MSG, "thirty-chars-long@example.com", LST, "list"),
        "AbVXQZCuDhvA4om76lfzGK00h_67PRrUUy4rci-lpUAYU6r4NGCdCtwJQiJ_i9h3WfRVt-fHhvoRpcJ-CfgE4qT6d0FNjogmwkPi8QoH"
        "Adud7I48oEJF90UTCw1lTcgBa7-1n84B",
    ),
    (
        UnsubscribeToken("acme", MSG, "ana@example.com", None, "workspace"),
        "AdojOLuAe4t4wETAwenZxCFP5RxTRisZvkN81mg3_0V4p8wOg2JEXgpfMwKizl_OXfsvfspfwYBklGqIilbVQMaMPDTZo7RK",
    ),
    (
        ClickToken("acme", "msg_not_a_ulid_but_30_chars_x", "a-much-longer-address-of-30ch@example.com", 7),
        "AbLkfk6C82GHxw2rmMkQLmxK28T0GjXEllj25Pd0zELIOmG8QzYbwO5zcU5cZ6SVqh6CUBYFsPLgwnxRoX-z_jSdsuqwB0lpyvYMK5C_"
        "Q_8OmjTJDgJ2CvB_MlffReEUrA",
    ),
]


@pytest.fixture
def tracking() -> Tracking:
    return tracking_for(load_settings({}, secret_key="k" * 40, public_url=BASE + "/"))


@pytest.mark.parametrize(("payload", "token"), KNOWN_TOKENS)
def test_tokens_are_the_format_issued_before(payload, token) -> None:
    tokens = TrackingTokens(b"k" * 32)
    assert tokens.issue(payload) == token
    kind = {OpenToken: "o", ClickToken: "c", UnsubscribeToken: "u"}[type(payload)]
    assert tokens.read(kind, token) == payload


BODIES = [
    "<p>Hello Ana,</p><p>Our news.</p>",  # neither: the shortcut
    "",
    "plain text, no markup at all",
    "<p>Hello</p></body>",
    "<html><BODY><p>Hi</p></BODY></html>",
    "<p>Hi</p></Body >",
    '<p><a href="https://shop.example.com/">shop</a></p>',
    '<p><A HREF="https://shop.example.com/">shop</A></p>',
    "<p>Hi</p><!-- </body> --><p>after</p>",
    "<title></body></title><p>x</p>",
    "<abbr>not a link</abbr>",
    '<p>a<a href="mailto:x@y.z">mail</a> and <a data-mailers-notrack href="https://n.example/">n</a></p>',
]


@pytest.mark.parametrize("html", BODIES)
def test_opens_and_clicks_equal_the_scanning_rewrite(tracking: Tracking, html: str) -> None:
    message = outbound(html=html)
    prepared, links = tracking.prepare(message, track_opens=True, track_clicks=True, unsubscribe=False)
    recipient = token_recipient(message)

    opened = tracking.tokens.issue(OpenToken(message.workspace, message.id, recipient))

    def click(index: int) -> str:
        return f"{opened}/{index}"

    expected, expected_links = rewrite_html(html, base_url=BASE, click_path=click, open_token=opened)
    assert (prepared.html, links) == (expected, expected_links)


@pytest.mark.parametrize("html", BODIES)
def test_a_body_that_skips_the_scan_is_one_the_scan_finds_nothing_in(html: str) -> None:
    scan = scan_anchors(html, max_anchors=1000)
    if not may_have_tags(html):  # fails for the bodies with a tag (any case, any place) if they were let skip
        assert (scan.anchors, scan.body_end) == ([], None)


@pytest.mark.parametrize("list_id", [None, LST])
@pytest.mark.parametrize("sender", ["hello@acme.com", "hello@bücher.example", "hello@[127.0.0.1]"])
def test_unsubscribe_headers_equal_the_general_builder(tracking: Tracking, list_id, sender) -> None:
    message = outbound()
    message = message.__class__(**{**_fields(message), "from_": message.from_.__class__(sender, "Acme")})
    prepared, _ = tracking.prepare(
        message, track_opens=False, track_clicks=False, unsubscribe=True, list_id=list_id
    )
    token = tracking.tokens.issue(
        UnsubscribeToken(
            message.workspace,
            message.id,
            token_recipient(message),
            list_id,
            "list" if list_id else "workspace",
        )
    )
    from actors.outbound.tracking import _ascii_domain

    domain = _ascii_domain(message.from_.domain)
    expected = list_unsubscribe_headers(
        f"{BASE}/t/u/{token}", f"mailto:unsubscribe+{token}@{domain}" if domain else None
    )
    assert {k: prepared.headers[k] for k in expected} == expected
    assert set(prepared.headers) == set(expected)


def test_a_base_url_the_header_check_refuses_still_goes_through_the_general_builder() -> None:
    tracking = Tracking(TrackingTokens(b"k" * 32), "https://mail.acme.test/a;b\x7f")
    assert not tracking.header_safe_base
    with pytest.raises(ValueError, match="header-safe"):
        tracking.prepare(outbound(), track_opens=False, track_clicks=False, unsubscribe=True)


def _fields(message) -> dict:
    return {name: getattr(message, name) for name in message.__struct_fields__}
