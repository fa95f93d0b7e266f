"""A single-pass, linear-time scan of an HTML document for its `<a>` start tags and its `</body>`.

Why not `html.parser`: its incomplete-tag handling rescans from the last `<` on every feed step, so
crafted input (`"<a" * 50000`, 100 kB) held the event loop for 9 s. This scanner follows the
WHATWG tokenizer where it decides what is a tag: comments (`<!-- … -->`, `--!>`, the abrupt
`<!-->`), bogus comments (`<!…>`, `<?…>`, `</…>` not followed by a letter), raw-text elements whose
content is never markup (`<script>`, `<style>`, `<title>`, `<textarea>`, …), quoted attribute values
that may contain `>`, and a tag cut off by the end of the document (dropped, as browsers drop it).

Linear time: the cursor only moves forward; every search that may fail (a comment's end, a raw-text
end tag) remembers where it failed, so a document cannot make it scan the same tail twice; the
regular expressions are anchored, use possessive quantifiers and have no nested repetition.
"""

from __future__ import annotations

import re
from itertools import islice
from operator import itemgetter
from typing import NamedTuple

_WS = r"[\t\n\f\r ]"
_VALUE = r"""(?:"[^"]*+"|'[^']*+'|(?!["'])[^\t\n\f\r >]*+)"""
_NAME_START = r"[^\t\n\f\r />]"
_NAME_REST = r"[^\t\n\f\r />=]*+"
_END_OF_NAME = r"[\t\n\f\r />]"
_TAG_NAME = re.compile(r"[^\t\n\f\r />]*+")
_ATTRIBUTE = re.compile(rf"({_NAME_START}{_NAME_REST}){_WS}*+(?:(=){_WS}*+({_VALUE}))?+")
# Elements whose content the tokenizer never reads as markup (RAWTEXT and RCDATA); `plaintext` ends all.
_RAW_TEXT = ("script", "style", "title", "textarea", "xmp", "iframe", "noembed", "noframes")
_RAW_TEXT_END = {name: re.compile(rf"</{name}{_END_OF_NAME}", re.I | re.A) for name in _RAW_TEXT}
_COMMENT_END = re.compile(r"--!?>")
_ATTRIBUTES_TO_END = rf"(?:[\t\n\f\r /]++|{_NAME_START}{_NAME_REST}{_WS}*+(?:={_WS}*+{_VALUE})?+)*+>"
# An `<a>` without an `href` attribute is never rewritten: skipped in C like any other tag, so markup
# made of bare anchors (`"<a>" * 87_000`, 256 KiB: 450 ms in the Python-level path) costs a few ms.
_NOT_HREF = rf"(?!href{_END_OF_NAME}|href=)"
_ANCHOR_WITHOUT_HREF = (
    rf"(?:[\t\n\f\r /]++|{_NOT_HREF}{_NAME_START}{_NAME_REST}{_WS}*+(?:={_WS}*+{_VALUE})?+)*+>"
)
# What needs no Python-level attention, skipped in one C-level match: text, a lone `<`, every complete
# tag but `<a href>`, `</body>` and the raw-text/plaintext ones, complete comments and bogus comments.
_TAG_END = re.compile(_ATTRIBUTES_TO_END)
_SKIP = re.compile(
    rf"""(?:[^<]++
    |<(?![a-z/!?])
    |<(?!(?:a|plaintext|{"|".join(_RAW_TEXT)}){_END_OF_NAME})[a-z][^\t\n\f\r />]*+{_ATTRIBUTES_TO_END}
    |<a(?={_END_OF_NAME}){_ANCHOR_WITHOUT_HREF}
    |</(?!body{_END_OF_NAME})[a-z][^\t\n\f\r />]*+{_ATTRIBUTES_TO_END}
    |<!--(?:>|->|(?:[^-]++|-(?!-!?>))*+--!?>)
    |<!(?!--)[^>]*+>|<\?[^>]*+>|</[^a-z>][^>]*+>|</>
    )*+""",
    re.I | re.A | re.X,
)


class Attribute(NamedTuple):
    name: str  # ASCII-lowercased
    raw: str | None  # the value as written (entities not decoded), None for a bare attribute
    start: int  # span of the raw value in the document, quotes excluded (-1 when bare)
    end: int


class Anchor(NamedTuple):
    href: Attribute | None  # the first `href` (a repeated attribute is ignored, as browsers do)
    names: frozenset[str]  # every attribute name, lowercased


class Scan(NamedTuple):
    anchors: list[Anchor]
    body_end: int | None  # offset of the last `</body` end tag


class TooManyAnchors(ValueError):
    """More `<a href>` tags than the caller allows: each costs ~15 µs of Python-level work."""


class _Incomplete(Exception):
    """The document ends inside a tag or a comment: nothing after that point is markup."""


def scan_anchors(document: str, *, max_anchors: int | None = None) -> Scan:
    """Every `<a>` with an `href` (others are skipped in C); `TooManyAnchors` past `max_anchors`."""
    scanner = _Scanner(document, max_anchors)
    try:
        scanner.run()
    except _Incomplete:
        pass
    return Scan(scanner.anchors, scanner.body_end)


class _Scanner:
    def __init__(self, document: str, max_anchors: int | None) -> None:
        self.doc = document
        self.max_anchors = max_anchors
        self.anchors: list[Anchor] = []
        self.body_end: int | None = None
        self.comment_end_after = -1  # the last `--!?>` found; -2 once none is left

    def run(self) -> None:
        doc, at = self.doc, 0
        while (at := _SKIP.match(doc, at).end()) < len(doc):  # type: ignore[union-attr]  # *+ always matches
            following = doc[at + 1 : at + 2]
            if following.isascii() and following.isalpha():
                at = self._start_tag(at)
            elif following == "/":
                at = self._end_tag(at)
            elif doc.startswith("<!--", at):
                at = self._comment(at + 4)
            else:  # `<!` or `<?` that never closes
                at = self._to_tag_end(at + 2)

    def _start_tag(self, at: int) -> int:
        name_end = _TAG_NAME.match(self.doc, at + 1).end()  # type: ignore[union-attr]  # *+ always matches
        name = _ascii_lower(self.doc[at + 1 : name_end])
        after = self._tag_end(name_end)
        if name == "a":
            self.anchors.append(_anchor(self.doc, name_end, after - 1))
            if self.max_anchors is not None and len(self.anchors) > self.max_anchors:
                raise TooManyAnchors(f"more than {self.max_anchors} links")
        elif name == "plaintext":
            raise _Incomplete
        elif name in _RAW_TEXT_END:
            match = _RAW_TEXT_END[name].search(self.doc, after)
            if match is None:
                raise _Incomplete
            return match.start()
        return after

    def _end_tag(self, at: int) -> int:
        following = self.doc[at + 2 : at + 3]
        if not (following.isascii() and following.isalpha()):
            # `</>` is dropped, `</` at the end is text, anything else is a bogus comment.
            return at + 2 if following in ("", ">") else self._to_tag_end(at + 2)
        name_end = _TAG_NAME.match(self.doc, at + 2).end()  # type: ignore[union-attr]  # *+ always matches
        if _ascii_lower(self.doc[at + 2 : name_end]) == "body":
            self.body_end = at
        return self._tag_end(name_end)

    def _tag_end(self, at: int) -> int:
        """The offset just past the `>` that closes the tag whose attributes start at `at`."""
        match = _TAG_END.match(self.doc, at)
        if match is None:
            raise _Incomplete
        return match.end()

    def _comment(self, at: int) -> int:
        doc = self.doc
        for abrupt in (">", "->"):  # `<!-->` and `<!--->` are complete, empty comments
            if doc.startswith(abrupt, at):
                return at + len(abrupt)
        if self.comment_end_after == -2:
            raise _Incomplete
        if self.comment_end_after < at:
            match = _COMMENT_END.search(doc, at)
            if match is None:
                self.comment_end_after = -2
                raise _Incomplete
            self.comment_end_after = match.start()
        return doc.index(">", self.comment_end_after) + 1

    def _to_tag_end(self, at: int) -> int:
        end = self.doc.find(">", at)
        if end < 0:
            raise _Incomplete
        return end + 1


def _anchor(document: str, start: int, end: int) -> Anchor:
    # Attribute by attribute in C (findall, map, islice): an anchor with 50,000 attributes costs
    # no Python-level loop.
    found = _ATTRIBUTE.findall(document, start, end)
    names = list(map(_ascii_lower, map(itemgetter(0), found)))
    if "href" not in names:
        return Anchor(None, frozenset(names))
    index = names.index("href")
    match = next(islice(_ATTRIBUTE.finditer(document, start, end), index, None))
    name, equals, value = match.group(1, 2, 3)
    if equals is None:
        return Anchor(Attribute("href", None, -1, -1), frozenset(names))
    value_start, value_end = match.span(3)
    if value[:1] in ("'", '"'):
        value_start, value_end = value_start + 1, value_end - 1
    return Anchor(
        Attribute("href", document[value_start:value_end], value_start, value_end), frozenset(names)
    )


def _ascii_lower(name: str) -> str:
    # HTML lowercases ASCII only: str.lower() would turn the Kelvin sign into a `k`.
    return name.lower() if name.isascii() else name.translate(_ASCII_LOWER)


_ASCII_LOWER = {code: code + 32 for code in range(ord("A"), ord("Z") + 1)}
