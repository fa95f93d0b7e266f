"""What compiling or rendering a template reports: problems with a JSON pointer each."""

from __future__ import annotations

import msgspec


class ContentProblem(msgspec.Struct, frozen=True):
    """`pointer` into the template (`#/html`, `#/subject`, `#/mjml`, `#/text`) or into the render's
    variables (`#/variables/first_name`); `detail` names line and column where there is one."""

    pointer: str
    detail: str
    code: str = "template_error"


class TemplateProblems(Exception):
    """One or more problems; nothing was saved or rendered. The ingress answers 422 `template_error`."""

    def __init__(self, problems: list[ContentProblem]) -> None:
        super().__init__("; ".join(f"{p.pointer}: {p.detail}" for p in problems))
        self.problems = problems


def one_problem(pointer: str, detail: str, code: str = "template_error") -> TemplateProblems:
    return TemplateProblems([ContentProblem(pointer, detail, code)])
