"""Cached template render per recipient (issue #12: ≤ 50 µs CPU for a typical 5 KB newsletter), printed
beside a bare python-liquid render of the same template source in the same run.

`python -m bench.templates` (also the `templates` phase of `python -m bench`, ~2 s). Ours is
`content.render.render_template` on a compiled version from the process cache (MJML/CSS/text already
done at compile time): variable checks plus three renders (subject, html, text) by the functions
translated from them at compile time (content/translate.py). Beside it: the same compiled version with
the translation switched off (python-liquid interpreting the three parts: the cost before issue #12),
and one `liquid.Template(html).render(...)` — what a bare Liquid render of the HTML costs with no
sandbox, no checks, no text part.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from datetime import UTC, datetime

from liquid import Template

from content.cache import compiled
from content.render import render_template
from schemas.templates import TemplateVersion, VariableSpec

ROUNDS = 5
PER_ROUND = 1_000

_ARTICLE = """<tr><td class="article"><h2>{{ a.title }}</h2><p>{{ a.summary }}</p>
<a href="https://acme.com/posts/{{ a.slug }}?u={{ subscriber_id }}">Read more</a></td></tr>"""
NEWSLETTER = (
    "<html><head><style>h2 { color: #223344; } .article { padding: 8px 0; }</style></head><body>"
    "<table><tr><td><p>Hello {{ first_name | default: 'friend' }},</p>"
    "<p>Here is what happened this week at Acme. "
    + "We shipped, we fixed, we wrote. "
    * 85
    + "</p></td></tr>"
    "{% for a in articles %}" + _ARTICLE + "{% endfor %}"
    "<tr><td><p>" + "Footer text with the small print that every newsletter carries. " * 12 + "</p>"
    '<a href="{{ unsubscribe_url }}">Unsubscribe</a></td></tr></table></body></html>'
)
VARIABLES = {
    "first_name": "Ana",
    "subscriber_id": "sub_01JABCDEFGHJKMNPQRSTVWXYZ",
    "unsubscribe_url": "https://acme.com/u/abc123",
    "articles": [
        {"title": f"Article {i}", "summary": "A short summary of the article. " * 3, "slug": f"post-{i}"}
        for i in range(5)
    ],
}


def _cpu_per_call_us(work) -> float:
    rounds = []
    for _ in range(ROUNDS):
        start = time.process_time()
        for _ in range(PER_ROUND):
            work()
        rounds.append((time.process_time() - start) / PER_ROUND * 1e6)
    return statistics.median(rounds)


def measure() -> dict[str, float]:
    now = datetime.now(UTC)
    version = TemplateVersion(
        id="tpl_bench",
        workspace="bench",
        version=1,
        name="newsletter",
        subject="This week at Acme, {{ first_name }}",
        html=NEWSLETTER,
        variables={"first_name": VariableSpec(type="string", required=True)},
        created_at=now,
        template_created_at=now,
    )
    cached = compiled(version)  # compile once, as the first send would
    interpreted = dataclasses.replace(cached, fast_subject=None, fast_html=None, fast_text=None)
    bare = Template(NEWSLETTER)
    size = len(render_template(compiled(version), VARIABLES).html)
    return {
        "rendered_html_bytes": float(size),
        "ours_us": _cpu_per_call_us(lambda: render_template(compiled(version), VARIABLES)),
        "interpreted_us": _cpu_per_call_us(lambda: render_template(interpreted, VARIABLES)),
        "bare_liquid_us": _cpu_per_call_us(lambda: bare.render(**VARIABLES)),
    }


def report() -> list[str]:
    figures = measure()
    return [
        f"template render per recipient ({figures['rendered_html_bytes'] / 1024:.1f} KB of HTML out)",
        f"  ours, cached (subject + html + text): {figures['ours_us']:7.1f} µs CPU  (target ≤ 50)",
        f"  same, interpreted by python-liquid:   {figures['interpreted_us']:7.1f} µs CPU",
        f"  bare python-liquid (html only):       {figures['bare_liquid_us']:7.1f} µs CPU",
    ]


def main() -> None:
    print("\n".join(report()))


if __name__ == "__main__":
    main()
