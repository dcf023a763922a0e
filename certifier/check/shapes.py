"""The shape rule table: operator or function name -> shape rule.

It mirrors certifier.language.evaluate (FUNCTIONS and OPERATORS have exactly these keys; a test
checks it). A rule takes the operand shapes (tuples of ints) and the integer keyword arguments
and returns the result shape, or raises ShapeError. Shapes follow torch (= numpy) semantics:
for the model they are per-sample shapes, for data blocks whole-array shapes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ..language.primitives import ELEMENTWISE, PRIMITIVES

Shape = tuple[int, ...]


class ShapeError(Exception):
    """A rule's complaint. `at` says where: None (the whole expression), an int (that operand)
    or a str (that keyword's value)."""

    def __init__(self, message: str, hint: str | None = None, at: int | str | None = None):
        super().__init__(message)
        self.message, self.hint, self.at = message, hint, at


def show(shape: Shape | None) -> str:
    """[512, 3]; [] for a scalar."""
    return "?" if shape is None else "[" + ", ".join(_dim(d) for d in shape) + "]"


def _dim(d) -> str:
    return str(d) if not isinstance(d, int) or abs(d) < 10**15 else f"~1e{int(math.log10(abs(d)))}"


def count(n: int) -> str:
    """1,234,567; `at least 10^k` for counts of 16 digits or more (Python refuses to print an
    int of over 4300 digits)."""
    return f"{n:,}" if abs(n) < 10**15 else f"at least 10^{int(math.log10(abs(n)))}"


def size(shape: Shape) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


def broadcast(a: Shape, b: Shape) -> Shape | None:
    """numpy broadcasting of two shapes; None when they do not broadcast."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da != db and da != 1 and db != 1:
            return None
        out.append(db if da == 1 else da)
    return tuple(reversed(out))


def _binary(symbol: str) -> Callable:
    def rule(shapes: list[Shape], **kw) -> Shape:
        a, b = shapes
        out = broadcast(a, b)
        if out is None:
            raise ShapeError(f"shape mismatch in '{symbol}': {show(a)} and {show(b)}",
                             "shapes combine elementwise when, from the right, each pair of "
                             "dimensions is equal or one of them is 1")
        return out
    return rule


def _matmul(shapes: list[Shape], **kw) -> Shape:
    a, b = shapes
    if not a or not b:
        raise ShapeError(f"shape mismatch in '@': {show(a)} @ {show(b)}",
                         "'@' needs arrays with at least one dimension; use '*' to scale by a scalar")
    inner_a = a[-1]
    inner_b = b[0] if len(b) == 1 else b[-2]
    if inner_a != inner_b:
        raise ShapeError(f"shape mismatch in '@': {show(a)} @ {show(b)}",
                         f"the inner dimensions must agree ({_dim(inner_a)} \u2260 {_dim(inner_b)})")
    batch = broadcast(a[:-2], b[:-2])
    if batch is None:
        raise ShapeError(f"shape mismatch in '@': {show(a)} @ {show(b)}",
                         f"the leading (batch) dimensions {show(a[:-2])} and {show(b[:-2])} "
                         "do not broadcast")
    rows = a[-2:-1]  # () when a is 1-D
    cols = b[-1:] if len(b) >= 2 else ()
    return batch + rows + cols


def _same(shapes: list[Shape], **kw) -> Shape:
    return shapes[0]


def _axis(shape: Shape, axis: int) -> int:
    """Normalise an axis as torch does (a scalar behaves as one dimension for this purpose)."""
    ndim = max(len(shape), 1)
    if not -ndim <= axis < ndim:
        what = "a scalar" if not shape else f"shape {show(shape)}"
        raise ShapeError(f"axis {axis} is out of range for {what}",
                         f"the axis must be between {-ndim} and {ndim - 1}", at="axis")
    return axis % ndim


def _reduction(shapes: list[Shape], axis: int | None = None) -> Shape:
    (a,) = shapes
    if axis is None:
        return ()
    k = _axis(a, axis)
    return a[:k] + a[k + 1:]


def _softmax(shapes: list[Shape], axis: int = -1) -> Shape:
    (a,) = shapes
    _axis(a, axis)
    return a


def _logsumexp(shapes: list[Shape], axis: int = -1) -> Shape:
    return _reduction(shapes, axis)


@dataclass(frozen=True)
class Rule:
    infer: Callable[..., Shape]
    arity: int  # positional operands


_ELEMENTWISE = Rule(_same, 1)

# The table. Keys: the primitives of language/primitives.py, exactly.
SHAPE_RULES: dict[str, Rule] = {
    # operators
    **{name: Rule(_binary(PRIMITIVES[name].symbol), 2) for name in ("add", "sub", "mul", "div", "pow")},
    "matmul": Rule(_matmul, 2),
    "neg": Rule(_same, 1),
    # functions: every elementwise one keeps its shape
    **{name: _ELEMENTWISE for name in ELEMENTWISE},
    "sum": Rule(_reduction, 1),
    "mean": Rule(_reduction, 1),
    "softmax": Rule(_softmax, 1),
    "logsumexp": Rule(_logsumexp, 1),
}



def index_shape(shape: Shape, subscripts: list[int | tuple[int | None, int | None]]) -> Shape:
    """Shape after `a[s0, s1, ...]`: an int drops its dimension, (start, stop) slices it.
    Raises ShapeError with `at` = the subscript's position."""
    if not shape:
        raise ShapeError("a scalar cannot be indexed", "it has no dimensions; use it as it is", at=0)
    if len(subscripts) > len(shape):
        raise ShapeError(f"too many indices: {len(subscripts)} for shape {show(shape)}",
                         f"an array of shape {show(shape)} takes at most {len(shape)} "
                         f"ind{'ex' if len(shape) == 1 else 'ices'}", at=len(shape))
    out: list[int] = []
    for k, (sub, dim) in enumerate(zip(subscripts, shape)):
        if isinstance(sub, int):
            if not -dim <= sub < dim:
                raise ShapeError(f"index {sub} is out of range for a dimension of size {_dim(dim)}",
                                 f"indices run from 0 to {_dim(dim - 1)} (or -{_dim(dim)} to -1 from the end)",
                                 at=k)
            continue
        start, stop, _ = slice(*sub).indices(dim)
        length = max(0, stop - start)
        if length == 0:
            raise ShapeError(f"the slice selects nothing from a dimension of size {_dim(dim)}",
                             f"slice bounds run from 0 to {_dim(dim)}; a slice must keep at least one entry",
                             at=k)
        out.append(length)
    return tuple(out) + tuple(shape[len(subscripts):])
