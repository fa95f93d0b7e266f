"""Click tracking and the open pixel: rewrite the links of an HTML body, touching nothing else.

The stdlib HTML parser finds the `<a>` tags (case, quoting, entities, comments and `<script>` are
handled the way browsers tokenize them); only the characters of each tracked `href` value are
replaced, so the rest of the document stays byte-identical (it may be DKIM-signed and diffed).

Tracked: `http`/`https` links. Left alone: `mailto:`, `tel:`, `#anchors`, relative links, links with
a `data-mailers-notrack` attribute, and links already pointing at our own `/t/` endpoints (the
unsubscribe link must stay an unsubscribe link). Each distinct URL gets one index into the list
returned (stored with the message); the click token carries the index, so the redirect can only
lead to a URL that was in the message.
"""

from __future__ import annotations

import html as html_entities
import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import NamedTuple

from security.machine_opens import is_machine_open

__all__ = ["is_machine_open", "open_pixel", "rewrite_html"]

NOTRACK_ATTRIBUTE = "data-mailers-notrack"
# The same tokenization as html.parser's (CPython 3.11) start-tag parsing; spans found here are
# cross-checked against the parser's decoded attributes, and a tag is left alone if they differ.
_TAG_NAME = re.compile(r"<[a-zA-Z][^\t\n\r\f />\x00]*(?:\s|/(?!>))*")
_ATTRIBUTE = re.compile(
    r"""((?<=['"\s/])[^\s/>][^\s/=>]*)(\s*=+\s*('[^']*'|"[^"]*"|(?!['"])[^>\s]*))?(?:\s|/(?!>))*"""
)


class _Attribute(NamedTuple):
    name: str
    value: str | None
    start: int  # span of the raw value inside the tag text, quotes excluded
    end: int


class _Edit(NamedTuple):
    start: int
    end: int
    text: str


class _AnchorFinder(HTMLParser):
    """Collects each `<a>` start tag (offset, raw text, decoded attributes) and the `</body>` offset."""

    def __init__(self, document: str) -> None:
        super().__init__(convert_charrefs=True)
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", document)]
        self.anchors: list[tuple[int, str, list[tuple[str, str | None]]]] = []
        self.body_end: int | None = None
        self.feed(document)
        self.close()

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        text = self.get_starttag_text()
        if tag == "a" and text is not None:
            self.anchors.append((self._offset(), text, attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self.body_end = self._offset()


def rewrite_html(
    html: str, *, base_url: str, make_click_token: Callable[[int], str], open_token: str | None
) -> tuple[str, list[str]]:
    """The tracked document and the original URLs in index order."""
    base = base_url.rstrip("/")
    finder = _AnchorFinder(html)
    index_of: dict[str, int] = {}
    edits: list[_Edit] = []
    for offset, tag_text, attrs in finder.anchors:
        href = _trackable_href(tag_text, attrs, base)
        if href is None or html[offset : offset + len(tag_text)] != tag_text:
            continue
        index = index_of.setdefault(href.url, len(index_of))
        click_url = f"{base}/t/c/{make_click_token(index)}"
        edits.append(_Edit(offset + href.start, offset + href.end, html_entities.escape(click_url)))
    if open_token is not None:
        at = finder.body_end if finder.body_end is not None else len(html)
        edits.append(_Edit(at, at, open_pixel(base, open_token)))
    return _apply(html, edits), list(index_of)


def open_pixel(base_url: str, open_token: str) -> str:
    src = html_entities.escape(f"{base_url.rstrip('/')}/t/o/{open_token}")
    return f'<img src="{src}" width="1" height="1" alt="" style="display:none">'


class _Href(NamedTuple):
    url: str  # decoded and stripped
    start: int
    end: int


def _trackable_href(tag_text: str, attrs: list[tuple[str, str | None]], base: str) -> _Href | None:
    spans = _attribute_spans(tag_text)
    if [(span.name, span.value) for span in spans] != attrs:
        return None
    if any(span.name == NOTRACK_ATTRIBUTE for span in spans):
        return None
    href = next((span for span in spans if span.name == "href"), None)
    if href is None or href.value is None:
        return None
    url = href.value.strip()
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or url.startswith(f"{base}/t/"):
        return None
    return _Href(url, href.start, href.end)


def _attribute_spans(tag_text: str) -> list[_Attribute]:
    name_match = _TAG_NAME.match(tag_text)
    position = name_match.end() if name_match else len(tag_text)
    spans: list[_Attribute] = []
    while (match := _ATTRIBUTE.match(tag_text, position)) is not None:
        name, rest, raw = match.group(1, 2, 3)
        position = match.end()
        if not rest:
            spans.append(_Attribute(name.lower(), None, -1, -1))
            continue
        start, end = match.span(3)
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            start, end = start + 1, end - 1
        value = tag_text[start:end]
        spans.append(_Attribute(name.lower(), html_entities.unescape(value) if value else value, start, end))
    return spans


def _apply(document: str, edits: list[_Edit]) -> str:
    pieces: list[str] = []
    cursor = 0
    for edit in sorted(edits, key=lambda e: (e.start, e.end)):
        pieces += [document[cursor : edit.start], edit.text]
        cursor = edit.end
    pieces.append(document[cursor:])
    return "".join(pieces)
