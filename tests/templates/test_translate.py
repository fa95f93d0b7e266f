"""content/translate.py: the generated render gives exactly python-liquid's output, or hands the render
back to it (None) — over a corpus of templates × variables, in the HTML (escaping) and the text
environment; and the subset it covers stays covered (a translation that always gave up would pass the
equivalence checks and make no template faster)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from liquid.exceptions import LiquidError

from content.compile import compile_version
from content.errors import TemplateProblems
from content.render import render_template
from content.sandbox import MAX_LOOP_ITERATIONS, MAX_OUTPUT_CHARS, environment
from content.translate import translate
from schemas.templates import TemplateVersion

VALUES = [
    {},
    {"name": "Ana", "n": 3, "items": ["a", "b"], "user": {"first": "Bo", "tags": ["x", "y"], "n": 0}},
    {"name": "<b>Ana & 'Bo' \"C\"</b>", "n": 2.5, "items": [], "user": {}, "flag": False},
    {"name": "", "n": 0, "items": [1, 2.0, True, None, [3], {"k": "v"}], "user": None, "flag": True},
    {"name": None, "n": -1, "items": [{"t": "<i>", "s": "s1"}, {"t": "two"}], "user": {"first": 5}},
    {"name": "é ü 漢字 😀", "n": 10**20, "items": ["&"] * 3, "user": {"size": 7, "first": "F"}, "flag": "no"},
]

# Each source is translated; whether one render is handed back depends on the values.
TRANSLATED = [
    "plain text only, <b>no markup</b>",
    "Hi {{ name }}!",
    "{{ name | default: 'friend' }} {{ flag | default: 'x', allow_false: true }}",
    "{{ name | upcase }}|{{ name | downcase | append: '<&>' }}|{{ name | size }}",
    "{{ name | escape }}|{{ name | url_encode }}|{{ name | truncate: 4 }}|{{ name | strip_html }}",
    "{{ n | plus: 1 }}|{{ n | times: 2.5 }}|{{ n | divided_by: 2 }}|{{ n | modulo: 3 }}",
    "{{ items }}|{{ items | join: ', ' }}|{{ items | size }}|{{ items | first }}|{{ items | last }}",
    "{{ items[0] }}|{{ items[1] }}|{{ items[-1] }}|{{ items[9] }}|{{ items.size }}|{{ items.first }}",
    "{{ user.first }}|{{ user.tags[1] }}|{{ user.size }}|{{ user.last }}|{{ user.first.x }}",
    "{{ user }}|{{ user.n }}|{{ missing }}|{{ missing.deep.path }}|{{ n.x }}|{{ flag }}",
    "{{ 'lit<>' }}|{{ 5 }}|{{ 2.5 }}|{{ true }}|{{ nil }}|{{ 'a' | append: name }}",
    "{% if name %}yes {{ name }}{% elsif n > 1 %}many{% else %}no{% endif %}",
    "{% if n == 3 %}3{% endif %}{% if n != 3 %}not3{% endif %}{% if name == 'Ana' %}A{% endif %}",
    "{% if n >= 2 and n <= 10 %}mid{% endif %}{% if n < 0 or flag %}neg-or-flag{% endif %}",
    "{% if items contains 'a' %}has a{% endif %}{% if name contains 'An' %}An{% endif %}",
    "{% if items == empty %}E{% endif %}{% if name == blank %}B{% endif %}{% if user == nil %}N{% endif %}",
    "{% if flag == true %}T{% elsif flag == false %}F{% endif %}{% if missing == nil %}mn{% endif %}",
    "{% for i in items %}[{{ i }}]{% else %}none{% endfor %}",
    "{% for i in items %}{{ i.t | default: i }}-{{ i.s }}{% endfor %} after: {{ i }}",
    "{% for name in items %}{{ name }}{% endfor %}{{ name }}",
    "{% for a in items %}{% for b in user.tags %}{{ a }}{{ b }} {% endfor %}{% endfor %}",
    "{% for i in missing %}x{% else %}empty{% endfor %}{% for i in user.tags %}{{ i }}{% endfor %}",
    "<ul>\n{% for i in items %}\n  {% if i %}\n  {% endif %}\n{% endfor %}\n</ul>",
    "{%- if name -%}  {{ name }}  {%- endif -%}  |  {{- n -}}  ",
    "{% if name %}\n   \n{% else %}  {% endif %}end",
    "{{ n | divided_by: 0 }}",
    "{{ name | split: '' | reverse | join: '' }}",
]
# Each source keeps the interpreter for every render.
INTERPRETED = [
    "{% assign x = name %}{{ x }}",
    "{% for i in items %}{{ forloop.index }}{% endfor %}",
    "{% for i in (1..3) %}{{ i }}{% endfor %}",
    "{% for i in items limit: 1 %}{{ i }}{% endfor %}",
    "{% unless name %}x{% endunless %}",
    "{% capture c %}{{ name }}{% endcapture %}{{ c }}",
    "{{ partial }}{{ now }}",
    "{% comment %}x{% endcomment %}{% raw %}{{ y }}{% endraw %}",
    "{% case n %}{% when 3 %}three{% endcase %}",
    "{{ user[name] }}",
    "{% for i in items %}{% break %}{% endfor %}",
    "{% if (1..3) contains n %}x{% endif %}",
]


def outcome(template, values):
    try:
        return template.render(values)
    except LiquidError as exc:
        return type(exc)


@pytest.mark.parametrize("html", [True, False], ids=["html", "text"])
@pytest.mark.parametrize("source", TRANSLATED)
def test_the_generated_render_equals_python_liquid(source: str, html: bool) -> None:
    template = environment(html=html, partials={}).from_string(source)
    fast = translate(template)
    assert fast is not None
    handled = 0
    for values in VALUES:
        expected, got = outcome(template, values), fast(values)
        if got is not None:
            handled += 1
            assert got == expected, (source, values)
        # whatever the generated render hands back is for python-liquid, e.g. its error
    if "divided_by: 0" not in source:
        assert handled >= 4, "the translation gave up for most values"


@pytest.mark.parametrize("source", INTERPRETED)
def test_outside_the_subset_the_template_stays_interpreted(source: str) -> None:
    assert translate(environment(html=True, partials={}).from_string(source)) is None


def test_values_that_are_not_json_are_handed_back() -> None:
    fast = translate(environment(html=True, partials={}).from_string("{{ name.size }}"))
    assert fast is not None and fast({"name": "Ana"}) == "3" and fast({"name": ("a",)}) is None
    looped = translate(environment(html=True, partials={}).from_string("{% for i in d %}{{ i }}{% endfor %}"))
    assert looped is not None and looped({"d": {"k": "v"}}) is None and looped({"d": "s"}) is None
    assert looped({"d": ["<"]}) == "&lt;"


def test_caps_hand_the_render_back_so_python_liquid_raises_its_error() -> None:
    env = environment(html=True, partials={})
    loop = translate(env.from_string("{% for i in l %}{% for j in l %}.{% endfor %}{% endfor %}"))
    assert loop is not None
    side = int(MAX_LOOP_ITERATIONS**0.5)
    assert loop({"l": list(range(side))}) == "." * side * side
    assert loop({"l": list(range(side + 1))}) is None
    output = translate(env.from_string("{% for i in l %}{{ big }}{% endfor %}"))
    assert output is not None
    assert output({"l": [1] * 4, "big": "y" * (MAX_OUTPUT_CHARS // 4)}) == "y" * MAX_OUTPUT_CHARS
    assert output({"l": [1] * 4, "big": "y" * (MAX_OUTPUT_CHARS // 4) + "y"}) is None
    # python-liquid counts UTF-8 bytes, not characters
    assert output({"l": [1] * 4, "big": "é" * (MAX_OUTPUT_CHARS // 8) + "é"}) is None


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def version(**fields) -> TemplateVersion:
    values = dict(id="tpl_1", workspace="ws", version=1, name="t", created_at=NOW, template_created_at=NOW)
    return TemplateVersion(**(values | fields))


def rendered_or_problems(compiled, values):
    try:
        return render_template(compiled, values)
    except TemplateProblems as exc:
        return exc.problems


@pytest.mark.parametrize("values", VALUES)
def test_render_template_gives_the_same_result_with_and_without_the_translation(values) -> None:
    fast = compile_version(
        version(
            subject="{{ name | default: 'friend' }}, this week",
            html="<style>p { color: red }</style><table>{% for i in items %}<tr><td><p>{{ i }}</p>"
            "</td></tr>{% endfor %}</table><p>{% if flag %}{{ user.first }}{% endif %} {{ n | plus: 1 }}</p>",
        )
    )
    assert fast.fast_subject and fast.fast_html and fast.fast_text
    interpreted = dataclasses.replace(fast, fast_subject=None, fast_html=None, fast_text=None)
    assert rendered_or_problems(fast, values) == rendered_or_problems(interpreted, values)
