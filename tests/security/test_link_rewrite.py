from __future__ import annotations

import re
import time

import pytest

from security.html_tags import scan_anchors
from security.link_rewrite import MAX_LINK_TAGS, MAX_TRACKED_LINKS, TooManyLinks, open_pixel, rewrite_html

BASE = "https://mail.acme.test/"

MESSY = """<!DOCTYPE html>
<HTML><HEAD><TITLE>Hi &amp; welcome</TITLE>
<style>a[href^="https://styled.example"] { color: red }</style></HEAD>
<BODY bgcolor=#fff>
<P>Hello&nbsp;Ana,</P>
<A HREF='https://shop.example.com/p?id=1&amp;utm=mail' CLASS="btn">Shop</A>
<a class=plain href=http://blog.example.org/post>Blog</a>
<a href="mailto:help@acme.test?subject=Hi&amp;body=x">Mail us</a>
<a href="tel:+3212345678">Call</a> <a href="#footer">Down</a> <a href="/relative">Rel</a>
<a data-mailers-notrack href="https://private.example.com/reset?t=abc">Reset</a>
<a
   href = "  https://shop.example.com/p?id=1&utm=mail  "
   title="same link again">Again</a>
<a href="HTTPS://Upper.Example.com/X">Upper</a>
<!-- <a href="https://commented.example.com/">not a link</a> -->
<script>document.write('<a href="https://scripted.example.com/">');</script>
<a href="https://mail.acme.test/t/u/TOKEN">Unsubscribe</a>
<a name="footer">no href</a>
</body>
</HTML>
"""

EXPECTED_LINKS = [
    "https://shop.example.com/p?id=1&utm=mail",
    "http://blog.example.org/post",
    "HTTPS://Upper.Example.com/X",
]


def _rewrite(html: str, open_token: str | None = "OPENTOKEN") -> tuple[str, list[str], list[int]]:
    asked: list[int] = []

    def click_token(index: int) -> str:
        asked.append(index)
        return f"CLICK{index}"

    rewritten, links = rewrite_html(html, base_url=BASE, click_path=click_token, open_token=open_token)
    return rewritten, links, asked


def test_tracked_links_are_listed_decoded_in_order_with_one_index_per_url() -> None:
    _, links, asked = _rewrite(MESSY)
    assert links == EXPECTED_LINKS
    assert asked == [0, 1, 0, 2]


def test_only_tracked_href_values_change_and_the_rest_is_byte_identical() -> None:
    rewritten, _, _ = _rewrite(MESSY, open_token=None)
    expected = (
        MESSY.replace("'https://shop.example.com/p?id=1&amp;utm=mail'", "'https://mail.acme.test/t/c/CLICK0'")
        .replace("href=http://blog.example.org/post>", "href=https://mail.acme.test/t/c/CLICK1>")
        .replace('"  https://shop.example.com/p?id=1&utm=mail  "', '"https://mail.acme.test/t/c/CLICK0"')
        .replace('"HTTPS://Upper.Example.com/X"', '"https://mail.acme.test/t/c/CLICK2"')
    )
    assert rewritten == expected


def test_untracked_links_are_left_alone() -> None:
    rewritten, _, _ = _rewrite(MESSY)
    for kept in (
        'href="mailto:help@acme.test?subject=Hi&amp;body=x"',
        'href="tel:+3212345678"',
        'href="#footer"',
        'href="/relative"',
        'data-mailers-notrack href="https://private.example.com/reset?t=abc"',
        '<a href="https://commented.example.com/">',
        '<a href="https://scripted.example.com/">',
        'href="https://mail.acme.test/t/u/TOKEN"',
    ):
        assert kept in rewritten


def test_the_open_pixel_goes_just_before_the_closing_body_tag() -> None:
    rewritten, _, _ = _rewrite(MESSY)
    pixel = (
        '<img src="https://mail.acme.test/t/o/OPENTOKEN" width="1" height="1" alt="" style="display:none">'
    )
    assert rewritten.count(pixel) == 1
    assert pixel + "</body>" in rewritten


def test_the_open_pixel_goes_at_the_end_without_a_body_and_nowhere_without_a_token() -> None:
    fragment = "<p>Hi <b>there</b></p>"
    rewritten, links, _ = _rewrite(fragment)
    assert rewritten == fragment + open_pixel(BASE, "OPENTOKEN")
    assert links == []
    assert _rewrite(fragment, open_token=None)[0] == fragment


def test_click_urls_are_escaped_for_the_attribute() -> None:
    rewritten, _ = rewrite_html(
        '<a href="https://x.example/">x</a>',
        base_url="https://t.example/r&d/",
        click_path=lambda index: f"T{index}",
        open_token=None,
    )
    assert rewritten == '<a href="https://t.example/r&amp;d/t/c/T0">x</a>'


def test_documents_without_links_are_unchanged_apart_from_the_pixel() -> None:
    document = "<html><body><p>Plain &copy; 2026</p></body></html>"
    rewritten, links, asked = _rewrite(document)
    assert links == [] and asked == []
    assert re.sub(r"<img [^>]*>", "", rewritten) == document


def test_unusual_but_valid_tag_syntax_is_tracked_without_other_changes() -> None:
    cases = {
        '<a/href="https://x.example/">x</a>': '<a/href="https://t.example/t/c/T0">x</a>',
        "<a href=https://x.example/?a=1&b=2>x</a>": "<a href=https://t.example/t/c/T0>x</a>",
        '<a href="https://x.example/"/>': '<a href="https://t.example/t/c/T0"/>',
        '<p>\r\n<a\r\nhref="https://x.example/">x</a>\r\n</p>': '<p>\r\n<a\r\nhref="https://t.example/t/c/T0">x</a>\r\n</p>',
        '<a href="&#104;ttps://x.example/">x</a>': '<a href="https://t.example/t/c/T0">x</a>',
    }
    for document, expected in cases.items():
        rewritten, links = rewrite_html(
            document, base_url="https://t.example", click_path=lambda i: f"T{i}", open_token=None
        )
        assert (rewritten, links[0][:17]) == (expected, "https://x.example"), document


def test_links_without_a_usable_url_are_left_alone() -> None:
    for document in ('<a href>x</a><a href="">y</a>', '<a href="java&#115;cript:alert(1)">x</a>'):
        assert rewrite_html(document, base_url=BASE, click_path=str, open_token=None) == (document, [])


def _cpu_seconds(document: str) -> float:
    # The scanner alone: the rewrite refuses more than MAX_LINK_TAGS links before it could be slow.
    started = time.process_time()
    scan_anchors(document)
    return time.process_time() - started


CRAFTED = {
    "unclosed anchors": lambda n: "<a" * n,
    "lone brackets": lambda n: "<" * (2 * n),
    "many tags": lambda n: "<b>" * n,
    "bare anchors": lambda n: "<a>" * n,
    "attributes": lambda n: "<a " + "a " * n + "href=https://x.example/>",
    "comments": lambda n: "<!---->" * (n // 3),
    "unclosed comments": lambda n: "<!--" * n,
    "quoted values": lambda n: "<p " + 'a=">" ' * (n // 3) + ">",
    "end tags": lambda n: "</a>" * n,
    "untracked hrefs": lambda n: "<a href=x>" * (n // 3),
}


def test_click_tracking_rewrite_is_linear_time() -> None:
    # The input: html.parser took 9 s on it; the budget here is generous for a loaded machine.
    assert _cpu_seconds("<a" * 50_000) < 0.5
    for name, build in CRAFTED.items():
        small, large = (min(_cpu_seconds(build(n)) for _ in range(3)) for n in (5_000, 40_000))
        # 8× the input: linear is ≈ 8× the time, quadratic 64×.
        assert large < 20 * max(small, 0.0005), (name, small, large)


def test_markup_inside_attribute_values_and_raw_text_is_not_a_link() -> None:
    for document in (
        "<img alt=\"<a href='https://x.example/'>\">",
        "<title><a href=https://x.example/>t</a></title>",
        "<textarea><a href=https://x.example/></textarea>",
        "<!-- x --!><a href=https://y.example/>",
    ):
        rewritten, links = rewrite_html(document, base_url=BASE, click_path=str, open_token=None)
        assert links == ([] if "y.example" not in document else ["https://y.example/"]), document


def test_a_document_with_too_many_distinct_links_is_refused() -> None:
    document = "".join(f'<a href="https://x.example/{i}">' for i in range(MAX_TRACKED_LINKS + 1))
    with pytest.raises(TooManyLinks):
        rewrite_html(document, base_url=BASE, click_path=str, open_token=None)


def test_anchors_without_href_are_skipped_in_c_and_only_href_anchors_are_listed() -> None:
    # Bare anchors took the Python-level path (`"<a>" * 87_000`, 256 KiB: ~450 ms of CPU); they are
    # never rewritten, so the scanner must not even list them.
    assert scan_anchors("<a>" * 87_000).anchors == []
    document = '<a name=x><A HREF=https://a.example/><a hrefx=1><a x="1"href=https://b.example/><a href>'
    listed = [anchor.href.raw if anchor.href else None for anchor in scan_anchors(document).anchors]
    assert listed == ["https://a.example/", "https://b.example/", None]


def test_a_document_with_too_many_link_tags_is_refused_even_when_they_repeat_one_url() -> None:
    document = '<a href="https://x.example/">' * MAX_LINK_TAGS
    _, links = rewrite_html(document, base_url=BASE, click_path=str, open_token=None)
    assert links == ["https://x.example/"]
    with pytest.raises(TooManyLinks):
        rewrite_html(document + "<a href=#>", base_url=BASE, click_path=str, open_token=None)
