"""Directed rounding for the sound mode: float64 numpy with outward widening.

Facts relied on (IEEE 754 binary64, round-to-nearest, gradual underflow; `check_environment`
verifies the mode at run time):

- +, -, *, / and sqrt are correctly rounded: the computed result is the exact result rounded to
  the nearest double, so `nextafter(result, +inf)` is >= the exact result and
  `nextafter(result, -inf)` is <= it (also in the subnormal range, where the error is at most half
  the spacing 2^-1074 and nextafter moves by a whole spacing). `up` / `down` below.
- Sums and dot products in any order (numpy's pairwise summation, BLAS blocking, FMA):
  |fl(sum x_i) - sum x_i| <= gamma_{k-1} sum |x_i|, and for products
  |fl(A B) - A B| <= gamma_k |A| |B| + k * 2^-1074 entrywise (k the inner dimension; the last
  term covers underflow), gamma_k = k u / (1 - k u), u = 2^-53 (Higham, Accuracy and Stability of
  Numerical Algorithms, 2nd ed., section 3.1 and Lemma 3.1; section 2.1 for underflow).
- Library exp, log, log1p, tanh, sin, cos, arcsin are NOT correctly rounded (arcsin: the
  population enclosures' angles, compile/interval_population.py; glibc lists asin at 1 ulp). Their documented or measured
  worst errors are a few ulps: glibc's manual ("Known Maximum Errors in Math Functions") lists at
  most 1-2 ulp for these on x86_64; P. Zimmermann, "Accuracy of Mathematical Functions in Single,
  Double, Extended Double and Quadruple Precision" (2021, hal-03141101) measures glibc, Intel's
  libm/SVML, AMD libm and others at <= 4 ulp for them in double precision. We widen every such
  result by REL_MARGIN = 2^-40 (relative; 2^12 = 4096 ulp of the result, three orders of
  magnitude above the worst reported error) plus ABS_MARGIN = 2^-1000 (absolute, for results in
  the subnormal range), and sin/cos also by 2^-50 absolute, for arguments |x| <= TRIG_LIMIT only
  (beyond it [-1, 1] is returned). The tests check the margin against python-flint's arb (a
  rigorous ball arithmetic) on many points; `set_elementary("arb")` evaluates the endpoints with
  arb instead, which removes the reliance on the libm (slower: a Python loop per endpoint).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

U = 2.0 ** -53                 # unit roundoff of float64
ETA = 2.0 ** -1074             # smallest positive subnormal
INF = math.inf
REL_MARGIN = 2.0 ** -40        # relative widening of library elementary functions
ABS_MARGIN = 2.0 ** -1000      # absolute widening (subnormal results)
TRIG_ABS_MARGIN = 2.0 ** -50   # extra absolute widening of sin and cos
TRIG_LIMIT = 1024.0            # |x| above which sin/cos enclosures are [-1, 1]

_ELEMENTARY = {"mode": "margin"}


_BITS_MIN = 256       # arrays from this size step their bit patterns (equal results, ~8x faster)


def up(x):
    """The next double above x (an upper bound on the exact value x was rounded from):
    nextafter(x, +inf), bit for bit, also for -0.0, the infinities and NaN."""
    if isinstance(x, np.ndarray) and x.dtype == np.float64 and x.size >= _BITS_MIN:
        return _step_bits(x, 1)
    return np.nextafter(x, INF)


def down(x):
    """nextafter(x, -inf), bit for bit."""
    if isinstance(x, np.ndarray) and x.dtype == np.float64 and x.size >= _BITS_MIN:
        return _step_bits(x, -1)
    return np.nextafter(x, -INF)


def _step_bits(x: np.ndarray, direction: int) -> np.ndarray:
    """nextafter(x, direction * inf) by stepping the int64 bit pattern: doubles of one sign are
    ordered as their patterns, so the neighbour away from zero is pattern + 1 and towards zero
    pattern - 1 (in int64, a negative double's pattern is negative: (i >> 63) | 1 is -1 there and
    +1 for the others; ~(i >> 63) | 1 the opposite). The patterns stepping past an end are fixed
    afterwards: +-0 go to the smallest subnormal of the direction's sign, NaN and the infinity of
    the direction's sign stay as they are (the other infinity steps to the largest finite double,
    as nextafter does). Large arrays go _CHUNK entries at a time, so that the passes over a chunk
    stay in cache (4-5x faster on [64, 266240] arrays; the same doubles)."""
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(flat.shape, dtype=np.float64)
    for s in range(0, flat.size, _CHUNK):
        _step_chunk(flat[s:s + _CHUNK], direction, out[s:s + _CHUNK])
    return out.reshape(x.shape)


_CHUNK = 1 << 15      # entries of a large array stepped at a time (256 KiB: the passes stay in cache)


def _step_chunk(x: np.ndarray, direction: int, y: np.ndarray) -> None:
    """_step_bits of the contiguous 1-D x into y."""
    i = x.view(np.int64)
    s = y.view(np.int64)
    np.right_shift(i, 63, out=s)
    if direction < 0:
        np.invert(s, out=s)
    s |= 1
    s += i
    with np.errstate(invalid="ignore"):
        keep = ~(x < INF) if direction > 0 else ~(x > -INF)      # NaN, and +inf (-inf going down)
    np.copyto(y, x, where=keep)
    y[x == 0] = direction * ETA


def gamma(k: int) -> float:
    """An upper bound on gamma_k = k u / (1 - k u)."""
    ku = k * U                  # exact: k < 2^53 times a power of two
    if ku >= 0.5:
        return INF
    return float(up(ku / down(1.0 - ku)))


def check_environment() -> None:
    """Refuse to run when the float environment is not round-to-nearest with gradual underflow
    (flush-to-zero or denormals-are-zero would break the nextafter argument)."""
    one = np.float64(1.0)
    tiny = np.float64(2.0 ** -1022)
    checks = [
        one + np.float64(2.0 ** -53) == one,                        # tie rounds to even (down)
        one + np.float64(3 * 2.0 ** -54) == one + np.float64(2.0 ** -52),  # above half rounds up
        -one - np.float64(3 * 2.0 ** -54) == -one - np.float64(2.0 ** -52),
        tiny / np.float64(4.0) > 0.0,                                # subnormals are kept
        np.float64(ETA) * np.float64(2.0) == np.float64(2 * ETA),   # and computed with
        np.nextafter(np.float64(0.0), INF) == np.float64(ETA),
    ]
    if not all(bool(c) for c in checks):
        raise RuntimeError("the floating-point environment is not IEEE round-to-nearest with "
                           "gradual underflow; the sound mode cannot run")


def sanitize(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Any NaN endpoint (an undefined operation somewhere in the box) becomes the whole line."""
    bad = np.isnan(lo) | np.isnan(hi)
    if bad.any():
        lo = np.where(bad, -INF, lo)
        hi = np.where(bad, INF, hi)
    return lo, hi


# --- sums and products of nonnegative arrays, bounded above -------------------------------------
def nonneg_matmul_upper(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """An upper bound on the exact product P @ Q of nonnegative arrays (numpy matmul semantics).

    S~ = fl(PQ) satisfies |S~ - S| <= gamma_k S + k eta, so S <= (S~ + k eta) / (1 - gamma_k)
    <= (S~ + k eta)(1 + 2 gamma_k)."""
    k = P.shape[-1]
    g = gamma(k)
    c = float(up(1.0 + 2.0 * g))
    S = np.matmul(P, Q)
    return up(up(S + k * ETA) * c)


def nonneg_sum_upper(X: np.ndarray, axis=None) -> np.ndarray:
    """An upper bound on the exact sum of nonnegative entries (no underflow term: additions of
    doubles are exact in the subnormal range)."""
    k = X.size if axis is None else _axis_len(X, axis)
    c = float(up(1.0 + 2.0 * gamma(max(k, 1))))
    return up(np.sum(X, axis=axis) * c)


def nonneg_sum_lower(X: np.ndarray, axis=None) -> np.ndarray:
    """A lower bound on the exact sum of nonnegative entries: S >= S~ / (1 + gamma)."""
    k = X.size if axis is None else _axis_len(X, axis)
    c = float(down(1.0 - 2.0 * gamma(max(k, 1))))
    return np.maximum(down(np.sum(X, axis=axis) * c), 0.0)


def _axis_len(X: np.ndarray, axis) -> int:
    if isinstance(axis, tuple):
        out = 1
        for a in axis:
            out *= X.shape[a]
        return out
    return X.shape[axis]


def sum_bounds(lo: np.ndarray, hi: np.ndarray, axis=None) -> tuple[np.ndarray, np.ndarray]:
    """Enclosure of sum x_i over x_i in [lo_i, hi_i]: fl(sum lo) - gamma sum |lo| rounded down,
    and likewise above."""
    k = lo.size if axis is None else _axis_len(lo, axis)
    g = gamma(max(k - 1, 1))
    slo = np.sum(lo, axis=axis)
    shi = np.sum(hi, axis=axis)
    elo = up(g * nonneg_sum_upper(np.abs(lo), axis))
    ehi = up(g * nonneg_sum_upper(np.abs(hi), axis))
    return sanitize(down(slo - elo), up(shi + ehi))


def sqnorm_lower(x: np.ndarray, axis=None) -> np.ndarray:
    """A lower bound on sum x_i^2 for doubles x_i (each square rounded down, then summed)."""
    return nonneg_sum_lower(np.maximum(down(x * x), 0.0), axis)


def sqnorm_upper(x: np.ndarray, axis=None) -> np.ndarray:
    return nonneg_sum_upper(up(x * x), axis)


# --- elementary functions at points: guaranteed lower and upper bounds --------------------------
def set_elementary(mode: str) -> None:
    """'margin' (numpy + REL_MARGIN, fast) or 'arb' (python-flint ball arithmetic, rigorous)."""
    if mode not in ("margin", "arb"):
        raise ValueError(mode)
    _ELEMENTARY["mode"] = mode


def elementary_mode() -> str:
    return _ELEMENTARY["mode"]


@contextlib.contextmanager
def elementary(mode: str):
    """Evaluate elementary functions in `mode` inside the block, then restore the previous mode."""
    old = _ELEMENTARY["mode"]
    set_elementary(mode)
    try:
        yield
    finally:
        _ELEMENTARY["mode"] = old


def _widen(v: np.ndarray, extra: float | np.ndarray = 0.0) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", over="ignore"):
        margin = up(up(up(np.abs(v) * REL_MARGIN) + ABS_MARGIN) + extra)
        lo, hi = down(v - margin), up(v + margin)
    return lo, hi


_NUMPY = {"exp": np.exp, "log": np.log, "log1p": np.log1p, "tanh": np.tanh,
          "sin": np.sin, "cos": np.cos, "arcsin": np.arcsin}
HALF_PI_UP = float(np.nextafter(math.pi / 2, INF))   # > pi/2 (math.pi / 2 is below it)


def point_bounds(name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) with lo <= f(x) <= hi for every entry of the double array x (f a library function
    among exp, log, log1p, tanh, sin, cos, arcsin). NaN where f is undefined at x (arcsin: |x| > 1)."""
    x = np.asarray(x, dtype=np.float64)
    if _ELEMENTARY["mode"] == "arb":
        return _arb_bounds(name, x)
    with np.errstate(all="ignore"):
        v = _NUMPY[name](x)
    extra = 0.0
    if name in ("sin", "cos"):
        extra = TRIG_ABS_MARGIN
    lo, hi = _widen(v, extra)
    if name in ("sin", "cos"):
        far = ~(np.abs(x) <= TRIG_LIMIT)
        lo = np.where(far, -1.0, lo)
        hi = np.where(far, 1.0, hi)
    if name == "exp":
        # np.exp overflows to inf only for x > 709.7 (even with thousands of ulps of error),
        # where exp(x) > 1e308 > 1e300.
        lo = np.where(np.isposinf(v), 1e300, lo)
    return _clip_range(name, lo, hi)


def _clip_range(name, lo, hi):
    """Intersect with the function's known range."""
    with np.errstate(invalid="ignore"):
        if name == "exp":
            lo = np.maximum(lo, 0.0)
        elif name in ("tanh", "sin", "cos"):
            lo, hi = np.maximum(lo, -1.0), np.minimum(hi, 1.0)
        elif name == "arcsin":        # [-pi/2, pi/2], and arcsin(0) = 0 exactly (sign-preserving)
            lo, hi = np.maximum(lo, -HALF_PI_UP), np.minimum(hi, HALF_PI_UP)
    return lo, hi


def _arb_bounds(name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import flint

    lo = np.empty_like(x)
    hi = np.empty_like(x)
    old = flint.ctx.prec
    flint.ctx.prec = 96
    try:
        flat_x, flat_lo, flat_hi = x.reshape(-1), lo.reshape(-1), hi.reshape(-1)
        for i, xi in enumerate(flat_x):
            xi = float(xi)
            if name == "arcsin" and not abs(xi) <= 1.0:
                flat_lo[i] = flat_hi[i] = math.nan
                continue
            if math.isnan(xi) or (name in ("log",) and xi <= 0) or (name == "log1p" and xi <= -1):
                if name in ("log", "log1p") and xi == (0.0 if name == "log" else -1.0):
                    flat_lo[i] = flat_hi[i] = -INF
                else:
                    flat_lo[i] = flat_hi[i] = math.nan
                continue
            if math.isinf(xi):
                v = _NUMPY[name](np.float64(xi))
                flat_lo[i] = flat_hi[i] = v
                if name in ("sin", "cos"):
                    flat_lo[i], flat_hi[i] = math.nan, math.nan
                continue
            a = flint.arb(xi)
            r = {"exp": a.exp, "log": a.log, "log1p": a.log1p, "tanh": a.tanh,
                 "sin": a.sin, "cos": a.cos, "arcsin": a.asin}[name]()
            # float() of an arf rounds to nearest; step outward once more.
            l, h = float(r.lower()), float(r.upper())
            flat_lo[i] = np.nextafter(l, -INF)
            flat_hi[i] = np.nextafter(h, INF)
    finally:
        flint.ctx.prec = old
    return _clip_range(name, lo, hi)
