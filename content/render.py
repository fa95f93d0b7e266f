"""A compiled template + one recipient's variables → `Rendered(subject, html, text)`.

The per-recipient path: check the declared variables (required ones present, types as declared), then
three Liquid renders, each by its translated function (translate.py) when it has one and that function
can do this recipient, otherwise by python-liquid. Anything a render hits (a cap, a filter given the
wrong type) is a `TemplateProblems` pointing at the part that failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from liquid import BoundTemplate
from liquid.exceptions import LiquidError

from content.compile import Compiled
from content.errors import ContentProblem, TemplateProblems, one_problem
from content.translate import FastRender
from schemas.templates import VariableSpec


class Rendered(msgspec.Struct, frozen=True):
    subject: str
    html: str
    text: str


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def render_template(compiled: Compiled, variables: Mapping[str, Any]) -> Rendered:
    problems = variable_problems(compiled.variables, variables)
    if problems:
        raise TemplateProblems(problems)
    return Rendered(
        subject=_render(compiled.subject, compiled.fast_subject, variables, "#/subject"),
        html=_render(compiled.html, compiled.fast_html, variables, "#/html"),
        text=_render(compiled.text, compiled.fast_text, variables, "#/text"),
    )


def variable_problems(declared: Mapping[str, VariableSpec], given: Mapping[str, Any]) -> list[ContentProblem]:
    problems = []
    for name, spec in declared.items():
        value = given.get(name)
        if value is None:
            if spec.required:
                problems.append(ContentProblem(f"#/variables/{name}", "required", "missing_variable"))
            continue
        expected = _TYPES.get(spec.type)
        # JSON true/false are Python bools, which are also ints: not a number here.
        if expected and (
            not isinstance(value, expected) or (bool not in expected and isinstance(value, bool))
        ):
            problems.append(
                ContentProblem(f"#/variables/{name}", f"expected {spec.type}", "invalid_variable_type")
            )
    return problems


def _render(
    template: BoundTemplate, fast: FastRender | None, variables: Mapping[str, Any], pointer: str
) -> str:
    if fast is not None:
        out = fast(variables)
        if out is not None:
            return out
    try:
        return template.render(variables)
    except LiquidError as exc:
        raise one_problem(pointer, f"could not be rendered: {exc.message}") from None
    except (RecursionError, MemoryError):
        raise one_problem(pointer, "could not be rendered: too deep or too large") from None
