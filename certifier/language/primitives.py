"""The primitive registry: every operator and function a spec can write, declared once.

Each interpretation keeps one rule table keyed by these names (JAX-interpreter style):
evaluate (language/evaluate.py), shapes (check/shapes.py), interval and degree
(compile/interval.py), the ball domain (analyse/sound/ball.py) and the two-layer fast path's
activations (compile/two_layer.py). What the tables derive from the flags below is derived, not
typed again: the elementwise shape rule, the degree rule, the keyword lists, the functions the
ball rule refuses and the activations the fast path must cover. tests/test_interval.py checks
that every table has a rule for every primitive. docs/architecture.md lists the places a new
primitive touches.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Primitive:
    name: str
    kind: str                        # 'operator' (written with a symbol) | 'function' (a call)
    arity: int                       # tensor arguments
    keywords: tuple[str, ...] = ()   # keyword arguments (constant integers)
    elementwise: bool = False        # the same scalar function at every entry (shape in = shape out)
    smooth: bool = False             # infinitely differentiable where defined
    lipschitz_derivative: bool = False   # its derivative is Lipschitz on bounded sets (the ball rule)
    linear: bool = False             # linear in its arguments (degree: affine stays affine)
    symbol: str | None = None        # an operator's symbol in the language


def _op(name, arity, symbol, **flags) -> Primitive:
    return Primitive(name, "operator", arity, symbol=symbol, **flags)


def _elementwise(name, smooth=True, lipschitz_derivative=True) -> Primitive:
    return Primitive(name, "function", 1, elementwise=True, smooth=smooth,
                     lipschitz_derivative=lipschitz_derivative)


PRIMITIVES: dict[str, Primitive] = {p.name: p for p in (
    # operators; `pow` is smooth for the constant exponents the checker allows, but the ball
    # domain has no rule for it; `mul` and `matmul` are bilinear (degree: a product)
    _op("add", 2, "+", smooth=True, lipschitz_derivative=True, linear=True),
    _op("sub", 2, "-", smooth=True, lipschitz_derivative=True, linear=True),
    _op("mul", 2, "*", smooth=True, lipschitz_derivative=True),
    _op("div", 2, "/", smooth=True, lipschitz_derivative=True),
    _op("pow", 2, "**", smooth=True),
    _op("matmul", 2, "@", smooth=True, lipschitz_derivative=True),
    _op("neg", 1, "-", smooth=True, lipschitz_derivative=True, linear=True),
    # elementwise functions
    _elementwise("tanh"),
    _elementwise("relu", smooth=False, lipschitz_derivative=False),
    _elementwise("sigmoid"),
    _elementwise("softplus"),
    _elementwise("exp"),
    _elementwise("log"),
    _elementwise("sin"),
    _elementwise("cos"),
    _elementwise("sqrt"),
    _elementwise("abs", smooth=False, lipschitz_derivative=False),
    # reductions and the softmax family (an optional axis)
    Primitive("sum", "function", 1, ("axis",), smooth=True, lipschitz_derivative=True, linear=True),
    Primitive("mean", "function", 1, ("axis",), smooth=True, lipschitz_derivative=True, linear=True),
    Primitive("softmax", "function", 1, ("axis",), smooth=True, lipschitz_derivative=True),
    Primitive("logsumexp", "function", 1, ("axis",), smooth=True, lipschitz_derivative=True),
)}

OPERATOR_NAMES = tuple(n for n, p in PRIMITIVES.items() if p.kind == "operator")
FUNCTION_NAMES = tuple(n for n, p in PRIMITIVES.items() if p.kind == "function")
ELEMENTWISE = tuple(n for n, p in PRIMITIVES.items() if p.elementwise)
FUNCTION_KEYWORDS: dict[str, tuple[str, ...]] = {n: PRIMITIVES[n].keywords for n in FUNCTION_NAMES
                                                 if PRIMITIVES[n].keywords}
