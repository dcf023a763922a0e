"""Constant expressions: `512`, `1/sqrt(512)`, `2*pi`. Checked with the same walk as every other
expression, then evaluated with language.evaluate; range checks report E109 at the value."""
from __future__ import annotations

import math

from ..diagnostics import Collector
from ..language.ast import Expr
from ..language.evaluate import evaluate
from .expressions import Walker, integer_literal
from .names import Scope
from .shapes import show

NUMBER_HINT = "write a number or a constant expression, such as 0.5 or 1/sqrt(512)"
MAX_SEED = 2**63 - 1   # a signed 64-bit integer: torch.Generator.manual_seed and numpy take it
SEED_HINT = "seeds are whole numbers 0, 1, 2, ... up to 2^63 - 1 = 9223372036854775807"


def fmt(value: float) -> str:
    if isinstance(value, int) and abs(value) >= 10**20:    # a 300-digit literal: its magnitude
        return f"~1e{int(math.log10(abs(value)))}"
    if isinstance(value, int) or (math.isfinite(value) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return f"{value:g}"


def constant(e: Expr, collector: Collector, source: str, what: str,
             hint: str | None = None) -> float | int | None:
    """The value of a constant scalar expression, or None after reporting why it is not one."""
    hint = hint or NUMBER_HINT
    exact = integer_literal(e)
    if exact is not None:
        return exact
    if e.op == "name" and e.attrs["id"] in ("auto", "init"):
        collector.error("E109", f"'{e.attrs['id']}' is not allowed for {what}", e.span, hint)
        return None
    before = len(collector.items)
    scope = Scope(hint=f"{what} must be a constant: numbers, pi and functions of them")
    shape = Walker(collector, scope, source, where=what).shape(e)
    if shape is None or len(collector.items) > before:
        return None
    if shape != ():
        collector.error("E109", f"{what} must be a single number, not an array of shape {show(shape)}",
                        e.span, hint)
        return None
    try:
        value = float(evaluate(e, {}).item())
    except Exception as exc:  # evaluation of a checked constant should not fail; report, never raise
        collector.error("E109", f"cannot evaluate {what}: {exc}", e.span, hint)
        return None
    if not math.isfinite(value):
        collector.error("E109", f"{what} is not a finite number", e.span,
                        "look for a division by zero or the log of a non-positive number")
        return None
    return value


def number(e: Expr, collector: Collector, source: str, what: str, *, minimum: float | None = None,
           strict: bool = False, integer: bool = False, hint: str | None = None,
           maximum: float | None = None) -> float | int | None:
    """A constant with range checks: value >= minimum (> when strict), <= maximum; whole when integer."""
    value = constant(e, collector, source, what, hint)
    if value is None:
        return None
    hint = hint or NUMBER_HINT
    if integer:
        if not isinstance(value, int) and not value.is_integer():
            collector.error("E109", f"{what} must be a whole number, got {fmt(value)}", e.span, hint)
            return None
        value = int(value)
    elif isinstance(value, int) and abs(value) > 2**1000:
        collector.error("E109", f"{what} is too large", e.span, hint)
        return None
    else:
        value = float(value)
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        if minimum == 0:
            need = "positive" if strict else "zero or positive"
        else:
            need = f"{'greater than' if strict else 'at least'} {fmt(minimum)}"
        collector.error("E109", f"{what} must be {need}, got {fmt(value)}", e.span, hint)
        return None
    if maximum is not None and value > maximum:
        collector.error("E109", f"{what} must be at most {fmt(maximum)}, got {fmt(value)}", e.span, hint)
        return None
    return value
