"""Interval arithmetic over float64 arrays, rounded outward (compile/rounding.py says which facts
of float64 arithmetic it relies on): the Iv type and its operations, for the rules of
compile/interval.py and the sound engine's linear algebra."""
from __future__ import annotations

import numpy as np

from .rounding import (
    ETA,
    INF,
    down,
    gamma,
    nonneg_matmul_upper,
    point_bounds,
    sanitize,
    sum_bounds,
    up,
)

MAX_POW = 64   # integer exponents up to this are evaluated by repeated multiplication


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


def iv_of(lo, hi) -> Iv:
    lo, hi = sanitize(lo, hi)
    return Iv(lo, hi)


def mid_rad(a: Iv) -> tuple[np.ndarray, np.ndarray]:
    """(m, r) with [lo, hi] inside [m - r, m + r]; r = inf for unbounded entries."""
    if a.point:
        return a.lo, np.zeros_like(a.lo)
    if a.lo.shape == a.hi.shape and a.lo.size >= _MID_CHUNK:
        return _mid_rad_chunked(a.lo, a.hi)
    return _mid_rad_plain(a.lo, a.hi)


def _mid_rad_plain(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", over="ignore"):
        m = 0.5 * lo + 0.5 * hi
        r = np.maximum(up(hi - m), up(m - lo))
    bad = ~np.isfinite(m) | ~np.isfinite(r)
    if bad.any():
        m = np.where(bad, 0.0, m)
        r = np.where(bad, INF, r)
    return m, r


_MID_CHUNK = 1 << 15     # large arrays go this many entries at a time (the passes stay in cache)
_BIG = float(np.finfo(np.float64).max)


def _mid_rad_chunked(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mid_rad's (m, r), the same doubles, fused over cache-sized chunks. r = up(max(hi - m, m - lo))
    (up is increasing, so this is max(up(hi - m), up(m - lo))); the max is >= 0 where lo <= hi, so
    after x + 0.0 (-0 to +0) up is the bit pattern + 1. Chunks with a negative max (lo > hi) or a
    non-finite entry take the plain formulas."""
    flo, fhi = np.ascontiguousarray(lo).reshape(-1), np.ascontiguousarray(hi).reshape(-1)
    m, r = np.empty(flo.shape), np.empty(flo.shape)
    tmp = np.empty(min(_MID_CHUNK, flo.size))
    with np.errstate(invalid="ignore", over="ignore"):
        for s in range(0, flo.size, _MID_CHUNK):
            lc, hc, mc, rc = flo[s:s + _MID_CHUNK], fhi[s:s + _MID_CHUNK], m[s:s + _MID_CHUNK], r[s:s + _MID_CHUNK]
            t = tmp[:lc.size]
            np.multiply(lc, 0.5, out=mc)
            np.multiply(hc, 0.5, out=t)
            mc += t
            np.subtract(hc, mc, out=rc)
            np.subtract(mc, lc, out=t)
            np.maximum(rc, t, out=rc)
            rc += 0.0
            top = rc.max()
            if not (np.isfinite(mc.sum()) and rc.min() >= 0.0 and top < _BIG):
                mc[...], rc[...] = _mid_rad_plain(lc, hc)     # up(_BIG) = inf: then m = 0 there
                continue
            bits = rc.view(np.int64)
            bits += 1
    return m.reshape(lo.shape), r.reshape(lo.shape)


def iv_add(a: Iv, b: Iv) -> Iv:
    with np.errstate(invalid="ignore"):
        if a.point and b.point:
            s = a.lo + b.lo
            return iv_of(down(s), up(s))
        return iv_of(down(a.lo + b.lo), up(a.hi + b.hi))


def iv_neg(a: Iv) -> Iv:
    return Iv(-a.lo) if a.point else Iv(-a.hi, -a.lo)


def iv_sub(a: Iv, b: Iv) -> Iv:
    return iv_add(a, iv_neg(b))


def iv_mul(a: Iv, b: Iv) -> Iv:
    with np.errstate(invalid="ignore", over="ignore"):
        if a.point and b.point:
            p = a.lo * b.lo
            return iv_of(down(p), up(p))
        if b.point:
            a, b = b, a
        if a.point:
            p1, p2 = a.lo * b.lo, a.lo * b.hi
            return iv_of(down(np.minimum(p1, p2)), up(np.maximum(p1, p2)))
        p1, p2, p3, p4 = a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi
        lo = np.minimum(np.minimum(p1, p2), np.minimum(p3, p4))
        hi = np.maximum(np.maximum(p1, p2), np.maximum(p3, p4))
        return iv_of(down(lo), up(hi))


def iv_scale(a: Iv, c: float) -> Iv:
    """a * c for a double constant c."""
    return iv_mul(a, Iv(np.float64(c)))


def iv_square(a: Iv) -> Iv:
    """{x^2 : x in a}, tight (no dependency loss)."""
    with np.errstate(over="ignore"):
        lo2, hi2 = a.lo * a.lo, a.hi * a.hi
    if a.point:
        return iv_of(np.maximum(down(lo2), 0.0), up(lo2))
    pos, neg = a.lo >= 0, a.hi <= 0
    lo = np.where(pos, lo2, np.where(neg, hi2, 0.0))
    hi = np.maximum(lo2, hi2)
    return iv_of(np.maximum(down(lo), 0.0), up(hi))


def iv_recip(a: Iv) -> Iv:
    """1/x; the whole line when the interval contains 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        q1, q2 = 1.0 / a.lo, 1.0 / a.hi
        lo, hi = down(np.minimum(q1, q2)), up(np.maximum(q1, q2))
    zero = (a.lo <= 0) & (a.hi >= 0)
    return iv_of(np.where(zero, -INF, lo), np.where(zero, INF, hi))


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
    return iv_of(np.where(zero, -INF, lo), np.where(zero, INF, hi))


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
        return iv_of(down(C - rad), up(C + rad))


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
        return iv_of(lo, hi)
    lo_lo, _ = point_bounds(name, a.lo if increasing else a.hi)
    _, hi_hi = point_bounds(name, a.hi if increasing else a.lo)
    return iv_of(lo_lo, hi_hi)


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
            return iv_of(_pow_nonneg_point(mig, n, False), _pow_nonneg_point(mag, n, True))
        # odd: increasing; x^n = sign(x) |x|^n
        lo = np.where(a.lo >= 0, _pow_nonneg_point(alo, n, False), -_pow_nonneg_point(alo, n, True))
        hi = np.where(a.hi >= 0, _pow_nonneg_point(ahi, n, True), -_pow_nonneg_point(ahi, n, False))
        return iv_of(lo, hi)
