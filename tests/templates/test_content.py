"""content/: compiling and rendering without Redis or Ray — the sandbox, the caps, errors with positions,
MJML, CSS inlining and the derived text part."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from content.cache import CompiledCache
from content.compile import compile_version
from content.errors import TemplateProblems
from content.render import render_template
from content.sandbox import MAX_OUTPUT_CHARS
from schemas.templates import TemplateVersion, VariableSpec

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def version(**fields) -> TemplateVersion:
    values = dict(id="tpl_1", workspace="ws", version=1, name="t", created_at=NOW, template_created_at=NOW)
    values.update(fields)
    if "html" not in values and "mjml" not in values:
        values["html"] = "<p>hi</p>"
    return TemplateVersion(**values)


def render(values=None, **fields):
    return render_template(compile_version(version(**fields)), values or {})


def problems(**fields) -> list:
    with pytest.raises(TemplateProblems) as caught:
        compile_version(version(**fields))
    return caught.value.problems


def render_problems(values=None, **fields) -> list:
    with pytest.raises(TemplateProblems) as caught:
        render(values, **fields)
    return caught.value.problems


def test_variables_render_into_subject_html_and_text() -> None:
    out = render(
        {"first_name": "Ana"},
        subject="Welcome, {{ first_name | default: 'friend' }}",
        html="<p>Hi {{ first_name }}</p>",
        text="Hi {{ first_name }}",
    )
    assert (out.subject, out.html, out.text) == ("Welcome, Ana", "<p>Hi Ana</p>", "Hi Ana")
    assert render({}, subject="Welcome, {{ first_name | default: 'friend' }}").subject == "Welcome, friend"


def test_html_in_variables_is_escaped_in_html_but_not_in_text_or_subject() -> None:
    out = render({"n": "<script>x</script>&"}, subject="{{ n }}", html="<p>{{ n }}</p>", text="{{ n }}")
    assert out.html == "<p>&lt;script&gt;x&lt;/script&gt;&amp;</p>"
    assert out.text == out.subject == "<script>x</script>&"


def test_no_python_attributes_environment_or_files() -> None:
    html = "{{ x.__class__ }}|{{ x.__class__.__mro__ }}|{{ s.upper }}|{{ env }}|{{ os.environ }}"
    assert render({"x": {}, "s": "abc"}, html=html).html == "||||"
    # include/render name only templates frozen into the version: never a path on disk
    assert problems(html="{% include '/etc/passwd' %}")[0].code == "template_not_found"
    assert problems(html="{% render '../../etc/hosts' %}")[0].code == "template_not_found"


def test_partials_come_only_from_the_version_itself() -> None:
    out = render(
        {"n": "Ana"},
        html="<div>{% render 'tpl_footer', n: n %}</div>",
        partials={"tpl_footer": "<i>{{ n }}</i>"},
    )
    assert out.html.startswith("<div><i>Ana</i></div>")
    assert "Ana" in out.text and "<i>" not in out.text


def test_a_loop_past_the_cap_fails_instead_of_running_on() -> None:
    [problem] = render_problems(html="{% for i in (1..100000000) %}x{% endfor %}")
    assert problem.pointer == "#/html" and "loop" in problem.detail.lower()


def test_output_past_the_cap_fails() -> None:
    html = "{% for i in (1..5000) %}{{ big }}{% endfor %}"
    [problem] = render_problems({"big": "y" * 5000}, html=html)
    assert problem.pointer == "#/html" and 5000 * 5000 > MAX_OUTPUT_CHARS


def test_string_doubling_is_capped_by_the_namespace_limit() -> None:
    doubling = "{% assign s = 'xxxxxxxxxxxxxxxx' %}" + "{% assign s = s | append: s %}" * 40
    assert render_problems(html=doubling + "{{ s | size }}")[0].pointer == "#/html"


def test_syntax_errors_and_unknown_filters_have_pointer_line_and_column() -> None:
    found = problems(subject="{{ a | nosuchfilter }}", html="<p>\n  {% for %}\n</p>", text="{{ b | upcase }}")
    by_pointer = {p.pointer: p.detail for p in found}
    assert set(by_pointer) == {"#/subject", "#/html"}
    assert "nosuchfilter" in by_pointer["#/subject"] and "line 1, column 8" in by_pointer["#/subject"]
    assert "line 2, column 6" in by_pointer["#/html"]
    [unclosed] = problems(html="<p>\n{% if x %}\n</p>")
    assert "endif" in unclosed.detail and "line 3, column 5" in unclosed.detail
    mjml_problem = problems(html=None, mjml="<mjml><mj-body>\n{{ x | bogus }}</mj-body></mjml>")
    assert mjml_problem[0].pointer == "#/mjml" and "line 2, column 8" in mjml_problem[0].detail


def test_exactly_one_of_html_and_mjml() -> None:
    assert problems(html="<p/>", mjml="<mjml/>")[0].pointer == "#/html"
    assert problems(html=None)[0].pointer == "#/html"


def test_required_variables_and_declared_types() -> None:
    spec = {
        "first_name": VariableSpec(type="string", required=True),
        "count": VariableSpec(type="integer"),
        "vip": VariableSpec(type="boolean"),
    }
    found = render_problems({"count": "3", "vip": 1}, variables=spec)
    assert {(p.pointer, p.code) for p in found} == {
        ("#/variables/first_name", "missing_variable"),
        ("#/variables/count", "invalid_variable_type"),
        ("#/variables/vip", "invalid_variable_type"),
    }
    assert render({"first_name": "A", "count": 3, "vip": True}, variables=spec).html == "<p>hi</p>"
    assert (
        render_problems({"first_name": "A", "count": True}, variables=spec)[0].pointer == "#/variables/count"
    )


def test_mjml_becomes_responsive_html_with_inlined_css_and_a_text_part() -> None:
    mjml = """<mjml><mj-head><mj-style inline="inline">.note { color: #ff0000; }</mj-style></mj-head>
<mj-body><mj-section><mj-column>
<mj-text css-class="note">Hello {{ name }}</mj-text>
{% for item in items %}<mj-text>Item {{ item }}</mj-text>{% endfor %}
<mj-button href="https://acme.com/{{ name | url_encode }}">Open</mj-button>
</mj-column></mj-section></mj-body></mjml>"""
    out = render({"name": "Ana & Bo", "items": ["a", "b"]}, html=None, mjml=mjml)
    assert "@media" in out.html  # mrml's responsive columns
    assert "color: #ff0000" in out.html.replace("color:#ff0000", "color: #ff0000")
    assert "Hello Ana &amp; Bo" in out.html and "Item a" in out.html and "Item b" in out.html
    assert 'href="https://acme.com/Ana+%26+Bo"' in out.html
    assert "Hello Ana & Bo" in out.text and "Item b" in out.text and "<" not in out.text


def test_style_in_html_is_inlined_and_liquid_in_tables_stays_in_place() -> None:
    html = (
        "<html><head><style>td { color: blue }</style></head><body><table>"
        "{% for r in rows %}<tr><td>{{ r }}</td></tr>{% endfor %}</table></body></html>"
    )
    out = render({"rows": ["one", "two"]}, html=html)
    assert out.html.count('<td style="color: blue">') == 2 or out.html.count('style="color: blue;"') == 2
    assert out.html.index("one") < out.html.index("two") < out.html.index("</table>")
    assert out.text.split() == ["one", "two"]


def test_the_cache_compiles_a_version_once_and_is_bounded() -> None:
    cache = CompiledCache(max_entries=2)
    first = cache.get(version())
    assert cache.get(version()) is first
    cache.get(version(version=2))
    cache.get(version(version=3))
    assert len(cache) == 2 and cache.get(version()) is not first


def test_unclosed_liquid_markup_is_refused_in_linear_time() -> None:
    """python-liquid's lexer rescans the rest of the source for every unclosed `{{`: 40 KB of them cost
    two minutes of CPU at save. A linear scan refuses them first, with the position."""
    started = time.process_time()
    with pytest.raises(TemplateProblems) as caught:
        compile_version(version(html="<p>hi</p>" + "{{" * 200_000))
    assert time.process_time() - started < 0.5  # a cost bound: the old path was minutes
    [problem] = caught.value.problems
    assert (problem.pointer, problem.detail) == ("#/html", "unclosed {{ at line 1, column 10")


def test_a_lone_opening_inside_raw_is_text() -> None:
    compiled = compile_version(version(html="<p>{% raw %}{{ not liquid{% endraw %}</p>"))
    assert render_template(compiled, {}).html == "<p>{{ not liquid</p>"
