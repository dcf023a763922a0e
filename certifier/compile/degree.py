"""Which subexpressions are affine in theta, exactly, by structure (the degree table, one rule per
primitive): the subspace rule of the sound engine applies to affine models only."""
from __future__ import annotations

from typing import Callable

from ..language.ast import Expr
from ..language.primitives import PRIMITIVES

# --- which subexpressions are affine in theta: the degree table --------------------------------------
CONST, AFFINE, NONLINEAR = 0, 1, 2


def _deg_linear(*ds, **kw):
    return max(ds)


def _deg_product(a, b, **kw):
    if a == CONST or b == CONST:
        return max(a, b)
    return NONLINEAR


def _deg_div(a, b, **kw):
    return a if b == CONST else NONLINEAR


def _deg_nonlinear(*ds, **kw):
    return CONST if max(ds) == CONST else NONLINEAR


# Keys: the primitives, exactly: linear ones keep the degree, products and quotients have their
# own rules, every other primitive is nonlinear. `pow` is decided in `degree` (x ** 1 is affine,
# x ** 0 constant).
DEGREE_RULES: dict[str, Callable[..., int]] = {
    **{name: _deg_linear if p.linear else _deg_nonlinear for name, p in PRIMITIVES.items()},
    "mul": _deg_product, "matmul": _deg_product, "div": _deg_div,
}

# (the same test checks these keys; an unknown key counts as NONLINEAR, which is always safe)


def degree(e: Expr, params: set[str]) -> int:
    """CONST, AFFINE or NONLINEAR in the parameters (a structural, exact classification)."""
    op = e.op
    if op in ("number", "string", "none"):
        return CONST
    if op == "name":
        return AFFINE if e.attrs["id"] in params else CONST
    if op == "index":
        return degree(e.args[0], params)
    if op in ("slice", "list"):
        return max([CONST] + [degree(a, params) for a in e.args])
    if op == "pow":
        base, expo = (degree(a, params) for a in e.args)
        if expo == CONST and e.args[1].op == "number":
            p = float(e.args[1].attrs["value"])
            if p == 0:
                return CONST
            if p == 1:
                return base
        return _deg_nonlinear(base, expo)
    key = e.attrs["func"] if op == "call" else op
    return DEGREE_RULES.get(key, _deg_nonlinear)(*(degree(a, params) for a in e.args))
