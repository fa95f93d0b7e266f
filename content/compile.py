"""One template version → `Compiled`: parsed Liquid for the subject, the HTML and the text part.

Everything that does not depend on the recipient happens here, once per version: Liquid syntax and
filter checks against the *source* (so errors carry the line and column the author wrote), MJML → HTML
(mrml), CSS inlining (css-inline) and, when the version has no `text`, the text part derived from the
HTML (inscriptis). The Liquid markup is masked while those tools run (masking.py). What is left per
recipient is the Liquid render (render.py), translated to Python here where it can be (translate.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import css_inline
import mrml
from inscriptis import get_text
from liquid import BoundTemplate
from liquid.exceptions import LiquidError

from content.delimiters import first_unclosed
from content.errors import ContentProblem, TemplateProblems, one_problem
from content.masking import masked_apply
from content.sandbox import environment
from content.translate import FastRender, translate
from schemas.templates import TemplateVersion, VariableSpec

# mrml's output keeps its media queries in <style>: they are what makes it responsive, so they stay.
_INLINE_KEEP_STYLES = css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)
_INLINE = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)
PARTIAL_REFERENCE = re.compile(r"""\{%-?\s*(?:render|include)\s+['"]([^'"]{1,100})['"]""")
_TABLE_TAGS = re.compile(r"<(/?)(?:table|thead|tbody|tfoot|tr|td|th)\b", re.IGNORECASE)
_MJML_OPTIONS = mrml.ParserOptions(include_loader=mrml.noop_loader())


@dataclass(frozen=True, slots=True)
class Compiled:
    template_id: str
    version: int
    variables: Mapping[str, VariableSpec]
    subject: BoundTemplate
    html: BoundTemplate
    text: BoundTemplate
    # Each part translated to Python where it stays within the common subset (translate.py): the
    # per-recipient render then costs a few µs instead of an interpreted walk of the syntax tree.
    fast_subject: FastRender | None = None
    fast_html: FastRender | None = None
    fast_text: FastRender | None = None


def compile_version(version: TemplateVersion) -> Compiled:
    """Raises TemplateProblems (every problem found, each with its pointer) if the version is unusable."""
    if (version.html is None) == (version.mjml is None):
        raise one_problem("#/html", "give exactly one of html or mjml", "missing_content")
    body_pointer, body = ("#/html", version.html) if version.html is not None else ("#/mjml", version.mjml)
    assert body is not None  # one of the two, checked above
    html_env = environment(html=True, partials=version.partials)
    text_partials = {name: derive_text(source) for name, source in version.partials.items()}
    text_env = environment(html=False, partials=text_partials)
    problems: list[ContentProblem] = []
    subject = _parse(text_env, version.subject, "#/subject", version.partials, problems)
    _parse(html_env, body, body_pointer, version.partials, problems)
    text = None
    if version.text is not None:
        text = _parse(text_env, version.text, "#/text", version.partials, problems)
    if problems:
        raise TemplateProblems(problems)
    html_source = _to_html(body, mjml=version.mjml is not None, pointer=body_pointer)
    html = _parse(html_env, html_source, body_pointer, version.partials, problems)
    if text is None:
        text = _parse(text_env, derive_text(html_source), "#/text", version.partials, problems)
    if problems or subject is None or html is None or text is None:
        raise TemplateProblems(problems or [ContentProblem(body_pointer, "could not be compiled")])
    parts = (subject, html, text)
    return Compiled(version.id, version.version, version.variables, *parts, *map(translate, parts))


def derive_text(html_source: str) -> str:
    """The text part of an HTML source, Liquid markup kept where it stood. Table markup becomes blocks
    first: HTML parsers move text found between rows out of the table, which would move a `{% for %}`
    away from the rows it repeats (and mail layout tables read better as one block per cell anyway)."""
    untabled = _TABLE_TAGS.sub(r"<\1div", html_source)
    return masked_apply(untabled, lambda masked: get_text(masked).strip() + "\n", as_text=True)


def _to_html(body: str, *, mjml: bool, pointer: str) -> str:
    if not mjml:
        return masked_apply(body, _INLINE.inline) if "<style" in body.lower() else body
    try:
        rendered = masked_apply(body, lambda masked: mrml.to_html(masked, _MJML_OPTIONS).content)
    except Exception as exc:  # mrml raises its own error types for invalid MJML
        raise one_problem(pointer, f"invalid MJML: {exc}") from None
    return masked_apply(rendered, _INLINE_KEEP_STYLES.inline)


def _parse(
    env, source: str, pointer: str, partials: Mapping[str, str], problems: list[ContentProblem]
) -> BoundTemplate | None:
    unclosed = first_unclosed(source)
    if unclosed is not None:  # before python-liquid, whose lexer is quadratic on unclosed openings
        line, column = _line_col(source, unclosed)
        problems.append(
            ContentProblem(
                pointer, f"unclosed {source[unclosed : unclosed + 2]} at line {line}, column {column}"
            )
        )
        return None
    try:
        template = env.from_string(source)
    except LiquidError as exc:
        problems.append(ContentProblem(pointer, _located(exc, source)))
        return None
    analysis = template.analyze(include_partials=False)
    for name, spans in analysis.filters.items():
        if name not in env.filters:
            line, column = _line_col(source, spans[0].index)
            problems.append(
                ContentProblem(pointer, f"unknown filter {name!r} at line {line}, column {column}")
            )
    for match in PARTIAL_REFERENCE.finditer(source):
        if match.group(1) not in partials:
            line, column = _line_col(source, match.start())
            problems.append(
                ContentProblem(
                    pointer,
                    f"line {line}, column {column}: no template {match.group(1)!r} in this workspace",
                    "template_not_found",
                )
            )
    return template


def referenced_partials(*sources: str | None) -> set[str]:
    """The template ids that `{% render '…' %}` / `{% include '…' %}` name in these sources."""
    return {m.group(1) for s in sources if s for m in PARTIAL_REFERENCE.finditer(s)}


def _line_col(source: str, index: int) -> tuple[int, int]:
    line = source.count("\n", 0, index) + 1
    return line, index - (source.rfind("\n", 0, index) + 1) + 1


def _located(exc: LiquidError, source: str) -> str:
    context = exc.context()
    message = str(exc.message or type(exc).__name__)
    if context is None:  # python-liquid gives no token for errors found at the end of the source
        line, column = _line_col(source, len(source))
        return f"{message} at the end (line {line}, column {column})"
    return f"{message} at line {context[0]}, column {context[1] + 1}"
