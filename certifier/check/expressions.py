"""One walk over an expression: names (E101), calls (E104, E105), constants (E109) and shapes
(E103, via the table in shapes.py). It returns the expression's shape, or None after an error,
and never evaluates anything."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ..diagnostics import Collector, Span, source_lines
from ..language.ast import Expr
from ..language.evaluate import FUNCTIONS
from ..language.generators import GENERATORS
from ..language.primitives import FUNCTION_KEYWORDS
from .names import Scope, did_you_mean, join, listing
from .shapes import SHAPE_RULES, Shape, ShapeError, index_shape, show, size
from .shapes import count as count_text


def keyword_span(source: str, value: Expr, name: str) -> Span:
    """The span of `name` in `name = value` (call keywords keep only their value's span)."""
    span = value.span
    lines = source_lines(source)
    if span is not None and 1 <= span.line <= len(lines):
        before = lines[span.line - 1][: span.column - 1].rstrip()
        if before.endswith("="):
            before = before[:-1].rstrip()
            if before.endswith(name):
                start = len(before) - len(name) + 1
                return Span(span.line, start, span.line, start + len(name))
    return span


def spanning(first: Span, last: Span) -> Span:
    return Span(first.line, first.column, last.end_line, last.end_column)


def finite_literal(value) -> bool:
    """True when a number literal is a finite float64 (1e400 and 400-digit integers are not)."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def integer_literal(e: Expr) -> int | None:
    """The value of `3` or `-3` (the forms evaluate.constant_int reads), else None."""
    if e.op == "neg" and e.args:
        inner = integer_literal(e.args[0])
        return None if inner is None else -inner
    if e.op == "number" and isinstance(e.attrs.get("value"), int):
        return e.attrs["value"]
    return None


@dataclass
class Walker:
    collector: Collector
    scope: Scope
    source: str
    where: str = "the model"               # for messages: "in the model", "in a data block"
    generators: Callable[[Expr], Shape | None] | None = None  # None: generators are refused (E105)
    lists: bool = False                    # list literals allowed (data and params blocks)
    max_elements: int | None = None        # E205 for larger intermediate arrays
    _limit_reported: bool = False

    def error(self, code: str, message: str, span: Span | None, hint: str | None = None) -> None:
        self.collector.error(code, message, span, hint)

    def shape(self, e: Expr) -> Shape | None:
        out = self._shape(e)
        if out is not None and self.max_elements is not None and not self._limit_reported:
            count = size(out)
            if count > self.max_elements:
                self._limit_reported = True
                span = e.span
                if e.op == "call" and "shape" in e.kwargs:
                    span = e.kwargs["shape"].span
                self.error("E205", f"this array would have shape {show(out)}: {count_text(count)} entries, "
                           f"more than the limit of {self.max_elements:,}", span,
                           "use smaller shapes: the limit keeps certify from running out of memory")
                return None
        return out

    def _shape(self, e: Expr) -> Shape | None:
        op = e.op
        if op == "number":
            if not finite_literal(e.attrs["value"]):
                text = str(e.attrs.get("text", e.attrs["value"]))
                text = text if len(text) <= 16 else text[:12] + "..."
                self.error("E109", f"the number {text} is too large", e.span,
                           "numbers are float64: at most about 1.8e308")
                return None
            return ()
        if op == "name":
            return self.scope.lookup(e, self.collector)[1]
        if op == "string":
            self.error("E109", "a string cannot be used in an expression", e.span,
                       "strings name files, as in data from \"train.npz\"")
            return None
        if op == "list":
            return self._list(e)
        if op == "index":
            return self._index(e)
        if op == "call":
            return self._call(e)
        if op in SHAPE_RULES:
            shapes = [self.shape(a) for a in e.args]
            if any(s is None for s in shapes):
                return None
            return self._apply(e, op, shapes, {})
        self.error("E109", f"'{op}' cannot be used here", e.span, "see docs/language.md for expressions")
        return None

    def _apply(self, e: Expr, key: str, shapes: list[Shape], kw: dict[str, int]) -> Shape | None:
        try:
            return SHAPE_RULES[key].infer(shapes, **kw)
        except ShapeError as err:
            span = e.span
            if isinstance(err.at, int) and err.at < len(e.args):
                span = e.args[err.at].span
            elif isinstance(err.at, str) and err.at in e.kwargs:
                span = e.kwargs[err.at].span
            self.error("E103", err.message, span, err.hint)
            return None

    def _list(self, e: Expr) -> Shape | None:
        if not self.lists:
            self.error("E109", f"a list cannot be used in {self.where}", e.span,
                       "list literals write shapes, as in normal(shape=[64, 3]), and constants "
                       "in data and params blocks")
            return None
        if not e.args:
            self.error("E109", "an empty list has no values", e.span,
                       "write at least one value: [1, 2, 3]")
            return None
        shapes = [self.shape(a) for a in e.args]
        if any(s is None for s in shapes):
            return None
        for a, s in zip(e.args[1:], shapes[1:]):
            if s != shapes[0]:
                self.error("E103", f"list entries have different shapes: {show(shapes[0])} and {show(s)}",
                           a.span, "every entry of a list must have the same shape")
                return None
        return (len(e.args),) + shapes[0]

    def _index(self, e: Expr) -> Shape | None:
        base = self.shape(e.args[0])
        subscripts: list = []
        ok = True
        for sub in e.args[1:]:
            if sub.op == "slice":
                bounds = []
                for b in sub.args:
                    if b.op == "none":
                        bounds.append(None)
                        continue
                    value = integer_literal(b)
                    if value is None:
                        ok = False
                        self._bad_index(b)
                    bounds.append(value)
                subscripts.append(tuple(bounds))
            else:
                value = integer_literal(sub)
                if value is None:
                    ok = False
                    self._bad_index(sub)
                subscripts.append(value)
        if not ok or base is None:
            return None
        try:
            return index_shape(base, subscripts)
        except ShapeError as err:
            subs = e.args[1:]
            span = subs[err.at].span if isinstance(err.at, int) and err.at < len(subs) else e.span
            if isinstance(err.at, int) and err.at < len(subs) and len(subscripts) > len(base):
                span = spanning(subs[err.at].span, subs[-1].span)
            self.error("E103", err.message, span, err.hint)
            return None

    def _bad_index(self, e: Expr) -> None:
        self.error("E109", "an index must be an integer constant", e.span,
                   "write a whole number such as 0 or -1; a range is written 1:3")

    def _call(self, e: Expr) -> Shape | None:
        func = e.attrs["func"]
        fspan = e.attrs.get("fspan", e.span)
        if func in FUNCTIONS:
            return self._function(e, func)
        if func in GENERATORS:
            if self.generators is None:
                self.error("E105", f"the generator '{func}' cannot be used in {self.where}", fspan,
                           "generators (normal, uniform, zeros, ones) belong in data or params blocks")
                return None
            return self.generators(e)
        for a in e.args:  # report what is wrong inside, too
            self.shape(a)
        if func in self.scope.visible:
            self.error("E105", f"'{func}' is not a function", fspan,
                       f"'{func}' is an array; multiply with '@' or '*'")
            return None
        known = list(FUNCTIONS) + (list(GENERATORS) if self.generators is not None else [])
        self.error("E105", f"unknown function '{func}'", fspan,
                   join(did_you_mean(func, known), "the functions are: " + listing(FUNCTIONS)))
        return None

    def _function(self, e: Expr, func: str) -> Shape | None:
        rule = SHAPE_RULES[func]
        allowed = FUNCTION_KEYWORDS.get(func, ())
        ok = True
        if len(e.args) != rule.arity:
            ok = False
            form = f"{func}(a" + "".join(f", {k}=..." for k in allowed) + ")"
            if len(e.args) > rule.arity:
                span = spanning(e.args[rule.arity].span, e.args[-1].span)
            else:
                span = e.span
            self.error("E104", f"'{func}' takes {rule.arity} argument{'s' * (rule.arity != 1)}, "
                       f"got {len(e.args)}", span, f"write {form}")
        kw: dict[str, int] = {}
        for name, value in e.kwargs.items():
            if name not in allowed:
                ok = False
                hint = (f"'{func}' takes the keyword {listing(allowed)}" if allowed
                        else f"'{func}' takes no keywords")
                self.error("E104", f"'{func}' has no keyword '{name}'",
                           keyword_span(self.source, value, name), hint)
                continue
            number = integer_literal(value)
            if number is None:
                ok = False
                self.error("E109", f"{name} must be an integer constant", value.span,
                           f"write a whole number, such as {name}=0 or {name}=-1")
                continue
            kw[name] = number
        shapes = [self.shape(a) for a in e.args]
        if not ok or any(s is None for s in shapes):
            return None
        return self._apply(e, func, shapes, kw)

