"""Population losses in the sound mode: the closed form of `data gaussian(d=...)` (compile/population.py,
docs/theory.md 11) enclosed over boxes of parameters with outward rounding (docs/theory.md 11.5).

For neurons p_a (rows of P: the model's, then the target's) with coefficients c_a (the target's
negated), f - y = sum_a c_a relu(p_a . x), x ~ N(0, I_d), and with the arc-cosine kernel written as
k(u, w) = u.w / 2 + |u| |w| J(t) / (2 pi), J(t) = sin t - t cos t, t = angle(u, w) (exact; J(0) = 0):

    L        = |s|^2 / 2 + (1/pi) sum_{a<b} c_a c_b |p_a| |p_b| J(t_ab),        s = sum_a c_a p_a
    dL/dp_i  = c_i s + (1/pi) sum_{b != i} c_i c_b |p_b| (sin t_ib p^_i - t_ib p^_b)
    d2L/dp_i2     = c_i^2 I + (1/pi) sum_{b != i} c_i c_b (|p_b| / |p_i|) [sin t (I - p^_i p^_i') + q q' / sin t]
    d2L/dp_i dp_j = (1/pi) c_i c_j [(pi - t) I + q r' / sin t + sin t p^_i p^_j'],   i != j

with q = p^_b - cos t p^_i (|q| = sin t) and r = p^_i - cos t p^_j (|r| = sin t). Writing L through
s keeps the cancellation near a fit exact where it can be: at the teacher itself s = 0 and every J term
with c_a c_b < 0 is <= 0, so the upper bound of L there is a few subnormals, not 1e-16 (E f^2 + E y^2).

Guards, proved rather than assumed:

- **angles**: t = 2 arcsin(|p^_a - p^_b| / 2) and t = pi - 2 arcsin(|p^_a + p^_b| / 2), both enclosed
  (directed arcsin, compile/rounding.py) and intersected; never arccos, whose derivative is infinite
  at +-1: near 0 and pi the difference (sum) of unit vectors is small and accurate, so the angle is
  enclosed to a few ulps of itself, not to sqrt(ulp).
- **J(t)** is increasing on [0, pi] (J' = t sin t): J([a, b]) = [J(a) from below, J(b) from above];
  below t = 1 by its alternating Taylor series (8 and 9 terms bracket it; no cancellation), above
  by sin and cos bounds.
- **the 1/sin t terms** of the Hessian: q q' / sin t and q r' / sin t have entries in
  [-sin t, sin t] (|q| = |r| = sin t); the interval quotient is intersected with that, so t near 0
  or pi (sin t -> 0) gives a small enclosure, never a division by an interval containing 0.
- **a neuron that can be 0** (|p_i| reaches 0 over the box): L is not differentiable there. The value
  enclosure stays valid (the J terms carry the factor |p_i|); the gradient is enclosed with p^_i in
  [-1, 1]^d and t in [0, pi], which holds every limit of gradients (Clarke's generalized gradient);
  no Hessian is formed and the `convex` rule refuses the box with that reason (branch and bound
  splits it).

The `convex` rule (analyse/sound/rules.py): let B' be the smallest box holding the box B and theta*, a
float near-minimiser (gradient descent on the closed form; a candidate only). Where the Hessian
enclosure over B' has lambda_min >= a > 0 (Gershgorin), L is a-strongly convex on B', so for theta in B
L(theta*) >= L(theta) - |grad L(theta)|^2 / (2 a), i.e. R(theta) >= (a/2)(1 - L(theta*) / L(theta)), with
L(theta*) enclosed from above. This bounds R on {L >= max(floor, min_B L)} even on boxes that hold the
minimiser, where min |grad L| = 0 defeats the direct rule. theta* is snapped to the teachers' rows when
the students can fit them exactly (as many students as teachers, equal coefficients); there s = 0 exactly
and every J term is <= 0, so L(theta*) = 0 is proved, |grad L|^2 >= 2 a L on the box and R >= a/2 with
floor 0.

Scope: the model's neuron weights are parameter names (W in relu(W @ x)) and its coefficients do
not depend on the parameters (a fixed second layer, numbers, data constants); anything else is
NotSupported (E107).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..language.evaluate import CONSTANTS
from ..language.losses import LOSSES
from .interval import Dual, NotSupported, enclose, param_layout
from .interval_losses import INTERVAL_LOSSES
from .iv import Iv, iv_add, iv_div, iv_intersect, iv_matmul, iv_mul, iv_of, iv_scale, iv_square, iv_sub, iv_sum
from .population import names_in
from .rounding import INF, check_environment, down, nonneg_sum_upper, point_bounds, up

PI_LO, PI_HI = math.pi, float(up(math.pi))                 # math.pi < pi < up(math.pi)
INV_PI = Iv(np.float64(down(1.0 / PI_HI)), np.float64(up(1.0 / PI_LO)))
HALF_PI_LO, HALF_PI_HI = math.pi / 2, float(up(math.pi / 2))
SERIES_BELOW = 1.0      # J(t) by its alternating series below this angle
DESCENT_STEPS = 4000    # float gradient descent for the convex rule's near-minimiser candidate


# --- scalar helpers on interval arrays ---------------------------------------------------------------
def _sqrt(a: Iv) -> Iv:
    with np.errstate(invalid="ignore"):
        return Iv(np.maximum(down(np.sqrt(np.maximum(a.lo, 0.0))), 0.0), up(np.sqrt(np.maximum(a.hi, 0.0))))


def _coef(k: int) -> Iv:
    """2k / (2k+1)!, the k-th coefficient of J's series, enclosed (float(Fraction) rounds to nearest)."""
    f = float(Fraction(2 * k, math.factorial(2 * k + 1)))
    return Iv(np.float64(down(f)), np.float64(up(f)))


_COEFS = [_coef(k) for k in range(1, 10)]


def j_point_bounds(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) with lo <= J(t) = sin t - t cos t <= hi for doubles 0 <= t <= up(pi)."""
    t = np.asarray(t, dtype=np.float64)
    T = Iv(t)
    slo, shi = point_bounds("sin", t)
    clo, chi = point_bounds("cos", t)
    trig = iv_sub(Iv(slo, shi), iv_mul(T, Iv(clo, chi)))
    lo, hi = trig.lo, trig.hi
    small = t < SERIES_BELOW
    if np.any(small):
        # alternating series with decreasing terms (t^2 < 10): S_8 <= J <= S_9
        t2 = iv_square(T)
        power = iv_mul(T, t2)                              # t^3
        total = Iv(np.zeros_like(t))
        partial = {}
        for k in range(1, 10):
            term = iv_mul(_COEFS[k - 1], power)
            total = iv_add(total, term) if k % 2 == 1 else iv_sub(total, term)
            partial[k] = total
            power = iv_mul(power, t2)
        lo = np.where(small, np.maximum(lo, partial[8].lo), lo)
        hi = np.where(small, np.minimum(hi, partial[9].hi), hi)
    return np.maximum(lo, 0.0), np.minimum(hi, PI_HI)


def j_iv(theta: Iv) -> Iv:
    """J over angle intervals inside [0, pi]: increasing there; J <= J(pi) = pi on [0, up(pi)]."""
    lo, _ = j_point_bounds(theta.lo)
    _, hi = j_point_bounds(theta.hi)
    hi = np.where(theta.hi >= PI_LO, PI_HI, hi)
    return Iv(lo, hi)


def sin_on_angles(theta: Iv) -> Iv:
    """sin over intervals inside [0, pi] (concave there, maximum 1 at pi/2); >= 0 since the true angle is."""
    lo_a, hi_a = point_bounds("sin", theta.lo)
    lo_b, hi_b = point_bounds("sin", theta.hi)
    lo, hi = np.minimum(lo_a, lo_b), np.maximum(hi_a, hi_b)
    hi = np.where((theta.lo <= HALF_PI_HI) & (theta.hi >= HALF_PI_LO), 1.0, hi)
    return Iv(np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0))


def cos_on_angles(theta: Iv) -> Iv:
    """cos over intervals inside [0, pi] (decreasing there; -1 where the enclosure reaches past pi's double)."""
    lo, _ = point_bounds("cos", theta.hi)
    _, hi = point_bounds("cos", theta.lo)
    lo = np.where(theta.hi >= PI_LO, -1.0, lo)
    return Iv(np.clip(lo, -1.0, 1.0), np.clip(hi, -1.0, 1.0))


def _half_arcsin_twice(d: Iv, lower: bool) -> np.ndarray:
    """2 arcsin(d / 2) at the lower (or upper) end of d >= 0, rounded in that direction."""
    x = np.clip(d.lo if lower else d.hi, 0.0, 2.0)
    half = np.clip(down(x / 2) if lower else up(x / 2), 0.0, 1.0)
    lo, hi = point_bounds("arcsin", half)
    return np.maximum(down(2.0 * lo), 0.0) if lower else up(2.0 * hi)


def angles(U: Iv, zero: np.ndarray) -> Iv:
    """t_ab = angle(p_a, p_b) for unit-vector enclosures U [N, d]: 2 arcsin(|u_a - u_b| / 2) intersected
    with pi - 2 arcsin(|u_a + u_b| / 2); [0, pi] where a neuron can be 0."""
    diff = iv_sub(Iv(U.lo[:, None, :], U.hi[:, None, :]), Iv(U.lo[None, :, :], U.hi[None, :, :]))
    summ = iv_add(Iv(U.lo[:, None, :], U.hi[:, None, :]), Iv(U.lo[None, :, :], U.hi[None, :, :]))
    dn = _sqrt(iv_sum(iv_square(diff), -1))
    sn = _sqrt(iv_sum(iv_square(summ), -1))
    lo1, hi1 = _half_arcsin_twice(dn, True), _half_arcsin_twice(dn, False)
    lo2 = down(PI_LO - _half_arcsin_twice(sn, False))
    hi2 = up(PI_HI - _half_arcsin_twice(sn, True))
    lo = np.maximum(np.maximum(lo1, lo2), 0.0)
    hi = np.minimum(np.minimum(hi1, hi2), PI_HI)
    either = zero[:, None] | zero[None, :]
    lo = np.where(either, 0.0, lo)
    hi = np.where(either, PI_HI, hi)
    return Iv(lo, np.maximum(hi, lo))


def _outer(a: Iv, b: Iv) -> Iv:
    return iv_mul(Iv(a.lo[:, None], a.hi[:, None]), Iv(b.lo[None, :], b.hi[None, :]))


def _clamp(M: Iv, bound: float, psd_diagonal: bool) -> Iv:
    """Intersect with [-bound, bound] entrywise (and [0, bound] on the diagonal)."""
    lo, hi = np.maximum(M.lo, -bound), np.minimum(M.hi, bound)
    if psd_diagonal:
        i = np.arange(M.shape[0])
        lo[i, i] = np.maximum(lo[i, i], 0.0)
    return Iv(lo, np.maximum(hi, lo))


def _over_sin(M: Iv, s: Iv, psd_diagonal: bool) -> Iv:
    """M / sin t with |M_ab| <= sin t^2 known (M = q q' or q r', |q| = |r| = sin t): entries in [-sin t, sin t]."""
    q = iv_div(M, Iv(np.float64(s.lo), np.float64(s.hi)))
    with np.errstate(invalid="ignore"):
        q = Iv(np.where(np.isnan(q.lo), -INF, q.lo), np.where(np.isnan(q.hi), INF, q.hi))
    return _clamp(q, float(s.hi), psd_diagonal)


def _fsum_bounds(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on the exact column sums of x [N, d]: math.fsum is correctly rounded, so the exact sum lies
    within one double of it, and is exactly 0 when fsum returns 0 (the exact sum of doubles is a multiple
    of 2^-1074)."""
    r = np.array([math.fsum(col) for col in x.T]) if x.size else np.zeros(x.shape[1])
    return np.where(r == 0, 0.0, down(r)), np.where(r == 0, 0.0, up(r))


def _residual_direction(P: Iv, c: Iv) -> Iv:
    """s = sum_a c_a p_a. A product by a point coefficient +-2^k is exact where it is a normal double or 0,
    so at a student equal to its teacher (c = 1 and -1) s is exactly 0 and L's upper bound subnormal."""
    prod = iv_mul(Iv(c.lo[:, None], c.hi[:, None]), P)
    point = c.lo == c.hi
    with np.errstate(divide="ignore"):
        mant, _ = np.frexp(np.where(point, c.lo, 1.0))
    exact_coef = point & (np.abs(mant) == 0.5)
    with np.errstate(over="ignore", invalid="ignore"):
        plo, phi = c.lo[:, None] * P.lo, c.lo[:, None] * P.hi
    def normal(z):
        return (z == 0) | ((np.abs(z) >= 2.0 ** -1022) & np.isfinite(z))
    use = exact_coef[:, None] & normal(plo) & normal(phi) & np.ones_like(P.lo, dtype=bool)
    lo = np.where(use, np.minimum(plo, phi), prod.lo)
    hi = np.where(use, np.maximum(plo, phi), prod.hi)
    slo, _ = _fsum_bounds(lo)
    _, shi = _fsum_bounds(hi)
    return Iv(slo, shi)


@dataclass
class PopulationParts:
    """The closed form over a box of neuron weights: L, dL/dP (model rows), d2L/dP2 (model rows) or None."""

    L: Iv
    G: Iv                     # [nvar, d]
    H: Iv | None              # [nvar d, nvar d]
    zero: np.ndarray          # [N] which neurons can be 0 over the box
    norm: Iv                  # [N]


def enclose_closed_form(P: Iv, c: Iv, nvar: int, hessian: bool = True) -> PopulationParts:
    """L, its gradient in the first nvar rows of P and (when no neuron can be 0) its Hessian in them,
    over the box P [N, d] (intervals), coefficients c [N] (intervals)."""
    N, d = P.shape
    norm = _sqrt(iv_sum(iv_square(P), 1))
    zero = ~(norm.lo > 0)
    safe = Iv(np.where(zero, 1.0, norm.lo)[:, None], np.where(zero, 1.0, norm.hi)[:, None])
    U = iv_intersect(iv_div(P, safe), Iv(-np.ones((N, d)), np.ones((N, d))))
    U = Iv(np.where(zero[:, None], -1.0, U.lo), np.where(zero[:, None], 1.0, U.hi))
    U = Iv(U.lo, np.maximum(U.hi, U.lo))
    T = angles(U, zero)
    S = sin_on_angles(T)
    Jt = j_iv(T)
    off = ~np.eye(N, dtype=bool)

    s = _residual_direction(P, c)                                              # [d]
    cc = _outer(c, c)                                                          # c_a c_b
    nn = _outer(norm, norm)
    pair = iv_mul(iv_mul(cc, nn), Jt)
    upper = np.triu(off)
    pair_sum = iv_sum(Iv(np.where(upper, pair.lo, 0.0), np.where(upper, pair.hi, 0.0)), None)
    L = iv_add(iv_scale(iv_sum(iv_square(s), None), 0.5), iv_mul(INV_PI, pair_sum))
    L = Iv(np.maximum(L.lo, 0.0), np.maximum(L.hi, 0.0))
    if np.all(s.lo == 0) and np.all(s.hi == 0) and np.all(cc.hi[upper] <= 0):
        # s = 0 exactly and every J term is <= 0 (c_a c_b <= 0, J >= 0): 0 <= L <= |s|^2 / 2 = 0
        L = Iv(np.float64(0.0), np.float64(0.0))

    # gradient rows: c_i s + (1/pi) [ (sum_b A_ib sin t_ib) u_i - sum_b A_ib t_ib u_b ],  A_ib = c_i c_b |p_b|
    A = iv_mul(cc, Iv(norm.lo[None, :], norm.hi[None, :]))
    A = Iv(np.where(off, A.lo, 0.0), np.where(off, A.hi, 0.0))
    AS = iv_sum(iv_mul(A, S), 1)                                               # [N]
    AT = iv_mul(A, T)
    first = iv_mul(Iv(AS.lo[:, None], AS.hi[:, None]), U)
    second = iv_matmul(AT, U)
    G = iv_add(iv_mul(Iv(c.lo[:, None], c.hi[:, None]), Iv(s.lo[None, :], s.hi[None, :])),
               iv_mul(INV_PI, iv_sub(first, second)))
    G = Iv(G.lo[:nvar], G.hi[:nvar])

    H = None
    if hessian and not np.any(zero[:nvar]):
        H = _hessian(P, c, U, T, S, norm, zero, nvar)
    return PopulationParts(L, G, H, zero, norm)


def _hessian(P, c, U, T, S, norm, zero, nvar) -> Iv:
    N, d = P.shape
    C = cos_on_angles(T)
    I = np.eye(d)
    H_lo, H_hi = np.zeros((nvar * d, nvar * d)), np.zeros((nvar * d, nvar * d))
    unit = lambda a: Iv(U.lo[a], U.hi[a])          # noqa: E731
    ab = lambda M, a, b: Iv(np.float64(M.lo[a, b]), np.float64(M.hi[a, b]))   # noqa: E731
    for i in range(nvar):
        ui = unit(i)
        ci = Iv(np.float64(c.lo[i]), np.float64(c.hi[i]))
        block = iv_mul(iv_square(ci), Iv(I))
        proj = iv_sub(Iv(I), _outer(ui, ui))                                   # I - u u'
        inv_ni = iv_div(Iv(np.float64(1.0)), Iv(np.float64(norm.lo[i]), np.float64(norm.hi[i])))
        for b in range(N):
            if b == i or zero[b]:          # k(u, 0) = 0: no term
                continue
            s_ib, c_ib = ab(S, i, b), ab(C, i, b)
            q = iv_sub(unit(b), iv_mul(c_ib, ui))                              # u_b - cos t u_i, |q| = sin t
            inner = iv_add(iv_mul(s_ib, proj), _over_sin(_outer(q, q), s_ib, True))
            scale = iv_mul(iv_mul(iv_mul(ci, Iv(np.float64(c.lo[b]), np.float64(c.hi[b]))),
                                  Iv(np.float64(norm.lo[b]), np.float64(norm.hi[b]))), inv_ni)
            block = iv_add(block, iv_mul(iv_mul(INV_PI, scale), inner))
        H_lo[i * d:(i + 1) * d, i * d:(i + 1) * d] = block.lo
        H_hi[i * d:(i + 1) * d, i * d:(i + 1) * d] = block.hi
        for j in range(i + 1, nvar):
            uj = unit(j)
            s_ij, c_ij = ab(S, i, j), ab(C, i, j)
            q = iv_sub(uj, iv_mul(c_ij, ui))
            r = iv_sub(ui, iv_mul(c_ij, uj))
            t_ij = ab(T, i, j)
            pi_minus = Iv(np.float64(max(float(down(PI_LO - t_ij.hi)), 0.0)), np.float64(up(PI_HI - t_ij.lo)))
            inner = iv_add(iv_add(iv_mul(pi_minus, Iv(I)), _over_sin(_outer(q, r), s_ij, False)),
                           iv_mul(s_ij, _outer(ui, uj)))
            cij = iv_mul(Iv(np.float64(c.lo[i]), np.float64(c.hi[i])), Iv(np.float64(c.lo[j]), np.float64(c.hi[j])))
            block = iv_mul(iv_mul(INV_PI, cij), inner)
            H_lo[i * d:(i + 1) * d, j * d:(j + 1) * d] = block.lo
            H_hi[i * d:(i + 1) * d, j * d:(j + 1) * d] = block.hi
            H_lo[j * d:(j + 1) * d, i * d:(i + 1) * d] = block.lo.T     # the Hessian is symmetric
            H_hi[j * d:(j + 1) * d, i * d:(i + 1) * d] = block.hi.T
    return Iv(H_lo, H_hi)


def gershgorin_lower(H: Iv) -> float:
    """A float <= lambda_min of every symmetric matrix in H: min_r (H_rr - sum_{s != r} |H_rs|), rounded down."""
    m = H.shape[0]
    mag = np.maximum(np.abs(H.lo), np.abs(H.hi))
    np.fill_diagonal(mag, 0.0)
    radius = nonneg_sum_upper(mag, axis=1)
    return float(np.min(down(np.diagonal(H.lo) - radius))) if m else 0.0


# --- the spec's population as an interval model ----------------------------------------------------
@dataclass
class PopulationEnclosure:
    """interval_model.BoxEnclosure's fields for a population: no outputs and no Jacobian (F, r empty; J None:
    the tangent kernel is an integral operator, no finite matrix); H the Hessian enclosure over the box
    (None where a neuron can be 0), split_rows the rows the branch and bound scores splits with (|H| and
    |grad L|). (A copy of the fields, not a subclass: compile/ has no import circles.)"""

    lo: np.ndarray
    hi: np.ndarray
    center: np.ndarray
    F: Iv
    J: None
    r: Iv
    L: Iv
    grad: Iv | None
    F_center: Iv
    L_center: Iv
    gsq: Iv | None = None
    per_sample: Iv | None = None
    H: Iv | None = None
    split_rows: Iv | None = None
    zero_neuron: bool = False


class PopulationIntervalModel:
    """IntervalModel's interface (at_point, over_box, m, n, least_squares, ...) for a population spec:
    L = E (f - y)^2 in closed form, grad L, ||g||_D^2 = 4 L (exact for least squares over the Gaussian
    measure), n = 1 (no samples: the rules that need a Jacobian do not apply), and convex_bound for
    the `convex` rule."""

    def __init__(self, checked):
        check_environment()
        form = checked.population
        if checked.loss.name != "least_squares":
            raise NotSupported(f"the loss '{checked.loss.name}' on a population", None)
        self.loss = LOSSES["least_squares"]
        self.iloss = INTERVAL_LOSSES["least_squares"]
        self.least_squares = True
        self.affine = False
        self.population = form
        self.checked = checked
        param_layout(self, checked)
        self.d = int(form.population.d)
        # no samples: one zero sample stands in where only shapes are read (engine._estimate_memory)
        self.x = np.zeros((1, self.d))
        self.y = np.zeros(1)
        self.n, self.k, self.out_shape = 1, 1, ()
        self.yk = self.y.reshape(1, 1)
        self.constants = {k: np.asarray(v, dtype=np.float64) for k, v in checked.constants.items()}
        self.body = checked.spec.model.body
        self.arg = checked.spec.model.arg
        self.blocks = {name: (int(o), int(o) + s) for name, o, s in zip(self.names, self.offsets, self.sizes)}
        self._build()
        self._star = self._near_minimiser()
        self._star_L = float(self.at_point(self._star, False).L.hi)

    def _env(self, lo: np.ndarray, hi: np.ndarray, derivatives: bool = False) -> dict[str, Dual]:
        """Values of the names over [lo, hi], as IntervalModel._env without derivatives (engine._estimate_memory
        walks the model body with it; x is the one zero stand-in sample)."""
        env = {k: Dual(Iv(v[None]), None, v.ndim) for k, v in self.constants.items()}
        for name, shape, off, size in zip(self.names, self.shapes, self.offsets, self.sizes):
            env[name] = Dual(Iv(lo[off:off + size].reshape((1,) + shape), hi[off:off + size].reshape((1,) + shape)),
                             None, len(shape))
        env[self.arg] = Dual(Iv(self.x), None, 1)
        return env

    # neurons ---------------------------------------------------------------------------------------
    def _const(self, e):
        env = {k: Dual(Iv(v[None]), None, v.ndim) for k, v in self.constants.items()}
        names = names_in(e)
        if names & set(self.names):
            raise NotSupported("a population model whose neuron coefficients depend on the parameters "
                               "(the sound mode takes a fixed second layer: numbers or data constants)", e)
        unknown = names - set(env) - set(CONSTANTS)
        if unknown:
            raise NotSupported(f"the name '{sorted(unknown)[0]}' in a population coefficient", e)
        out = enclose(e, env)
        return Iv(out.v.lo[0], out.v.hi[0])

    def _group(self, g, variable: bool):
        count = g.count
        coef = Iv(np.full(count, float(g.sign)))
        for f in list(g.factors) + list(g.coefs):
            v = self._const(f)
            coef = iv_mul(coef, Iv(np.broadcast_to(v.lo, (count,)) if v.lo.ndim else np.full(count, float(v.lo)),
                                   np.broadcast_to(v.hi, (count,)) if v.hi.ndim else np.full(count, float(v.hi))))
        if g.weights.op == "name" and g.weights.attrs["id"] in self.names and variable:
            name = g.weights.attrs["id"]
            j = self.names.index(name)
            off = int(self.offsets[j])
            idx = off + np.arange(self.sizes[j]).reshape(count, self.d)
            return None, idx, coef
        if names_in(g.weights) & set(self.names):
            raise NotSupported("population neuron weights that are not a parameter name (the sound mode takes "
                               "relu(W @ x) with W a parameter)", g.weights)
        W = self._const(g.weights)
        return Iv(W.lo.reshape(count, self.d), W.hi.reshape(count, self.d)), None, coef

    def _build(self):
        fixed_P, fixed_c = [], []
        self._rows, var_c = [], []
        for g in self.population.model:
            W, idx, coef = self._group(g, True)
            if idx is None:
                fixed_P.append(W)
                fixed_c.append(coef)
            else:
                self._rows.extend(list(idx))
                var_c.append(coef)
        for g in self.population.target:
            W, _, coef = self._group(g, False)
            fixed_P.append(W)
            fixed_c.append(Iv(-coef.hi, -coef.lo))          # negation is exact
        self.nvar = len(self._rows)
        cs = var_c + fixed_c
        self._c = Iv(np.concatenate([c.lo for c in cs]), np.concatenate([c.hi for c in cs]))
        self._fixed = Iv(np.concatenate([p.lo for p in fixed_P]) if fixed_P else np.zeros((0, self.d)),
                         np.concatenate([p.hi for p in fixed_P]) if fixed_P else np.zeros((0, self.d)))
        self._idx = np.array(self._rows, dtype=np.int64).reshape(self.nvar, self.d)
        self.neurons = self.nvar + self._fixed.shape[0]

    def _P(self, lo: np.ndarray, hi: np.ndarray) -> Iv:
        return Iv(np.concatenate([lo[self._idx], self._fixed.lo]), np.concatenate([hi[self._idx], self._fixed.hi]))

    def _theta_grad(self, G: Iv) -> Iv:
        lo, hi = np.zeros(self.m), np.zeros(self.m)
        for r in range(self.nvar):             # a parameter row used twice collects both terms
            cur = iv_add(Iv(lo[self._idx[r]], hi[self._idx[r]]), Iv(G.lo[r], G.hi[r]))
            lo[self._idx[r]], hi[self._idx[r]] = cur.lo, cur.hi
        return Iv(lo, hi) if self.nvar else Iv(np.zeros(self.m))

    def _theta_hessian(self, H: Iv) -> Iv:
        if len(set(self._idx.reshape(-1).tolist())) == self._idx.size and self._idx.size == self.m:
            order = self._idx.reshape(-1)
            inv = np.empty(self.m, dtype=np.int64)
            inv[order] = np.arange(self.m)
            return Iv(H.lo[np.ix_(inv, inv)], H.hi[np.ix_(inv, inv)])
        lo, hi = np.zeros((self.m, self.m)), np.zeros((self.m, self.m))
        flat = self._idx.reshape(-1)
        for a in range(flat.size):
            for b in range(flat.size):
                cur = iv_add(Iv(np.float64(lo[flat[a], flat[b]]), np.float64(hi[flat[a], flat[b]])),
                             Iv(np.float64(H.lo[a, b]), np.float64(H.hi[a, b])))
                lo[flat[a], flat[b]], hi[flat[a], flat[b]] = cur.lo, cur.hi
        return Iv(lo, hi)

    def parts(self, lo: np.ndarray, hi: np.ndarray, hessian: bool = True):
        """(L, grad L in theta, Hessian in theta or None, whether a neuron can be 0) over [lo, hi]."""
        pp = enclose_closed_form(self._P(lo, hi), self._c, self.nvar, hessian)
        H = self._theta_hessian(pp.H) if pp.H is not None else None
        return pp.L, self._theta_grad(pp.G), H, bool(np.any(pp.zero[:self.nvar]))

    # the IntervalModel interface -----------------------------------------------------------------------
    def outputs(self, lo, hi=None, derivatives=True):
        raise NotSupported("a population has no per-sample outputs", None)

    def _enclosure(self, lo, hi, center, L, grad, H, zero, Lc) -> PopulationEnclosure:
        gsq = iv_of(np.maximum(down(4.0 * L.lo), 0.0), up(4.0 * L.hi))
        empty = Iv(np.zeros((0, 1)))
        rows = None
        if grad is not None:
            rows = Iv(grad.lo[None, :], grad.hi[None, :])
            if H is not None:
                rows = Iv(np.concatenate([H.lo, rows.lo]), np.concatenate([H.hi, rows.hi]))
        return PopulationEnclosure(lo, hi, center, empty, None, empty, L, grad, empty, Lc, gsq, None,
                                   H=H, split_rows=rows, zero_neuron=zero)

    def at_point(self, theta, derivatives: bool = True) -> PopulationEnclosure:
        theta = np.asarray(theta, dtype=np.float64)
        L, grad, H, zero = self.parts(theta, theta, hessian=False)
        return self._enclosure(theta, theta, theta, L, grad if derivatives else None, None, zero, L)

    def over_box(self, lo, hi) -> PopulationEnclosure:
        """Naive enclosures over [lo, hi] intersected with the mean-value forms
        L(c) + grad L(box).(box - c) and grad L(c) + H(box)(box - c)."""
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        c = np.minimum(np.maximum(0.5 * lo + 0.5 * hi, lo), hi)
        L, grad, H, zero = self.parts(lo, hi, hessian=True)
        Lc, gc, _, _ = self.parts(c, c, hessian=False)
        delta = Iv(down(lo - c), up(hi - c))
        Lmv = iv_add(Lc, iv_sum(iv_mul(grad, delta), None))
        L = iv_intersect(L, Iv(np.maximum(Lmv.lo, 0.0), Lmv.hi))
        L = Iv(L.lo, np.maximum(L.hi, L.lo))
        if H is not None:
            gmv = iv_add(gc, iv_matmul(H, delta))
            grad = iv_intersect(grad, gmv)
            grad = Iv(grad.lo, np.maximum(grad.hi, grad.lo))
        return self._enclosure(lo, hi, c, L, grad, H, zero, Lc)

    # the convex rule --------------------------------------------------------------------------------
    def convex_bound(self, enc: PopulationEnclosure, floor: float):
        """(value, reason, numbers) of the `convex` rule on the box B of enc, or None. The convex set is
        B' = the smallest box holding B and the near-minimiser theta* (a function of B and the spec
        alone, so that the replay recomputes it, and a child box's B' lies inside its parent's):
        lambda_min(Hessian) >= a > 0 on B' (Gershgorin) makes L a-strongly convex there, hence
        ||grad L(theta)||^2 >= 2 a (L(theta) - L(theta*)) and R >= (a/2)(1 - L(theta*)_up / level) on
        {theta in B, L >= level}, level = max(floor, min_B L)."""
        star = self._star
        lo, hi = np.minimum(enc.lo, star), np.maximum(enc.hi, star)
        _, _, H, zero = self.parts(lo, hi, hessian=True)
        if zero or H is None:
            return (0.0, "the box (with the near-minimiser) reaches a neuron w_i = 0, where L is not "
                    "differentiable: split", {"zero_neuron": True})
        a = gershgorin_lower(H)
        m_up = self._star_L
        level = max(float(floor), float(enc.L.lo))
        numbers = {"hessian_lower": a, "loss_point_upper": m_up, "level": level,
                   "hull_width": float(np.max(hi - lo)) if lo.size else 0.0}
        if not a > 0:
            return (0.0, "the Hessian enclosure over the box and the near-minimiser is not positive definite "
                    "(Gershgorin)", numbers)
        if m_up == 0.0:        # L(theta*) = 0 exactly: |grad L|^2 >= 2 a L everywhere on the box, floor 0 included
            return (float(down(a * 0.5)), "L is a-strongly convex on the box and theta*, where L = 0 exactly "
                    "(Gershgorin on the interval Hessian): R >= a/2", numbers)
        if not level > m_up:
            return (0.0, f"L at the near-minimiser ({m_up:.3g}) is not below the box's level {level:.3g}", numbers)
        factor = float(down(1.0 - float(up(m_up / level))))
        value = float(down(float(down(a * 0.5)) * factor))
        return (max(value, 0.0), "L is a-strongly convex on the box and the near-minimiser theta* (Gershgorin on "
                "the interval Hessian): R >= (a/2)(1 - L(theta*)/L) on {L >= level}", numbers)

    def _near_minimiser(self) -> np.ndarray:
        """Float gradient descent from theta0 on the closed form (a candidate point only: nothing rests on
        its accuracy; the rule encloses L there)."""
        from .population import energy_and_grads

        c = 0.5 * self._c.lo + 0.5 * self._c.hi
        fixed = 0.5 * self._fixed.lo + 0.5 * self._fixed.hi
        theta = self.theta0.copy()
        if self.nvar == 0:
            return theta
        step = 0.5 / max(1.0, float(np.max(c[:self.nvar] ** 2)) * self.nvar)
        best, best_L = theta, math.inf
        for _ in range(DESCENT_STEPS):
            P = np.concatenate([theta[self._idx], fixed])
            if np.any(np.linalg.norm(P[:self.nvar], axis=1) == 0):
                break
            L, gP, _ = energy_and_grads(P, c)
            g = np.zeros(self.m)
            np.add.at(g, self._idx.reshape(-1), gP[:self.nvar].reshape(-1))
            if not (np.all(np.isfinite(g)) and math.isfinite(L)):
                break
            if L <= best_L:
                best, best_L = theta, L
            theta = theta - step * g
        return self._snapped(best)     # the lowest float L seen (theta0 if the descent went astray)

    def _snapped(self, theta: np.ndarray) -> np.ndarray:
        """theta, or theta with every student row replaced by the teacher row nearest to it when that gives
        a smaller upper bound on L: with as many students as teachers and equal coefficients this is an exact
        fit (L = 0 exactly, enclose_closed_form), which lets the convex rule reach floor 0."""
        nfix = self._fixed.shape[0]
        point = bool(np.all(self._c.lo == self._c.hi) and np.all(self._fixed.lo == self._fixed.hi))
        if self.nvar != nfix or self.nvar == 0 or not point:
            return theta
        fixed = self._fixed.lo
        snapped, used = theta.copy(), set()
        for r in range(self.nvar):
            row = theta[self._idx[r]]
            order = np.argsort(np.linalg.norm(fixed - row, axis=1))
            j = next((int(j) for j in order if int(j) not in used), None)
            if j is None or self._c.lo[r] != -self._c.lo[self.nvar + j]:
                return theta
            used.add(j)
            snapped[self._idx[r]] = fixed[j]
        here = float(self.at_point(theta, False).L.hi)
        there = float(self.at_point(snapped, False).L.hi)
        return snapped if there < here else theta
