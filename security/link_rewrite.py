"""Click tracking and the open pixel: rewrite the links of an HTML body, touching nothing else.

`security/html_tags.py` finds the `<a>` tags in linear time (case, quoting, entities, comments and
`<script>` are handled the way browsers tokenize them); only the characters of each tracked `href`
value are replaced, so the rest of the document stays byte-identical (it may be DKIM-signed and
diffed). The cost is bounded by the document's size, which the send path bounds
(`MAX_TRACKED_HTML_CHARS` in actors/outbound/validation.py).

Tracked: `http`/`https` links. Left alone: `mailto:`, `tel:`, `#anchors`, relative links, links with
a `data-mailers-notrack` attribute, and links already pointing at our own `/t/` endpoints (the
unsubscribe link must stay an unsubscribe link). Each distinct URL gets one index into the list
returned (stored with the message); the click URL carries the index (`/t/c/{recipient token}/{index}`),
so the redirect can only lead to a URL that was in the message.
"""

from __future__ import annotations

import html as html_entities
from collections.abc import Callable
from typing import NamedTuple

from security.html_tags import Anchor, TooManyAnchors, scan_anchors
from security.machine_opens import is_machine_open

__all__ = [
    "MAX_LINK_TAGS",
    "MAX_TRACKED_LINKS",
    "TooManyLinks",
    "is_machine_open",
    "open_pixel",
    "rewrite_html",
]

NOTRACK_ATTRIBUTE = "data-mailers-notrack"
# Each distinct URL costs a stored entry (and its index in the URL); real messages have tens to a few hundred.
MAX_TRACKED_LINKS = 1000
# Each `<a href>` costs ~15 µs of Python-level scanning whether tracked or not; 2,000 of them (~30 ms) is
# far past a real newsletter and keeps a 256 KiB body of nothing but links (~11,000) from costing 160 ms.
MAX_LINK_TAGS = 2000


class TooManyLinks(ValueError):
    pass


class _Edit(NamedTuple):
    start: int
    end: int
    text: str


def rewrite_html(
    html: str, *, base_url: str, click_path: Callable[[int], str], open_token: str | None
) -> tuple[str, list[str]]:
    """The tracked document and the original URLs in index order. `click_path(index)`: what follows
    `/t/c/` in the link of that index."""
    base = base_url.rstrip("/")
    if not may_have_tags(html):  # the scan would find no link and no body end (most campaign bodies)
        return (html if open_token is None else html + open_pixel(base, open_token)), []
    try:
        scan = scan_anchors(html, max_anchors=MAX_LINK_TAGS)
    except TooManyAnchors:
        raise TooManyLinks(f"more than {MAX_LINK_TAGS} links (<a href>); at most {MAX_LINK_TAGS}") from None
    index_of: dict[str, int] = {}
    edits: list[_Edit] = []
    for anchor in scan.anchors:
        url = _trackable_url(anchor, base)
        if url is None or anchor.href is None:
            continue
        index = index_of.setdefault(url, len(index_of))
        if index >= MAX_TRACKED_LINKS:
            raise TooManyLinks(
                f"more than {MAX_TRACKED_LINKS} distinct links to track; at most {MAX_TRACKED_LINKS}"
            )
        click_url = f"{base}/t/c/{click_path(index)}"
        edits.append(_Edit(anchor.href.start, anchor.href.end, html_entities.escape(click_url)))
    if open_token is not None:
        at = scan.body_end if scan.body_end is not None else len(html)
        edits.append(_Edit(at, at, open_pixel(base, open_token)))
    return _apply(html, edits), list(index_of)


def may_have_tags(html: str) -> bool:
    """False only when `scan_anchors` would find neither an `<a>` nor a `</body>`: it matches both
    ASCII-case-insensitively, and lowercasing maps no other character to `a`, `b`, `o`, `d`, `y`, `<`
    or `/` (a false True only costs the scan)."""
    lowered = html.lower()
    return "<a" in lowered or "</body" in lowered


def open_pixel(base_url: str, open_token: str) -> str:
    src = html_entities.escape(f"{base_url.rstrip('/')}/t/o/{open_token}")
    return f'<img src="{src}" width="1" height="1" alt="" style="display:none">'


def _trackable_url(anchor: Anchor, base: str) -> str | None:
    """The decoded, stripped URL of a link we track, or None."""
    if anchor.href is None or anchor.href.raw is None or NOTRACK_ATTRIBUTE in anchor.names:
        return None
    url = html_entities.unescape(anchor.href.raw).strip()
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or url.startswith(f"{base}/t/"):
        return None
    return url


def _apply(document: str, edits: list[_Edit]) -> str:
    pieces: list[str] = []
    cursor = 0
    for edit in sorted(edits, key=lambda e: (e.start, e.end)):
        pieces += [document[cursor : edit.start], edit.text]
        cursor = edit.end
    pieces.append(document[cursor:])
    return "".join(pieces)
