"""A parsed Liquid template → one Python function, built once per compiled version (issue #12).

python-liquid interprets its syntax tree per render: a render context, a chain map per scope, a method
call and a buffer write per node. For the common subset of mail templates (text, outputs with filters,
`if`/`elsif`/`else`, `for` over a list) this module writes the equivalent Python source once and
`exec`s it, so a render is a few list appends. Everything that decides what the output is stays
python-liquid's own: its filter functions, its `to_liquid_string` (stringify and HTML escaping), its
truthiness and comparison functions, its `Undefined` objects, its literal values.

Two fallbacks keep the output identical to python-liquid's, including its errors:
- `translate` returns None for a template using anything outside the subset (`assign`, `render`,
  `forloop`, ranges, `limit:`, a filter that needs the render context, …): it is always interpreted;
- the generated function gives up (returns None) for one render whenever a value is outside what it
  handles exactly (a path into a string, a loop over a mapping), a filter raises, or a sandbox cap is
  reached; the caller then renders with python-liquid, which produces the output or the error.
So a cap costs one extra interpreted render; the generated code never produces output past one.
No source text reaches the generated code: template strings, names and values are constants passed in
its namespace; only generated identifiers appear in it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from liquid import BoundTemplate, Undefined, escape
from liquid.builtin.expressions.logical import _contains, _eq, _le, _lt, is_truthy
from liquid.stringify import to_liquid_string

from content import translate_nodes

FastRender = Callable[[Mapping[str, Any]], "str | None"]


class Bail(Exception):
    """Raised inside generated code: this render is for python-liquid to do."""


_MISSING = object()


def _plain_escape() -> Callable[[str], str]:
    """HTML escaping of a plain str exactly as python-liquid's `escape` (markupsafe's) does it, minus
    the `Markup` wrapper the output buffer drops anyway: half of what an escaped output cost."""
    try:
        from markupsafe import _escape_inner  # private, so checked against the public function below
    except ImportError:  # pragma: no cover  (another markupsafe)
        return lambda text: str(escape(text))
    probe = "<a href='x' title=\"y\">&amp;</a>"
    if _escape_inner(probe) != str(escape(probe)):  # pragma: no cover
        return lambda text: str(escape(text))
    return _escape_inner


def _item(obj: object, key: object, default: object) -> object:
    """One path step, as python-liquid's `RenderContext.get_item` does it for JSON values (`default`
    when there is nothing there); anything else (a tuple, a custom object) is left to python-liquid."""
    if type(obj) is dict:
        found = obj.get(key, _MISSING)
        if found is not _MISSING or type(key) is not str:
            return default if found is _MISSING else found
        if key == "size":
            return len(obj)
        if key == "first" and obj:
            return next(iter(obj.items()))
        return default
    if type(obj) is list:
        if type(key) is int:
            return obj[key] if -len(obj) <= key < len(obj) else default
        if key == "size":
            return len(obj)
        if key in ("first", "last") and obj:
            return obj[0] if key == "first" else obj[-1]
        return default
    if type(obj) is str:  # strings are not sequences here (string_sequences is off): only `size`
        return len(obj) if key == "size" else default
    if obj is _MISSING or obj is None or type(obj) in (int, float, bool):
        return default
    raise Bail


def _sequence(value: object) -> list | tuple:
    """What a `for` iterates: a list as is; nothing for null or a missing variable."""
    if type(value) is list:
        return value
    if value is None or isinstance(value, Undefined):
        return ()
    raise Bail


RUNTIME: dict[str, object] = {
    "Bail": Bail,
    "MISSING": _MISSING,
    "G": _item,
    "SEQ": _sequence,
    "S": to_liquid_string,
    "ESC": _plain_escape(),
    "T": is_truthy,
    "EQ": _eq,
    "LT": _lt,
    "LE": _le,
    "CT": _contains,
}


def translate(template: BoundTemplate) -> FastRender | None:
    """The generated render function for `template`, or None when it uses more than the subset."""
    env = template.env
    if (
        env.undefined is not Undefined
        or not env.suppress_blank_control_flow_blocks
        or env.string_sequences
        or env.string_first_and_last
        or type(template).render_with_context is not BoundTemplate.render_with_context
    ):
        return None
    huge = 1 << 62
    caps = {"LIMIT": env.output_stream_limit or huge, "LOOP_LIMIT": env.loop_iteration_limit or huge}
    try:
        source, constants = translate_nodes.function_source(template)
        namespace = {**RUNTIME, **caps, **constants}
        exec(compile(source, f"<liquid {template.name or 'template'}>", "exec"), namespace)  # noqa: S102
    except translate_nodes.Unsupported:
        return None
    except Exception:  # noqa: BLE001  (a syntax tree the writer misreads must not stop a save: interpret it)
        return None
    generated = cast("Callable[[Mapping[str, Any]], tuple[str, int]]", namespace["render"])
    limit = env.output_stream_limit

    def render(variables: Mapping[str, Any]) -> str | None:
        try:
            out, chars = generated(variables)
        except Exception:  # noqa: BLE001  (python-liquid renders it again: its output or its error)
            return None
        # python-liquid counts UTF-8 bytes: at most 4 per character, so the encode is rarely needed.
        if limit is not None and chars * 4 > limit and len(out.encode("utf-8")) > limit:
            return None
        return out

    return render
