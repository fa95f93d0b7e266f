"""The source writer behind translate.py: python-liquid's syntax tree → the text of one function.

The function is `render(v) -> (output, characters)` where `v` holds the variables. Each node kind of
the subset maps to the statement python-liquid's own `render_to_output` amounts to; any other node or
expression raises `Unsupported` and the template stays interpreted. Values from the template (text,
names, literals, filters, prebuilt `Undefined`s) are constants `K<n>` in the function's namespace.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, cast

from liquid import BoundTemplate, Environment
from liquid.ast import BlockNode, Node
from liquid.builtin.content import ContentNode
from liquid.builtin.expressions import logical, primitive
from liquid.builtin.expressions.arguments import KeywordArgument, PositionalArgument
from liquid.builtin.expressions.filtered import Filter, FilteredExpression
from liquid.builtin.expressions.path import Path
from liquid.builtin.output import OutputNode
from liquid.builtin.tags.for_tag import ForNode
from liquid.builtin.tags.if_tag import IfNode
from liquid.expression import Expression

if TYPE_CHECKING:
    from liquid import RenderContext

# Names python-liquid resolves outside the variables (render namespace, built-ins, loop drops).
_RESERVED_ROOTS = frozenset({"partial", "template", "forloop", "tablerowloop", "now", "today"})
# Keys python-liquid answers for a mapping without the key (`size`, `first`) or treats apart.
_SPECIAL_KEYS = frozenset({"size", "first", "last"})
_LITERALS = (
    primitive.Nil,
    primitive.Empty,
    primitive.Blank,
    primitive.TrueLiteral,
    primitive.FalseLiteral,
    primitive.StringLiteral,
    primitive.IntegerLiteral,
    primitive.FloatLiteral,
)
_LOGICAL = (logical.LogicalAndExpression, logical.LogicalOrExpression)
_COMPARISONS = {
    logical.EqExpression: "EQ({l}, {r})",
    logical.NeExpression: "(not EQ({l}, {r}))",
    logical.LeExpression: "LE({l}, {r})",
    logical.GeExpression: "LE({r}, {l})",
    logical.LtExpression: "LT({t}, {l}, {r})",
    logical.GtExpression: "LT({t}, {r}, {l})",
    logical.ContainsExpression: "CT({t}, {l}, {r})",
}


class Unsupported(Exception):
    """The template uses something the translation does not cover: it stays interpreted."""


class _LiteralScope:
    """What a literal's `evaluate` reads from a render context: only whether output is escaped."""

    def __init__(self, autoescape: bool) -> None:
        self.autoescape = autoescape


class _Writer:
    def __init__(self, env: Environment) -> None:
        self.env = env
        self.lines: list[str] = []
        self.constants: dict[str, object] = {}
        self.loop_names: dict[str, str] = {}  # Liquid loop variable → Python local
        self.loops: list[str] = []  # Python locals holding the product of enclosing loop lengths
        self.literal_scope = _LiteralScope(env.autoescape)
        self.temporaries = 0

    def constant(self, value: object) -> str:
        name = f"K{len(self.constants)}"
        self.constants[name] = value
        return name

    def line(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    def block(self, nodes: list[Node], depth: int, *, blank: bool = False) -> None:
        """`blank`: python-liquid renders a whitespace-only block into a null buffer (its text is
        dropped, its tags still run)."""
        before = len(self.lines)
        for node in nodes:
            self.node(node, depth, blank=blank)
        if len(self.lines) == before:
            self.line(depth, "pass")

    def node(self, node: Node, depth: int, *, blank: bool) -> None:
        # Exact types: a subclass (another tag built on these) may render differently.
        if type(node) is ContentNode:
            if node.text and not blank:
                self.line(depth, f"w({self.constant(node.text)}); n += {len(node.text)}")
        elif type(node) is OutputNode:
            self.line(depth, f"x = {self.expression(node.expression)}")
            # to_liquid_string of a plain str is the str itself, escaped when escaping
            plain = "ESC(x)" if self.env.autoescape else "x"
            self.line(depth, f"s = {plain} if type(x) is str else S(x, {self.env.autoescape})")
            self.line(depth, "w(s); n += len(s)")
            self.line(depth, "if n > LIMIT: raise Bail")
        elif type(node) is IfNode:
            self.if_node(node, depth)
        elif type(node) is ForNode:
            self.for_node(node, depth)
        else:
            raise Unsupported(type(node).__name__)

    def body(self, block: BlockNode, depth: int) -> None:
        if type(block) is not BlockNode:
            raise Unsupported(type(block).__name__)
        self.block(block.nodes, depth, blank=block.blank)

    def if_node(self, node: IfNode, depth: int) -> None:
        self.line(depth, f"if {self.expression(node.condition)}:")
        self.body(node.consequence, depth + 1)
        for alternative in node.alternatives:
            self.line(depth, f"elif {self.expression(alternative.expression)}:")
            self.body(alternative.block, depth + 1)
        if node.default is not None:
            self.line(depth, "else:")
            self.body(node.default, depth + 1)

    def for_node(self, node: ForNode, depth: int) -> None:
        loop = node.expression
        if loop.limit or loop.offset or loop.reversed or loop.cols:
            raise Unsupported("for with limit, offset, reversed or cols")
        if not isinstance(loop.iterable, Path):
            raise Unsupported("for over a range or a literal")
        level = len(self.loops)
        items, item, product = f"q{level}", f"i{level}", f"m{level}"
        self.line(depth, f"{items} = SEQ({self.expression(loop.iterable)})")
        self.line(depth, f"if {items}:")
        outer = f" * {self.loops[-1]}" if self.loops else ""
        # python-liquid's cap is on the product of the lengths of the nested loops.
        self.line(depth + 1, f"{product} = len({items}){outer}")
        self.line(depth + 1, f"if {product} > LOOP_LIMIT: raise Bail")
        self.line(depth + 1, f"for {item} in {items}:")
        shadowed = self.loop_names.get(loop.identifier)
        self.loop_names[loop.identifier] = item
        self.loops.append(product)
        self.body(node.block, depth + 2)
        self.line(depth + 2, "if n > LIMIT: raise Bail")
        self.loops.pop()
        if shadowed is None:
            del self.loop_names[loop.identifier]
        else:
            self.loop_names[loop.identifier] = shadowed
        if node.default is not None:
            self.line(depth, "else:")
            self.body(node.default, depth + 1)

    def expression(self, expr: Expression) -> str:
        if type(expr) is FilteredExpression:
            return self.filtered(expr)
        if type(expr) is Path:
            return self.path(expr)
        if type(expr) in _LITERALS:
            # a literal's value reads only `autoescape` from the render context
            return self.constant(expr.evaluate(cast("RenderContext", self.literal_scope)))
        if type(expr) is logical.BooleanExpression:
            return f"T({self.expression(expr.expression)})"
        if type(expr) is logical.LogicalNotExpression:
            return f"(not T({self.expression(expr.right)}))"
        return self.binary(expr)

    def binary(self, expr: Expression) -> str:
        if type(expr) not in _COMPARISONS and type(expr) not in _LOGICAL:
            raise Unsupported(type(expr).__name__)
        operands: Any = expr  # every class in those two has `left` and `right`
        left, right = self.expression(operands.left), self.expression(operands.right)
        if type(expr) in _LOGICAL:
            op = "and" if type(expr) is logical.LogicalAndExpression else "or"
            return f"(T({left}) {op} T({right}))"
        return _COMPARISONS[type(expr)].format(l=left, r=right, t=self.constant(expr.token))

    def path(self, path: Path) -> str:
        root, *segments = path.path
        if not isinstance(root, str) or root in _RESERVED_ROOTS:
            raise Unsupported(f"path {path}")
        if any(type(segment) not in (str, int) for segment in segments):
            raise Unsupported(f"nested path {path}")
        # Missing is python-liquid's Undefined for the whole path; steps before the last pass MISSING on.
        undefined = self.constant(self.env.undefined(root, hint=f"{path} is undefined", token=path.token))
        code = self.loop_names.get(root)
        if code is None:
            code = f"v.get({self.constant(root)}, {'MISSING' if segments else undefined})"
        for index, segment in enumerate(segments, start=1):
            default = undefined if index == len(segments) else "MISSING"
            code = self.step(code, self.constant(segment), default, special=segment in _SPECIAL_KEYS)
        return code

    def step(self, code: str, key: str, default: str, *, special: bool) -> str:
        """One path step; a mapping and an ordinary key (the common case) inline, the rest in `G`."""
        if special:
            return f"G({code}, {key}, {default})"
        self.temporaries += 1
        name = f"o{self.temporaries}"
        fast, slow = f"{name}.get({key}, {default})", f"G({name}, {key}, {default})"
        return f"({fast} if type({name} := {code}) is dict else {slow})"

    def filtered(self, expr: FilteredExpression) -> str:
        code = self.expression(expr.left)
        for filter_ in expr.filters or ():
            code = self.filter_call(filter_, code)
        return code

    def filter_call(self, filter_: Filter, value: str) -> str:
        function = self.env.filters.get(filter_.name)
        if function is None or getattr(function, "with_context", False):
            raise Unsupported(f"filter {filter_.name}")
        if getattr(function, "with_environment", False):
            function = partial(function, environment=self.env)
        positional, keywords = [value], []
        for argument in filter_.args:
            if type(argument) is PositionalArgument:
                positional.append(self.expression(argument.value))
            elif type(argument) is KeywordArgument:
                keywords.append(f"{self.constant(argument.name)}: {self.expression(argument.value)}")
            else:
                raise Unsupported(type(argument).__name__)
        keyword_part = f", **{{{', '.join(keywords)}}}" if keywords else ""
        return f"{self.constant(function)}({', '.join(positional)}{keyword_part})"


def function_source(template: BoundTemplate) -> tuple[str, dict[str, object]]:
    """The source of `render(v)` and the constants it reads. Raises Unsupported."""
    writer = _Writer(template.env)
    writer.block(template.nodes, 1)
    head = ["def render(v):", "    out = []", "    w = out.append", "    n = 0"]
    source = "\n".join([*head, *writer.lines, '    return "".join(out), n', ""])
    return source, writer.constants
