"""The interval rule table: expression operator or function -> enclosure rule (the sound mode).

It mirrors certifier.language.evaluate (INTERVAL_RULES has exactly the keys of OPERATORS and
FUNCTIONS; a test checks it) and computes, over a box of parameters, enclosures of the model's
value AND of its derivative in theta, by interval forward mode: every rule maps
(value interval, derivative interval) pairs (`Dual`) to such a pair.

Arrays carry a leading batch axis (the data samples, or 1 for values that do not depend on the
sample); derivatives carry one more leading axis P (the parameter coordinates):

    value  lo/hi: (B, *s)        derivative lo/hi: (P, B, *s)        s = per-sample shape

Soundness: for every theta in the box (and every sample) the exact real value of the
subexpression lies in [value.lo, value.hi], and its exact derivative in theta (where it exists;
at a kink of relu or abs: every element of the Clarke generalized Jacobian) lies in the
derivative interval. Each rule is a correctly rounded numpy computation widened outward
(certifier/compile/rounding.py says which facts of float64 arithmetic it relies on). Literals,
`pi`, data and parameters denote the float64 numbers they are stored as.

The interval arithmetic itself is compile/iv.py, the degree table compile/degree.py, the model
over boxes compile/interval_model.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..diagnostics import Diagnostic
from ..language.ast import Expr
from ..language.evaluate import CONSTANTS, constant_int, subscript
from .iv import (
    MAX_POW,
    Iv,
    iv_abs,
    iv_add,
    iv_div,
    iv_ipow,
    iv_matmul,
    iv_mul,
    iv_neg,
    iv_of,
    iv_recip,
    iv_scale,
    iv_square,
    iv_sub,
    iv_sum,
    monotone,
)
from .rounding import (
    INF,
    down,
    gamma,
    nonneg_sum_upper,
    point_bounds,
    sanitize,
    up,
)


class NotSupported(Exception):
    """A construct the sound mode cannot enclose; carries the expression for its span."""

    def __init__(self, message: str, expr: Expr | None = None):
        super().__init__(message)
        self.message, self.expr = message, expr

    def diagnostic(self, path: str = "<spec>") -> Diagnostic:
        return Diagnostic("E104", f"{self.message}: not supported in the sound mode",
                          self.expr.span if self.expr is not None else None,
                          "use method sampled(...) for this model, or rewrite the expression "
                          "with the supported operations", path)


# --- the dual (value, derivative) type ------------------------------------------------------------
@dataclass
class Dual:
    v: Iv                 # (B, *s)
    d: Iv | None          # (P, B, *s), None when the value does not depend on theta
    nd: int               # per-sample ndim

    def __post_init__(self):
        if self.d is not None and self.d.shape[1:] != self.v.shape:
            shape = (self.d.shape[0],) + np.broadcast_shapes(self.d.shape[1:], self.v.shape)
            if shape[1:] != self.v.shape:
                self.v = Iv(np.broadcast_to(self.v.lo, shape[1:]),
                            np.broadcast_to(self.v.hi, shape[1:])) if not self.v.point else \
                    Iv(np.broadcast_to(self.v.lo, shape[1:]))
            self.d = Iv(np.broadcast_to(self.d.lo, shape), np.broadcast_to(self.d.hi, shape))


def expand_axis(x: Dual, nd: int) -> Dual:
    """Insert per-sample axes of length 1 (after the batch axis) up to nd dimensions, as
    broadcasting of per-sample shapes does."""
    k = nd - x.nd
    if k <= 0:
        return x
    vax = tuple(range(1, 1 + k))
    v = x.v.map(lambda z: np.expand_dims(z, vax))
    d = None if x.d is None else x.d.map(lambda z: np.expand_dims(z, tuple(a + 1 for a in vax)))
    return Dual(v, d, nd)


def _dadd(p: Iv | None, q: Iv | None) -> Iv | None:
    if p is None:
        return q
    if q is None:
        return p
    return iv_add(p, q)


def _dmul(factor: Iv, d: Iv | None) -> Iv | None:
    """factor (B, *s) times derivative (P, B, *s)."""
    return None if d is None else iv_mul(factor, d)


def _chain(a: Dual, v: Iv, fprime: Callable[[], Iv]) -> Dual:
    return Dual(v, None if a.d is None else iv_mul(fprime(), a.d), a.nd)


# --- operators -------------------------------------------------------------------------------------
def _binary(fn):
    def rule(a: Dual, b: Dual) -> Dual:
        nd = max(a.nd, b.nd)
        return fn(expand_axis(a, nd), expand_axis(b, nd), nd)
    return rule


@_binary
def _add(a, b, nd):
    return Dual(iv_add(a.v, b.v), _dadd(a.d, b.d), nd)


@_binary
def _sub(a, b, nd):
    return Dual(iv_sub(a.v, b.v), _dadd(a.d, None if b.d is None else iv_neg(b.d)), nd)


@_binary
def _mul(a, b, nd):
    return Dual(iv_mul(a.v, b.v), _dadd(_dmul(b.v, a.d), _dmul(a.v, b.d)), nd)


@_binary
def _div(a, b, nd):
    q = iv_div(a.v, b.v)
    if a.d is None and b.d is None:
        return Dual(q, None, nd)
    # d(a/b) = (da - q db) / b
    num = _dadd(a.d, None if b.d is None else iv_neg(iv_mul(q, b.d)))
    return Dual(q, iv_div(num, b.v), nd)


def _neg(a: Dual) -> Dual:
    return Dual(iv_neg(a.v), None if a.d is None else iv_neg(a.d), a.nd)


def _integer_exponent(b: Dual) -> int | None:
    if b.d is not None or not b.v.point or b.v.lo.size != 1:
        return None
    value = float(b.v.lo.reshape(-1)[0])
    if value != math.floor(value) or abs(value) > MAX_POW:
        return None
    return int(value)


def _pow(a: Dual, b: Dual) -> Dual:
    n = _integer_exponent(b)
    if n is not None:
        nd = max(a.nd, b.nd)
        a = expand_axis(a, nd)
        if n < 0:
            return _div(Dual(Iv(np.ones((1,) * (nd + 1))), None, nd), _pow(a, _const(-n)))
        v = iv_ipow(a.v, n)
        if a.d is None:
            return Dual(v, None, nd)
        if n == 0:
            return Dual(v, None, nd)
        fprime = iv_scale(iv_ipow(a.v, n - 1), float(n))
        return Dual(v, iv_mul(fprime, a.d), nd)
    # general exponent: a^b = exp(b log a) where a > 0 (elsewhere torch gives nan or a value
    # this rule does not reproduce: the enclosure is the whole line there)
    return _exp(_mul(b, _log(a)))


def _const(value: float) -> Dual:
    return Dual(Iv(np.array(value, dtype=np.float64).reshape(1)), None, 0)


def _matmul(a: Dual, b: Dual) -> Dual:
    """Per-sample matmul (torch semantics) with the batch axis in front."""
    a_vec, b_vec = a.nd == 1, b.nd == 1
    if a_vec:      # (B, k) -> (B, 1, k)
        a = Dual(a.v.map(lambda z: z[..., None, :]),
                 None if a.d is None else a.d.map(lambda z: z[..., None, :]), 2)
    if b_vec:      # (B, k) -> (B, k, 1)
        b = Dual(b.v.map(lambda z: z[..., :, None]),
                 None if b.d is None else b.d.map(lambda z: z[..., :, None]), 2)
    nd = max(a.nd, b.nd)
    a, b = expand_axis(a, nd), expand_axis(b, nd)
    v = iv_matmul(a.v, b.v)
    d = None
    if a.d is not None:
        d = iv_matmul(a.d, b.v)
    if b.d is not None:
        d = _dadd(d, iv_matmul(a.v, b.d))
    out_nd = nd
    if b_vec:
        v = v.map(lambda z: z[..., 0])
        d = None if d is None else d.map(lambda z: z[..., 0])
        out_nd -= 1
    if a_vec:
        v = v.map(lambda z: z[..., 0, :] if not b_vec else z[..., 0])
        d = None if d is None else d.map(lambda z: z[..., 0, :] if not b_vec else z[..., 0])
        out_nd -= 1
    return Dual(v, d, out_nd)


# --- functions ------------------------------------------------------------------------------------
def _tanh(a: Dual) -> Dual:
    t = monotone("tanh", a.v)
    # tanh' = 1 - tanh^2
    return _chain(a, t, lambda: _clip01(iv_sub(Iv(np.float64(1.0)), iv_square(t))))


def _clip01(x: Iv) -> Iv:
    return Iv(np.clip(x.lo, 0.0, 1.0), np.clip(x.hi, 0.0, 1.0))


def _relu(a: Dual) -> Dual:
    v = Iv(np.maximum(a.v.lo, 0.0), np.maximum(a.v.hi, 0.0)) if not a.v.point else \
        Iv(np.maximum(a.v.lo, 0.0))
    # derivative: 0 where x < 0, 1 where x > 0, [0, 1] (Clarke) where the interval reaches 0
    return _chain(a, v, lambda: Iv((a.v.lo > 0).astype(np.float64), (a.v.hi >= 0).astype(np.float64)))


def _abs(a: Dual) -> Dual:
    v = iv_abs(a.v)
    lo = np.where(a.v.lo > 0, 1.0, -1.0)
    hi = np.where(a.v.hi < 0, -1.0, 1.0)
    return _chain(a, v, lambda: Iv(lo, hi))


def sigmoid_iv(x: Iv) -> Iv:
    """1 / (1 + exp(-x)), increasing: bounds from exp bounds at the endpoints."""
    e_lo_at_hi, _ = point_bounds("exp", -x.hi)     # exp(-hi) from below
    _, e_hi_at_lo = point_bounds("exp", -x.lo)     # exp(-lo) from above
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        lo = down(1.0 / up(1.0 + e_hi_at_lo))
        hi = up(1.0 / down(1.0 + e_lo_at_hi))
    lo, hi = sanitize(lo, hi)
    return Iv(np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0))


def unimodal_s1ms(s: Iv) -> Iv:
    """{s (1 - s) : s in [lo, hi]} for 0 <= lo <= hi <= 1: concave, maximum 1/4 at s = 1/2."""
    def lower(z):
        return down(z * down(1.0 - z))

    def upper(z):
        return up(z * up(1.0 - z))
    lo = np.minimum(lower(s.lo), lower(s.hi))
    hi = np.maximum(upper(s.lo), upper(s.hi))
    hi = np.where((s.lo <= 0.5) & (s.hi >= 0.5), 0.25, hi)
    return Iv(np.maximum(lo, 0.0), np.minimum(hi, 0.25))


def _sigmoid(a: Dual) -> Dual:
    s = sigmoid_iv(a.v)
    return _chain(a, s, lambda: unimodal_s1ms(s))


def _softplus(a: Dual) -> Dual:
    # log1p(exp(x)), increasing; torch's softplus switches to x above 20 (threshold), where
    # |log1p(exp(x)) - x| < 2.1e-9: that difference is added to the enclosure (documented).
    e_lo, _ = point_bounds("exp", a.v.lo)
    _, e_hi = point_bounds("exp", a.v.hi)
    lo, _ = point_bounds("log1p", e_lo)
    _, hi = point_bounds("log1p", e_hi)
    lo = np.where(a.v.lo > 20.0, np.minimum(lo, a.v.lo), lo)
    hi = np.where(a.v.hi > 20.0, np.maximum(hi, a.v.hi), hi)
    lo = np.maximum(lo, 0.0)
    return _chain(a, iv_of(lo, hi), lambda: sigmoid_iv(a.v))


def _exp(a: Dual) -> Dual:
    v = monotone("exp", a.v)
    return _chain(a, v, lambda: v)


def _log(a: Dual) -> Dual:
    lo, hi = point_bounds("log", a.v.lo) if a.v.point else (point_bounds("log", a.v.lo)[0],
                                                            point_bounds("log", a.v.hi)[1])
    undefined = a.v.lo <= 0
    v = iv_of(np.where(undefined, -INF, lo), np.where(undefined, INF, hi))
    return _chain(a, v, lambda: iv_recip(a.v))


def _sqrt(a: Dual) -> Dual:
    with np.errstate(invalid="ignore"):
        lo, hi = down(np.sqrt(a.v.lo)), up(np.sqrt(a.v.hi))
    undefined = a.v.lo < 0
    v = iv_of(np.where(undefined, -INF, np.maximum(lo, 0.0)), np.where(undefined, INF, hi))
    # sqrt' = 1 / (2 sqrt x); unbounded at 0
    return _chain(a, v, lambda: iv_recip(iv_scale(v, 2.0)))


def _trig(name: str, a: Iv) -> Iv:
    """sin or cos over intervals: endpoint bounds, plus the extrema the interval contains."""
    lo_a, hi_a = point_bounds(name, a.lo)
    if a.point:
        return iv_of(lo_a, hi_a)
    lo_b, hi_b = point_bounds(name, a.hi)
    lo, hi = np.minimum(lo_a, lo_b), np.maximum(hi_a, hi_b)
    two_pi = 2 * math.pi
    # maxima at c_max + 2 k pi, minima at c_min + 2 k pi (c for sin: pi/2, -pi/2; cos: 0, pi)
    c_max, c_min = (math.pi / 2, -math.pi / 2) if name == "sin" else (0.0, math.pi)
    with np.errstate(invalid="ignore", over="ignore"):
        slack = 1e-9 * (1.0 + np.abs(a.lo) + np.abs(a.hi))

        def contains(c):
            t_lo = (a.lo - c) / two_pi - slack
            t_hi = (a.hi - c) / two_pi + slack
            return np.floor(t_hi) >= np.ceil(t_lo)
        wide = ~((a.hi - a.lo) < 6.0) | ~(np.abs(a.lo) <= 1024.0) | ~(np.abs(a.hi) <= 1024.0)
        hi = np.where(contains(c_max) | wide, 1.0, hi)
        lo = np.where(contains(c_min) | wide, -1.0, lo)
    return iv_of(np.maximum(lo, -1.0), np.minimum(hi, 1.0))


def _sin(a: Dual) -> Dual:
    return _chain(a, _trig("sin", a.v), lambda: _trig("cos", a.v))


def _cos(a: Dual) -> Dual:
    return _chain(a, _trig("cos", a.v), lambda: iv_neg(_trig("sin", a.v)))


def _reduce_axes(x: Dual, axis):
    """Axes of the value array (batch first) and of the derivative array for a per-sample axis."""
    if x.nd == 0:
        return None, None, 0
    if axis is None:
        ax = tuple(range(1, x.nd + 1))
        return ax, tuple(a + 1 for a in ax), 0
    a = int(axis) % x.nd + 1
    return a, a + 1, x.nd - 1


def _sum(x: Dual, axis=None) -> Dual:
    vax, dax, nd = _reduce_axes(x, axis)
    if vax is None:
        return x
    return Dual(iv_sum(x.v, vax), None if x.d is None else iv_sum(x.d, dax), nd)


def _mean(x: Dual, axis=None) -> Dual:
    vax, _, _ = _reduce_axes(x, axis)
    if vax is None:
        return x
    count = int(np.prod([x.v.shape[a] for a in (vax if isinstance(vax, tuple) else (vax,))]))
    s = _sum(x, axis)
    return Dual(_div_count(s.v, count), None if s.d is None else _div_count(s.d, count), s.nd)


def _div_count(a: Iv, count: int) -> Iv:
    with np.errstate(invalid="ignore"):
        return iv_of(down(a.lo / count), up(a.hi / count))


def _axis_of(x: Dual, axis) -> tuple[int, int]:
    a = int(axis) % max(x.nd, 1)
    return a + 1, a + 2


def _logsumexp(x: Dual, axis=-1) -> Dual:
    """Increasing in every argument: enclosure from the all-lo and all-hi vectors; derivative
    softmax(x) (enclosed by _softmax_iv)."""
    if x.nd == 0:
        return x
    vax, dax = _axis_of(x, axis)
    lo = _lse_point(x.v.lo, vax, lower=True)
    hi = _lse_point(x.v.hi, vax, lower=False)
    v = iv_of(lo, hi)
    if x.d is None:
        return Dual(v, None, x.nd - 1)
    s = _softmax_iv(x.v, vax)
    d = iv_sum(iv_mul(s, x.d), dax)
    return Dual(v, d, x.nd - 1)


def _lse_point(z: np.ndarray, axis: int, lower: bool) -> np.ndarray:
    """A lower (or upper) bound on log sum exp(z) along axis, z a double array."""
    m = np.max(z, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = Iv(down(z - m), up(z - m))
        e = monotone("exp", shifted)
        s = iv_sum(e, axis)
        lg_lo, _ = point_bounds("log", s.lo)
        _, lg_hi = point_bounds("log", s.hi)
        msq = np.squeeze(m, axis=axis)
        return down(lg_lo + msq) if lower else up(lg_hi + msq)


def _softmax_iv(x: Iv, axis: int) -> Iv:
    """softmax_i = 1 / sum_j exp(x_j - x_i): increasing in x_i, decreasing in x_j (j != i).
    Lower bound: x_i at lo, the others at hi (and the other way round)."""
    m = np.max(x.hi, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        e_lo_lo, _ = point_bounds("exp", down(x.lo - m))
        _, e_lo_hi = point_bounds("exp", up(x.lo - m))
        e_hi_lo, _ = point_bounds("exp", down(x.hi - m))
        _, e_hi_hi = point_bounds("exp", up(x.hi - m))
        tot_hi = nonneg_sum_upper(e_hi_hi, axis)            # sum over all j at hi, from above
        tot_lo = np.maximum(down(np.sum(e_lo_lo, axis=axis) * down(1.0 - 2 * gamma(x.shape[axis]))), 0.0)
        tot_hi = np.expand_dims(tot_hi, axis)
        tot_lo = np.expand_dims(tot_lo, axis)
        # lower: e_i(lo) / (e_i(lo) + sum_{j != i} e_j(hi)) <= e_i(lo) / (e_i(lo) + tot_hi - e_i(hi))...
        # use the monotone form p/(p + q): increasing in p, decreasing in q.
        q_hi = np.maximum(up(tot_hi - e_hi_lo), 0.0)     # sum_{j != i} e_j(hi) from above
        q_lo = np.maximum(down(tot_lo - e_lo_hi), 0.0)   # sum_{j != i} e_j(lo) from below
        lo = down(e_lo_lo / up(e_lo_lo + q_hi))
        hi = up(e_hi_hi / down(e_hi_hi + q_lo))
    lo, hi = sanitize(lo, hi)
    return Iv(np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0))


def _softmax(x: Dual, axis=-1) -> Dual:
    if x.nd == 0:
        return Dual(Iv(np.ones_like(x.v.lo)), None, 0)
    vax, dax = _axis_of(x, axis)
    s = _softmax_iv(x.v, vax)
    if x.d is None:
        return Dual(s, None, x.nd)
    # d s_i = s_i (dx_i - sum_j s_j dx_j)
    mean_d = iv_sum(iv_mul(s, x.d), dax)
    mean_d = mean_d.map(lambda z: np.expand_dims(z, dax))
    return Dual(s, iv_mul(s, iv_sub(x.d, mean_d)), x.nd)


# The table. Keys: the primitives of language/primitives.py, exactly.
INTERVAL_RULES: dict[str, Callable[..., Dual]] = {
    # operators
    "add": _add,
    "sub": _sub,
    "mul": _mul,
    "div": _div,
    "pow": _pow,
    "matmul": _matmul,
    "neg": _neg,
    # functions
    "tanh": _tanh,
    "relu": _relu,
    "sigmoid": _sigmoid,
    "softplus": _softplus,
    "exp": _exp,
    "log": _log,
    "sin": _sin,
    "cos": _cos,
    "sqrt": _sqrt,
    "abs": _abs,
    "sum": _sum,
    "mean": _mean,
    "softmax": _softmax,
    "logsumexp": _logsumexp,
}

# tests/test_interval.py checks that the keys are exactly evaluate's; a function added there without
# a rule here is reported by `enclose` as "not supported in the sound mode" at its span.


@dataclass(frozen=True)
class Walk:
    """One interpretation of the expression tree for `walk`: what a node becomes. enclose (Dual,
    value and derivative) and compile/interval_reverse.trace (the forward pass's Node) are two."""

    rules: Mapping[str, object]                           # the operators and functions it has a rule for
    const: Callable[[float], Any]                         # a literal, or a name not in env (CONSTANTS)
    index: Callable[[Any, tuple, int], Any]               # x[subs], with that many per-sample axes dropped
    call: Callable[[str, tuple, dict[str, int]], Any]     # a function of the rules on its arguments
    operator: Callable[[str, tuple], Any]                 # an operator of the rules on its arguments


def walk(e: Expr, env: dict, how: Walk):
    """The value of an expression in the interpretation how: names are looked up in env, then
    CONSTANTS; an operator or function without a rule in how.rules is NotSupported at its span
    (before its arguments are walked)."""
    op = e.op
    if op == "number":
        return how.const(float(e.attrs["value"]))
    if op == "name":
        name = e.attrs["id"]
        if name in env:
            return env[name]
        return how.const(CONSTANTS[name])
    if op == "index":
        x = walk(e.args[0], env, how)
        subs = tuple(subscript(s) for s in e.args[1:])
        return how.index(x, subs, sum(1 for s in subs if not isinstance(s, slice)))
    if op == "call":
        func = e.attrs["func"]
        if func not in how.rules:
            raise NotSupported(f"the function '{func}'", e)
        args = tuple(walk(a, env, how) for a in e.args)
        kwargs = {k: constant_int(v) for k, v in e.kwargs.items()}
        return how.call(func, args, kwargs)
    if op not in how.rules:
        raise NotSupported(f"the operator '{op}'", e)
    return how.operator(op, tuple(walk(a, env, how) for a in e.args))


def _index(x: Dual, subs: tuple, drop: int) -> Dual:
    v = x.v.map(lambda z: z[(slice(None),) + subs])
    d = None if x.d is None else x.d.map(lambda z: z[(slice(None), slice(None)) + subs])
    return Dual(v, d, x.nd - drop)


ENCLOSE = Walk(INTERVAL_RULES, _const, _index,
               call=lambda func, args, kwargs: INTERVAL_RULES[func](*args, **kwargs),
               operator=lambda op, args: INTERVAL_RULES[op](*args))


def enclose(e: Expr, env: dict[str, Dual]) -> Dual:
    """Enclosure of an expression; names are looked up in env, then CONSTANTS."""
    return walk(e, env, ENCLOSE)


def param_layout(model, checked) -> None:
    """Set model.names, shapes, sizes, offsets, m and theta0 (float64) from the checked params: the
    flat theta of Problem, for the interval models (the spec's and the population's)."""
    model.names = list(checked.params)
    model.shapes = [tuple(np.shape(checked.params[k])) for k in model.names]
    model.sizes = [int(np.prod(s)) if s else 1 for s in model.shapes]
    model.offsets = list(np.cumsum([0] + model.sizes[:-1]))
    model.m = int(sum(model.sizes))
    model.theta0 = np.concatenate([np.asarray(checked.params[k], dtype=np.float64).reshape(-1)
                                   for k in model.names]) if model.names else np.zeros(0)
