"""Liquid markup hidden from the HTML tools that run at compile time, and restored after them.

MJML compilation and CSS inlining parse the source as markup: left in place, `{% for %}` between two
`<tr>` would be moved out of the table (HTML5 foster parenting) and `"` or `<` inside `{{ … }}` would be
escaped, changing the template. So each Liquid tag or output is replaced by an HTML comment (kept in
place by both tools, in text, between elements and inside attribute values) and put back afterwards.
The text derivation drops comments, so for it the placeholders are private-use characters, which it
keeps as text.
"""

from __future__ import annotations

import re
from collections.abc import Callable

LIQUID_MARKUP = re.compile(r"\{%.*?%\}|\{\{.*?\}\}", re.DOTALL)
_COMMENT = re.compile(r"<!--mlq(\d+)-->")
_PRIVATE = re.compile("\ue000(\\d+)\ue001")


def mask(source: str, *, as_text: bool = False) -> tuple[str, list[str]]:
    """`source` with every Liquid tag/output replaced by a numbered placeholder, and the originals."""
    originals: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        originals.append(match.group(0))
        index = len(originals) - 1
        return f"\ue000{index}\ue001" if as_text else f"<!--mlq{index}-->"

    return LIQUID_MARKUP.sub(placeholder, source), originals


def unmask(masked: str, originals: list[str], *, as_text: bool = False) -> str:
    pattern = _PRIVATE if as_text else _COMMENT
    return pattern.sub(lambda m: originals[int(m.group(1))], masked)


def masked_apply(source: str, tool: Callable[[str], str], *, as_text: bool = False) -> str:
    masked, originals = mask(source, as_text=as_text)
    return unmask(tool(masked), originals, as_text=as_text)
