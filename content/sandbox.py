"""The Liquid environments every template is parsed and rendered in, and their limits.

Liquid is sandboxed by design: templates reach only the variables they are given (JSON values: no
Python objects, so no attribute access to Python internals) and the filters registered here. What
python-liquid leaves open we close:
- no file system: the only loader is a dict of the partials frozen into the version at save
  (`{% render 'tpl_…' %}` names another template of the same workspace; see compile.py);
- bounded work: loop iterations, output size, local namespace size (`assign`/`append` doubling) and
  context depth (recursive `render`) are capped; past a cap the render fails with `template_error`;
- HTML output is escaped by default (`autoescape`); subject and text parts are not HTML, so they
  render in an environment without escaping.
"""

from __future__ import annotations

from collections.abc import Mapping

from liquid import DictLoader, Environment

MAX_LOOP_ITERATIONS = 10_000
MAX_OUTPUT_CHARS = 2 * 1024 * 1024
MAX_LOCAL_NAMESPACE_BYTES = 1024 * 1024
MAX_CONTEXT_DEPTH = 10


class SandboxedEnvironment(Environment):
    loop_iteration_limit = MAX_LOOP_ITERATIONS
    output_stream_limit = MAX_OUTPUT_CHARS
    local_namespace_limit = MAX_LOCAL_NAMESPACE_BYTES
    context_depth_limit = MAX_CONTEXT_DEPTH


def environment(*, html: bool, partials: Mapping[str, str]) -> SandboxedEnvironment:
    """An environment for one compiled version: escaping for HTML, and only its own partials."""
    return SandboxedEnvironment(
        loader=DictLoader(dict(partials)), autoescape=html, strict_filters=True, extra=False
    )


BARE = SandboxedEnvironment(loader=DictLoader({}), autoescape=False, strict_filters=True)
