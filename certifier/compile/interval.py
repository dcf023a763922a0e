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

A second, smaller table, DEGREE_RULES, says which subexpressions are affine in theta (exactly,
by structure): the subspace rule of the sound engine applies to affine models only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..diagnostics import Diagnostic
from ..language.ast import Expr
from ..language.evaluate import CONSTANTS, constant_int, subscript
from ..language.losses import LOSSES
from ..language.primitives import PRIMITIVES
from .rounding import (
    ETA,
    INF,
    check_environment,
    down,
    gamma,
    nonneg_matmul_upper,
    nonneg_sum_upper,
    point_bounds,
    sanitize,
    sum_bounds,
    up,
)

MAX_POW = 64   # integer exponents up to this are evaluated by repeated multiplication
POINT_CHUNK = 256   # forward mode at a point: parameter directions per pass (IntervalModel)


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


# --- intervals --------------------------------------------------------------------------------
class Iv:
    """An array of intervals [lo, hi] (float64). `point` when lo and hi are the same array."""

    __slots__ = ("lo", "hi")

    def __init__(self, lo, hi=None):
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = self.lo if hi is None else np.asarray(hi, dtype=np.float64)

    @property
    def point(self) -> bool:
        return self.lo is self.hi

    @property
    def shape(self):
        return self.lo.shape

    def map(self, fn) -> "Iv":
        return Iv(fn(self.lo)) if self.point else Iv(fn(self.lo), fn(self.hi))

    def __repr__(self):
        return f"Iv(lo={self.lo!r}, hi={self.hi!r})"


def _iv(lo, hi) -> Iv:
    lo, hi = sanitize(lo, hi)
    return Iv(lo, hi)


def mid_rad(a: Iv) -> tuple[np.ndarray, np.ndarray]:
    """(m, r) with [lo, hi] inside [m - r, m + r]; r = inf for unbounded entries."""
    if a.point:
        return a.lo, np.zeros_like(a.lo)
    with np.errstate(invalid="ignore", over="ignore"):
        m = 0.5 * a.lo + 0.5 * a.hi
        r = np.maximum(up(a.hi - m), up(m - a.lo))
    bad = ~np.isfinite(m) | ~np.isfinite(r)
    if bad.any():
        m = np.where(bad, 0.0, m)
        r = np.where(bad, INF, r)
    return m, r


def iv_add(a: Iv, b: Iv) -> Iv:
    with np.errstate(invalid="ignore"):
        if a.point and b.point:
            s = a.lo + b.lo
            return _iv(down(s), up(s))
        return _iv(down(a.lo + b.lo), up(a.hi + b.hi))


def iv_neg(a: Iv) -> Iv:
    return Iv(-a.lo) if a.point else Iv(-a.hi, -a.lo)


def iv_sub(a: Iv, b: Iv) -> Iv:
    return iv_add(a, iv_neg(b))


def iv_mul(a: Iv, b: Iv) -> Iv:
    with np.errstate(invalid="ignore", over="ignore"):
        if a.point and b.point:
            p = a.lo * b.lo
            return _iv(down(p), up(p))
        if b.point:
            a, b = b, a
        if a.point:
            p1, p2 = a.lo * b.lo, a.lo * b.hi
            return _iv(down(np.minimum(p1, p2)), up(np.maximum(p1, p2)))
        p1, p2, p3, p4 = a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi
        lo = np.minimum(np.minimum(p1, p2), np.minimum(p3, p4))
        hi = np.maximum(np.maximum(p1, p2), np.maximum(p3, p4))
        return _iv(down(lo), up(hi))


def iv_scale(a: Iv, c: float) -> Iv:
    """a * c for a double constant c."""
    return iv_mul(a, Iv(np.float64(c)))


def iv_square(a: Iv) -> Iv:
    """{x^2 : x in a}, tight (no dependency loss)."""
    with np.errstate(over="ignore"):
        lo2, hi2 = a.lo * a.lo, a.hi * a.hi
    if a.point:
        return _iv(np.maximum(down(lo2), 0.0), up(lo2))
    pos, neg = a.lo >= 0, a.hi <= 0
    lo = np.where(pos, lo2, np.where(neg, hi2, 0.0))
    hi = np.maximum(lo2, hi2)
    return _iv(np.maximum(down(lo), 0.0), up(hi))


def iv_recip(a: Iv) -> Iv:
    """1/x; the whole line when the interval contains 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        q1, q2 = 1.0 / a.lo, 1.0 / a.hi
        lo, hi = down(np.minimum(q1, q2)), up(np.maximum(q1, q2))
    zero = (a.lo <= 0) & (a.hi >= 0)
    return _iv(np.where(zero, -INF, lo), np.where(zero, INF, hi))


def iv_div(a: Iv, b: Iv) -> Iv:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if b.point:
            q1, q2 = a.lo / b.lo, a.hi / b.lo
            lo, hi = np.minimum(q1, q2), np.maximum(q1, q2)
        else:
            q = [a.lo / b.lo, a.lo / b.hi, a.hi / b.lo, a.hi / b.hi]
            lo = np.minimum(np.minimum(q[0], q[1]), np.minimum(q[2], q[3]))
            hi = np.maximum(np.maximum(q[0], q[1]), np.maximum(q[2], q[3]))
        lo, hi = down(lo), up(hi)
    zero = (b.lo <= 0) & (b.hi >= 0)
    return _iv(np.where(zero, -INF, lo), np.where(zero, INF, hi))


def iv_intersect(a: Iv, b: Iv) -> Iv:
    return Iv(np.maximum(a.lo, b.lo), np.minimum(a.hi, b.hi))


def iv_matmul(a: Iv, b: Iv) -> Iv:
    """numpy matmul of interval arrays by midpoint-radius:
    {AB} within fl(Am Bm) +- (gamma_k |Am||Bm| + k eta + |Am| Br + Ar (|Bm| + Br)).
    Exact (up to rounding) when one factor is a point."""
    k = a.shape[-1]
    Am, Ar = mid_rad(a)
    Bm, Br = mid_rad(b)
    with np.errstate(invalid="ignore", over="ignore"):
        C = np.matmul(Am, Bm)
        aAm, aBm = np.abs(Am), np.abs(Bm)
        rad = up(up(gamma(k) * nonneg_matmul_upper(aAm, aBm)) + k * ETA)
        if not b.point:
            rad = up(rad + nonneg_matmul_upper(aAm, Br))
        if not a.point:
            rad = up(rad + nonneg_matmul_upper(Ar, aBm if b.point else up(aBm + Br)))
        return _iv(down(C - rad), up(C + rad))


def iv_sum(a: Iv, axis) -> Iv:
    if a.point:
        lo, hi = sum_bounds(a.lo, a.lo, axis)
    else:
        lo, hi = sum_bounds(a.lo, a.hi, axis)
    return Iv(lo, hi)


def iv_contains_zero(a: Iv) -> np.ndarray:
    return (a.lo <= 0) & (a.hi >= 0)


def iv_abs(a: Iv) -> Iv:
    lo = np.where(a.lo >= 0, a.lo, np.where(a.hi <= 0, -a.hi, 0.0))
    hi = np.maximum(np.abs(a.lo), np.abs(a.hi))
    return Iv(lo, hi)


def iv_mig(a: Iv) -> np.ndarray:
    """min |x| over the interval (exact)."""
    return np.where(a.lo > 0, a.lo, np.where(a.hi < 0, -a.hi, 0.0))


def iv_mag(a: Iv) -> np.ndarray:
    return np.maximum(np.abs(a.lo), np.abs(a.hi))


def monotone(name: str, a: Iv, increasing: bool = True) -> Iv:
    """f([lo, hi]) for a monotone library function f, from guaranteed point bounds."""
    if a.point:
        lo, hi = point_bounds(name, a.lo)
        return _iv(lo, hi)
    lo_lo, _ = point_bounds(name, a.lo if increasing else a.hi)
    _, hi_hi = point_bounds(name, a.hi if increasing else a.lo)
    return _iv(lo_lo, hi_hi)


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


def _pow_nonneg_point(base: np.ndarray, n: int, upward: bool) -> np.ndarray:
    """base^n for base >= 0 by binary powering, each product rounded in one direction."""
    step = up if upward else down
    result = np.ones_like(base)
    b = base
    first = True
    while n:
        if n & 1:
            result = b.copy() if first else step(result * b)
            first = False
        n >>= 1
        if n:
            b = step(b * b)
    with np.errstate(invalid="ignore"):
        return np.maximum(result, 0.0) if not upward else result


def iv_ipow(a: Iv, n: int) -> Iv:
    """{x^n : x in a} for an integer n >= 0, tight."""
    if n == 0:
        return Iv(np.ones_like(a.lo))
    if n == 1:
        return a
    if n == 2:
        return iv_square(a)
    with np.errstate(over="ignore", invalid="ignore"):
        alo, ahi = np.abs(a.lo), np.abs(a.hi)
        if n % 2 == 0:
            mig = iv_mig(a)
            mag = np.maximum(alo, ahi)
            return _iv(_pow_nonneg_point(mig, n, False), _pow_nonneg_point(mag, n, True))
        # odd: increasing; x^n = sign(x) |x|^n
        lo = np.where(a.lo >= 0, _pow_nonneg_point(alo, n, False), -_pow_nonneg_point(alo, n, True))
        hi = np.where(a.hi >= 0, _pow_nonneg_point(ahi, n, True), -_pow_nonneg_point(ahi, n, False))
        return _iv(lo, hi)


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
    return _chain(a, _iv(lo, hi), lambda: sigmoid_iv(a.v))


def _exp(a: Dual) -> Dual:
    v = monotone("exp", a.v)
    return _chain(a, v, lambda: v)


def _log(a: Dual) -> Dual:
    lo, hi = point_bounds("log", a.v.lo) if a.v.point else (point_bounds("log", a.v.lo)[0],
                                                            point_bounds("log", a.v.hi)[1])
    undefined = a.v.lo <= 0
    v = _iv(np.where(undefined, -INF, lo), np.where(undefined, INF, hi))
    return _chain(a, v, lambda: iv_recip(a.v))


def _sqrt(a: Dual) -> Dual:
    with np.errstate(invalid="ignore"):
        lo, hi = down(np.sqrt(a.v.lo)), up(np.sqrt(a.v.hi))
    undefined = a.v.lo < 0
    v = _iv(np.where(undefined, -INF, np.maximum(lo, 0.0)), np.where(undefined, INF, hi))
    # sqrt' = 1 / (2 sqrt x); unbounded at 0
    return _chain(a, v, lambda: iv_recip(iv_scale(v, 2.0)))


def _trig(name: str, a: Iv) -> Iv:
    """sin or cos over intervals: endpoint bounds, plus the extrema the interval contains."""
    lo_a, hi_a = point_bounds(name, a.lo)
    if a.point:
        return _iv(lo_a, hi_a)
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
    return _iv(np.maximum(lo, -1.0), np.minimum(hi, 1.0))


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
        return _iv(down(a.lo / count), up(a.hi / count))


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
    v = _iv(lo, hi)
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


def enclose(e: Expr, env: dict[str, Dual]) -> Dual:
    """Enclosure of an expression; names are looked up in env, then CONSTANTS."""
    op = e.op
    if op == "number":
        return _const(float(e.attrs["value"]))
    if op == "name":
        name = e.attrs["id"]
        if name in env:
            return env[name]
        return _const(CONSTANTS[name])
    if op == "index":
        x = enclose(e.args[0], env)
        subs = tuple(subscript(s) for s in e.args[1:])
        drop = sum(1 for s in subs if not isinstance(s, slice))
        v = x.v.map(lambda z: z[(slice(None),) + subs])
        d = None if x.d is None else x.d.map(lambda z: z[(slice(None), slice(None)) + subs])
        return Dual(v, d, x.nd - drop)
    if op == "call":
        func = e.attrs["func"]
        rule = INTERVAL_RULES.get(func)
        if rule is None:
            raise NotSupported(f"the function '{func}'", e)
        args = [enclose(a, env) for a in e.args]
        kwargs = {k: constant_int(v) for k, v in e.kwargs.items()}
        return rule(*args, **kwargs)
    rule = INTERVAL_RULES.get(op)
    if rule is None:
        raise NotSupported(f"the operator '{op}'", e)
    return rule(*(enclose(a, env) for a in e.args))


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


# --- the compiled model over boxes ---------------------------------------------------------------------
@dataclass
class BoxEnclosure:
    """Enclosures over one box of parameters (all sound)."""

    lo: np.ndarray            # the box
    hi: np.ndarray
    center: np.ndarray        # a double point in the box
    F: Iv                     # outputs [n, k]
    J: Iv | None              # Jacobian [n k, m] (row (i, j) = d F(x_i)_j / d theta)
    r: Iv                     # residual F - y [n, k]
    L: Iv                     # loss (scalar arrays)
    grad: Iv | None           # grad L [m]
    F_center: Iv              # outputs at the center
    L_center: Iv


class IntervalModel:
    """The checked spec's model and loss as interval functions of theta (a loss of the table with an
    exact ||g||_D^2 = k L: least squares)."""

    def __init__(self, checked):
        check_environment()
        loss = LOSSES[checked.loss.name]
        if loss.exact_g is None:
            sound = ", ".join(n for n, l in LOSSES.items() if l.exact_g is not None)
            raise NotSupported(f"the loss '{checked.loss.name}' (the sound mode handles {sound})", None)
        self.loss = loss
        self.g_factor = float(loss.exact_g)    # ||g||_D^2 = g_factor L (language/losses.py)
        model = getattr(checked.spec, "model", None)
        if model is None or not isinstance(getattr(model, "body", None), Expr):
            raise NotSupported("a model that is not a spec expression (e.g. a Python model)", None)
        self.checked = checked
        self.names = list(checked.params)
        self.shapes = [tuple(np.shape(checked.params[k])) for k in self.names]
        self.sizes = [int(np.prod(s)) if s else 1 for s in self.shapes]
        self.offsets = list(np.cumsum([0] + self.sizes[:-1]))
        self.m = int(sum(self.sizes))
        self.theta0 = np.concatenate([np.asarray(checked.params[k], dtype=np.float64).reshape(-1)
                                      for k in self.names]) if self.names else np.zeros(0)
        self.x = np.asarray(checked.x, dtype=np.float64)
        self.y = np.asarray(checked.y, dtype=np.float64)
        self.n = int(self.x.shape[0])
        self.out_shape = tuple(checked.output_shape)
        self.k = int(np.prod(self.out_shape)) if self.out_shape else 1
        self.constants = {k: np.asarray(v, dtype=np.float64) for k, v in checked.constants.items()}
        self.body = checked.spec.model.body
        self.arg = checked.spec.model.arg
        self.yk = self.y.reshape(self.n, self.k)
        self.affine = degree(self.body, set(self.names)) <= AFFINE
        self.blocks = {name: (int(o), int(o) + s) for name, o, s in zip(self.names, self.offsets, self.sizes)}
        self.outputs(self.theta0, None, False)      # raises NotSupported (with its span) now, not mid-search

    # environment ---------------------------------------------------------------------------
    def _env(self, lo: np.ndarray, hi: np.ndarray, derivatives: bool) -> dict[str, Dual]:
        env: dict[str, Dual] = {}
        for name, value in self.constants.items():
            env[name] = Dual(Iv(value[None]), None, value.ndim)
        point = lo is hi
        for name, shape, off, size in zip(self.names, self.shapes, self.offsets, self.sizes):
            plo = lo[off:off + size].reshape((1,) + shape)
            v = Iv(plo) if point else Iv(plo, hi[off:off + size].reshape((1,) + shape))
            d = None
            if derivatives:
                eye = np.zeros((self.m, size))
                eye[off + np.arange(size), np.arange(size)] = 1.0
                d = Iv(eye.reshape((self.m, 1) + shape))
            env[name] = Dual(v, d, len(shape))
        env[self.arg] = Dual(Iv(self.x), None, self.x.ndim - 1)
        return env

    def outputs(self, lo: np.ndarray, hi: np.ndarray | None = None,
                derivatives: bool = True) -> tuple[Iv, Iv | None]:
        """(F [n, k], J [n k, m] or None) over the box [lo, hi] (hi None: the point lo)."""
        hi = lo if hi is None else hi
        if derivatives and lo is hi and self.m > POINT_CHUNK:
            return self._outputs_chunked(lo)
        out = enclose(self.body, self._env(lo, hi, derivatives))
        vshape = (self.n,) + self.out_shape
        F = Iv(np.broadcast_to(out.v.lo, vshape).reshape(self.n, self.k),
               np.broadcast_to(out.v.hi, vshape).reshape(self.n, self.k))
        if not derivatives:
            return F, None
        if out.d is None:
            J = Iv(np.zeros((self.n * self.k, self.m)))
        else:
            dshape = (self.m,) + vshape
            dlo = np.broadcast_to(out.d.lo, dshape).reshape(self.m, self.n * self.k)
            dhi = np.broadcast_to(out.d.hi, dshape).reshape(self.m, self.n * self.k)
            J = Iv(np.ascontiguousarray(dlo.T), np.ascontiguousarray(dhi.T))
        return F, J

    def _outputs_chunked(self, theta: np.ndarray) -> tuple[Iv, Iv]:
        """(F, J) at a point by forward mode over POINT_CHUNK parameter directions at a time (the
        same enclosures, in bounded memory: wide models have m in the thousands)."""
        vshape = (self.n,) + self.out_shape
        F, los, his = None, [], []
        for start in range(0, self.m, POINT_CHUNK):
            stop = min(self.m, start + POINT_CHUNK)
            env = self._env(theta, theta, False)
            for name, shape, off, size in zip(self.names, self.shapes, self.offsets, self.sizes):
                a, b = max(off, start), min(off + size, stop)
                if a < b:
                    eye = np.zeros((stop - start, size))
                    idx = np.arange(a, b)
                    eye[idx - start, idx - off] = 1.0
                    env[name] = Dual(env[name].v, Iv(eye.reshape((stop - start, 1) + shape)), len(shape))
            out = enclose(self.body, env)
            if F is None:
                F = Iv(np.broadcast_to(out.v.lo, vshape).reshape(self.n, self.k),
                       np.broadcast_to(out.v.hi, vshape).reshape(self.n, self.k))
            P = stop - start
            if out.d is None:
                los.append(np.zeros((self.n * self.k, P)))
                his.append(los[-1])
            else:
                los.append(np.broadcast_to(out.d.lo, (P,) + vshape).reshape(P, -1).T)
                his.append(np.broadcast_to(out.d.hi, (P,) + vshape).reshape(P, -1).T)
        return F, Iv(np.ascontiguousarray(np.concatenate(los, axis=1)),
                     np.ascontiguousarray(np.concatenate(his, axis=1)))

    def loss_of(self, F: Iv) -> tuple[Iv, Iv]:
        """(r = F - y, L = mean_i sum_j r_ij^2)."""
        r = iv_sub(F, Iv(self.yk))
        sq = iv_square(r)
        total = iv_sum(sq, None)
        return r, _iv(np.maximum(down(total.lo / self.n), 0.0), up(total.hi / self.n))

    def grad_of(self, J: Iv, r: Iv) -> Iv:
        """grad L = (2 / n) J^T r (exact factor 2; division by n rounded outward)."""
        JT = Iv(J.lo.T, J.hi.T) if not J.point else Iv(J.lo.T)
        g = iv_matmul(JT, Iv(r.lo.reshape(-1), r.hi.reshape(-1)) if not r.point else Iv(r.lo.reshape(-1)))
        return _iv(down(2.0 * g.lo / self.n), up(2.0 * g.hi / self.n))

    def at_point(self, theta: np.ndarray, derivatives: bool = True) -> BoxEnclosure:
        theta = np.asarray(theta, dtype=np.float64)
        F, J = self.outputs(theta, None, derivatives)
        r, L = self.loss_of(F)
        grad = self.grad_of(J, r) if J is not None else None
        return BoxEnclosure(theta, theta, theta, F, J, r, L, grad, F, L)

    def over_box(self, lo: np.ndarray, hi: np.ndarray) -> BoxEnclosure:
        """Enclosures over [lo, hi]: the naive forward-mode enclosure of F intersected with the
        mean-value form F(c) + J(box)(box - c); L likewise with L(c) + grad L(box).(box - c)."""
        c = np.minimum(np.maximum(0.5 * lo + 0.5 * hi, lo), hi)
        F, J = self.outputs(lo, hi, True)
        Fc, _ = self.outputs(c, None, False)
        delta = Iv(down(lo - c), up(hi - c))                 # theta - c
        Fmv = iv_add(Fc, Iv(*(z.reshape(self.n, self.k) for z in _lohi(iv_matmul(J, delta)))))
        F = iv_intersect(F, Fmv)
        r, L = self.loss_of(F)
        grad = self.grad_of(J, r)
        _, Lc = self.loss_of(Fc)
        dot = iv_sum(iv_mul(grad, delta), None)
        Lmv = iv_add(Lc, dot)
        L = iv_intersect(L, Iv(np.maximum(Lmv.lo, 0.0), Lmv.hi))
        return BoxEnclosure(lo, hi, c, F, J, r, L, grad, Fc, Lc)


def _lohi(a: Iv):
    return a.lo, a.hi
