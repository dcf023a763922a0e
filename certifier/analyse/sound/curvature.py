"""The residual curvature of a two-layer network, bounded with its cancellations (the tube's ell).

The trajectory tube (tube.py) needs ell >= sup ||(2/n) sum_i r_i Hess f_i|| over a ball, r_i the
residuals (docs/theory.md 10.12). The general bound (2/n) sum_i |r_i| sup ||Hess f_i|| adds the
samples' curvatures in magnitude. For F(x) = s sum_j a_j act(w_j . x + b_j) + c (compile/two_layer.py's
form) the Hessian is block diagonal over the hidden units: unit j's parameters u_j = (w_j, b_j, a_j)
meet no other unit's, and with x~ = (x, 1) (1 only when there are biases), z_ij = w_j . x_i + b_j,

    sum_i r_i Hess_{u_j} f_i = s [[ sum_i r_i a_j act''(z_ij) x~_i x~_i^T,  sum_i r_i act'(z_ij) x~_i ],
                                  [ (the same vector)^T,                   0                         ]],

so the operator norm of the sum is the largest of the units' block norms, each at most the Frobenius
norm of the upper-left block plus the norm of the vector (the block splits into those two parts, and
[[0, v], [v^T, 0]] has norm |v|). Evaluated with intervals over the ball B(theta_c, R): a_j within
R of its centre value, z_ij within R |x~_i| of its centre value (|(w_j, b_j) change| <= R), act' and
act'' enclosed over those z (compile/interval_hessian.activation_derivatives) and r_i *signed*, the
residual's enclosure over the ball: the sum over the samples keeps its signs and directions, which is
what makes it smaller than the sum of magnitudes (measured in docs/sound.md). Every operation is
rounded outward (compile/iv.py).

The scale s is the product of the model's constant factors (`/ k` or `* k`), each taken with a
relative margin of 2^-40 (a constant expression of a few correctly rounded operations or library
functions is within a few ulps of the real number it denotes; rounding.py's REL_MARGIN argument);
a constant inside the first matmul (the torch translation's W @ (x / sqrt(d))) makes the data
x~ = x / c an enclosure. With k outputs unit j carries (w_j, b_j, A_1j..A_kj) (TwoLayerCurvature.bound).

Two hidden layers (ThreeLayerCurvature, docs/theory.md 10.12 "Three layers"): the Hessian split into
the groups (W1, b1), (W2, b2), A, bounded by the largest eigenvalue of the 3 x 3 matrix of the blocks'
norm bounds; the unit-diagonal parts keep the residuals' signs, the rest are sums over the samples.
`residual_curvature(model)` is the one entry point for both forms.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...compile.interval_hessian import activation_derivatives
from ...compile.iv import Iv, iv_add, iv_mag, iv_matmul, iv_mul, iv_of, iv_square, iv_sub, iv_sum, mid_rad
from ...compile.rounding import REL_MARGIN, down, nonneg_matmul_upper, nonneg_sum_upper, up
from ...compile.two_layer import _name, _plain_call, _split_add, _split_scale
from .linalg import nonneg_norm2_upper, symmetrize

ACTIVATIONS = ("tanh", "sigmoid", "softplus")


@dataclass
class Hidden:
    """One hidden layer act(m (W @ inp) + b): W [h, fan_in] (or [fan_in, h] when `inp @ W`, first
    layer only), `scale` the constant factors (op, k) that multiply W @ inp (m = their product)."""

    W: str
    b: str | None
    h: int
    fan_in: int
    w_first: bool
    activation: str
    scale: tuple


@dataclass
class Chain:
    """F(x) = s (A @ H_L) [+ c] with H_l = act_l(m_l (W_l @ H_{l-1}) + b_l), H_0 = x: `layers` the
    hidden layers from the input, A [k, h_L] (a [h] when k = 1), `scale` the factors of s."""

    layers: list
    A: str
    A_rows: bool                   # A has a row per output ([k, h]); False: a [h]
    k: int
    scale: tuple
    bias: str | None = None        # the output bias c (no curvature)


def _strip_scales(e, factors: list):
    """e without its outer constant factors (appended to `factors`)."""
    while True:
        core, op, k = _split_scale(e)
        if op is None:
            return e
        factors.append((op, k))
        e = core


def _hidden(e, shapes: dict, arg: str, d: int, deeper: list) -> bool:
    """Parse act(m (W @ inp) + b) into `deeper` (innermost first); inp is x or another such layer."""
    act = next((f for f in ACTIVATIONS if _plain_call(e, f) is not None), None)
    if act is None:
        return False
    pre = _plain_call(e, act)
    pre_factors: list = []
    pre = _strip_scales(pre, pre_factors)
    pre, b = _split_add(pre, set(shapes))
    if pre_factors and b is not None:   # (W @ inp + b) / k: the bias is scaled too; not this form
        return False
    pre = _strip_scales(pre, pre_factors)
    if pre.op != "matmul" or len(pre.args) != 2:
        return False
    left, right = pre.args
    if _name(left) in shapes and len(shapes[_name(left)]) == 2:
        W, inp, w_first = _name(left), right, True
    elif _name(right) in shapes and len(shapes[_name(right)]) == 2:
        W, inp, w_first = _name(right), left, False
    else:
        return False
    inp = _strip_scales(inp, pre_factors)
    h, fan_in = shapes[W] if w_first else shapes[W][::-1]
    if b is not None and shapes[b] != (h,):
        return False
    if _name(inp) == arg:
        if fan_in != d:
            return False
    elif not w_first or not _hidden(inp, shapes, arg, d, deeper) or deeper[-1].h != fan_in:
        return False
    deeper.append(Hidden(W, b, int(h), int(fan_in), w_first, act, tuple(pre_factors)))
    return True


def chain(model) -> Chain | None:
    """The layered form of an IntervalModel's expression: outer constant factors, an [index 0] of a
    one-row output, an output bias, then A @ H, a @ H or sum(a * H) (H possibly times constants),
    H = act(m (W @ inp) + b) down to the data (m: constants inside or outside W @ inp: the torch
    translation's `W @ (h / sqrt(fan_in))`). Each parameter at most once."""
    if model.x.ndim != 2:
        return None
    shapes = {name: tuple(int(v) for v in shape) for name, shape in zip(model.names, model.shapes)}
    k = model.k
    factors: list = []
    e, indexed, bias = model.body, False, None
    while True:
        e = _strip_scales(e, factors)
        if (e.op == "index" and len(e.args) == 2 and e.args[1].op == "number" and e.args[1].attrs["value"] == 0
                and not indexed and k == 1):
            e, indexed = e.args[0], True
            continue
        if bias is None:
            e2, bias = _split_add(e, {n for n, v in shapes.items() if v in ((), (1,), (k,))})
            if bias is not None:
                e = e2
                continue
        break
    A = hidden = None
    inner = _plain_call(e, "sum")
    if inner is not None and inner.op == "mul" and len(inner.args) == 2 and k == 1 and not indexed:
        left, right = inner.args
        A, hidden = (_name(left), right) if _name(left) in shapes else (_name(right), left)
    elif e.op == "matmul" and len(e.args) == 2:
        A, hidden = _name(e.args[0]), e.args[1]
    if A not in shapes or hidden is None:
        return None
    rows = len(shapes[A]) == 2
    if rows and shapes[A][0] != (1 if indexed else k):
        return None
    if not rows and (len(shapes[A]) != 1 or k != 1 or indexed):
        return None
    hidden = _strip_scales(hidden, factors)
    layers: list = []
    if not _hidden(hidden, shapes, model.arg, model.x.shape[1], layers) or layers[-1].h != shapes[A][-1]:
        return None
    used = [A, bias] + [n for layer in layers for n in (layer.W, layer.b)]
    used = [n for n in used if n is not None]
    if len(set(used)) != len(used):
        return None
    return Chain(layers, A, rows, int(k), tuple(factors), bias)


def factor_iv(factors) -> Iv:
    """An interval holding the product of the real constants (op, k) (k within a relative 2^-40 of
    the double it is evaluated to, rounding.py's REL_MARGIN argument), rounded outward."""
    lo = hi = 1.0
    for op, k in factors:
        v = 1.0 / k if op == "div" else k
        if not np.isfinite(v) or v == 0.0:
            return Iv(np.float64(-np.inf), np.float64(np.inf))
        width = float(up(abs(v) * (4.0 * REL_MARGIN)))       # the constant's margin and 1/k's rounding
        f = iv_mul(Iv(np.float64(lo), np.float64(hi)), iv_of(down(v - width), up(v + width)))
        lo, hi = float(f.lo), float(f.hi)
    return Iv(np.float64(lo), np.float64(hi))


def _mag_up(v: Iv) -> float:
    return float(max(abs(float(v.lo)), abs(float(v.hi))))


@dataclass
class Form:
    """F(x) = s sum_j A_cj act(m (W x)_j + b_j) + c_c, c = 1..k: the parameters' slices of theta
    ('W', 'a', 'b'), `scale` the factors of s, `x_scale` those of m."""

    slices: dict
    h: int
    d: int
    w_first: bool                  # W [h, d] (W @ x); False: W [d, h] (x @ W)
    activation: str
    scale: tuple
    x_scale: tuple = ()
    k: int = 1


def _slices(model) -> dict:
    return {name: slice(int(o), int(o) + int(z)) for name, o, z in zip(model.names, model.offsets, model.sizes)}


def match(model) -> Form | None:
    """The two-layer form (one hidden layer, tanh, sigmoid or softplus) of an IntervalModel's
    expression (`chain`), else None."""
    c = chain(model)
    if c is None or len(c.layers) != 1:
        return None
    layer = c.layers[0]
    slices = _slices(model)
    roles = {"W": layer.W, "a": c.A, "b": layer.b}
    return Form({role: slices[name] for role, name in roles.items() if name is not None}, layer.h, layer.fan_in,
                layer.w_first, layer.activation, c.scale, layer.scale, c.k)


class TwoLayerCurvature:
    """bound(center, radius, r) >= sup over B(center, radius) and r_ic in r of ||sum_ic r_ic Hess f_ic||_2."""

    def __init__(self, form, x: np.ndarray):
        self.form = form
        self.h, self.d, self.k = form.h, form.d, form.k
        n = x.shape[0]
        xs = np.asarray(x, dtype=np.float64)
        # the data times the layer's constant (x / sqrt(d) in the NTK form): an enclosure, not a float
        xv = iv_mul(Iv(xs), factor_iv(form.x_scale)) if form.x_scale else Iv(xs)
        if "b" in form.slices:
            ones = np.ones((n, 1))
            xv = Iv(np.concatenate([xv.lo, ones], axis=1), np.concatenate([xv.hi, ones], axis=1))
        self.xt = Iv(np.ascontiguousarray(xv.lo), np.ascontiguousarray(xv.hi)) if not xv.point else xv
        # G_il = (x~_i . x~_l)^2 = <x~_i x~_i^T, x~_l x~_l^T>_F, the Gram matrix of the outer products
        # (entrywise >= 0): ||M_j||_F^2 = beta_j^T G beta_j without forming M_j (bound)
        self.gram = iv_square(iv_matmul(self.xt, _t(self.xt)))
        mag = iv_mag(self.xt)
        self.xnorm = up(np.sqrt(nonneg_sum_upper(up(mag * mag), 1)))       # >= |x~_i|
        self.scale = float(up(_mag_up(factor_iv(form.scale))))

    @classmethod
    def of(cls, model) -> "TwoLayerCurvature | None":
        """The bound for an IntervalModel whose model is a two-layer network with a smooth activation
        (written in the spec or translated from a torch module), else None. Made once and kept on
        the model (two_layer_ball.py reads its data and units too)."""
        if not hasattr(model, "_curvature"):
            form = match(model)
            model._curvature = cls(form, model.x) if form is not None else None
        return model._curvature

    def _units(self, theta: np.ndarray):
        f = self.form
        W = theta[f.slices["W"]]
        W = W.reshape(self.h, self.d) if f.w_first else W.reshape(self.d, self.h).T
        if "b" in f.slices:
            W = np.concatenate([W, theta[f.slices["b"]].reshape(self.h, 1)], axis=1)
        return np.ascontiguousarray(W), theta[f.slices["a"]].reshape(self.k, self.h)

    def bound(self, center: np.ndarray, radius: float, r: Iv) -> float:
        """An upper bound on ||sum_ic r_ic Hess f_ic(theta)||_2 for every theta within `radius` of
        `center` and every r_ic in the interval r [n k] (sample-major, as IntervalModel flattens
        the residual). Unit j's block over (w_j, b_j, A_1j..A_kj) is s [[M_j, V_j], [V_j^T, 0]] with
        M_j = sum_i (sum_c r_ic A_cj) act''(z_ij) x~_i x~_i^T and V_j's column c sum_i r_ic act'(z_ij) x~_i;
        its norm is at most ||M_j||_F + ||V_j||_F (the two parts' norms, ||[[0, V], [V^T, 0]]|| = ||V||_2)."""
        Wt, A = self._units(np.asarray(center, dtype=np.float64))
        n = self.xt.shape[0]
        Z = iv_matmul(self.xt, Iv(np.ascontiguousarray(Wt.T)))                  # [n, h] at the centre
        dz = up(self.xnorm * radius)[:, None]
        z = iv_of(down(Z.lo - dz), up(Z.hi + dz))
        av = iv_of(down(A - radius), up(A + radius))                           # [k, h]
        _, f1, f2 = activation_derivatives(self.form.activation, z)
        rr = Iv(r.lo.reshape(n, self.k), r.hi.reshape(n, self.k))
        C2 = iv_mul(iv_matmul(rr, av), f2)                                     # sum_c r_ic A_cj act''(z_ij)
        # ||M_j||_F from the Gram matrix, O(n^2 h) (M itself, [h, dt^2], took 1.7 s at h 4096, n = dt = 64);
        # never looser than that interval product but where the samples cancel to rounding (_gram_frob)
        frob = _gram_frob(self.gram, C2)                                       # >= ||M_j||_F, [h]
        vsq = np.zeros(self.h)
        for c in range(self.k):
            C1 = iv_mul(Iv(rr.lo[:, c:c + 1], rr.hi[:, c:c + 1]), f1)          # r_ic act'(z_ij)
            magv = iv_mag(iv_matmul(_t(C1), self.xt))                          # [h, dt]
            vsq = up(vsq + nonneg_sum_upper(up(magv * magv), 1))
        vnorm = up(np.sqrt(vsq))
        worst = float(np.max(up(frob + vnorm)))
        return float(up(worst * self.scale)) if np.isfinite(worst) else float("inf")


def _gram_frob(G: Iv, beta: Iv) -> np.ndarray:
    """>= ||sum_i beta_ij O_i||_F for every column beta_j of the interval beta [n, h], given the
    enclosure G [n, n] of the O_i's Gram matrix <O_i, O_l>_F (entrywise >= 0). With beta = bc + d,
    bc the float midpoint and |d| <= br (mid_rad), ||.||_F^2 = bc^T G bc + 2 d^T G bc + d^T G d
    <= bc^T G bc + 2 br^T |G bc| + br^T G br (G >= 0 entrywise): the first term keeps the signs of
    bc (it cancels across the samples), enclosed by interval products (so G's own width and every
    rounding are in it), the other two are sums of nonnegative terms rounded up (docs/theory.md
    10.12). Cost O(n^2 h), against O(n h dt^2) for the matrices M_j themselves. Each term is at most
    its counterpart in the interval product C2^T [O_i] (|<O_l, A>| <= <|O_l|, |A|>, (x~_i . x~_l)^2 <=
    (|x~_i| . |x~_l|)^2), so this is never the looser but where bc^T G bc cancels to within rounding:
    there the rounding error sits under the square root (about 1e-8 of the magnitudes' norm, where
    the product's is about 1e-16; tests/test_curvature.py), too small to keep the product for."""
    bc, br = mid_rad(beta)
    with np.errstate(invalid="ignore", over="ignore"):
        P = iv_matmul(G, Iv(bc))                                              # G bc, [n, h]
        signed = iv_sum(iv_mul(Iv(bc), P), 0).hi                              # >= bc^T G bc
        cross = nonneg_sum_upper(up(br * iv_mag(P)), 0)                       # >= |d^T G bc|
        Gup = np.maximum(G.hi, 0.0)
        rad = nonneg_sum_upper(up(br * nonneg_matmul_upper(Gup, br)), 0)     # >= d^T G d
        sq = up(up(np.maximum(signed, 0.0) + up(2.0 * cross)) + rad)
        out = up(np.sqrt(sq))
    return np.where(np.isnan(out), np.inf, out)          # an unbounded beta (inf * 0 above): no bound


def _t(a: Iv) -> Iv:
    """The transpose of a 2-D interval array, contiguous."""
    return Iv(np.ascontiguousarray(a.lo.T), np.ascontiguousarray(a.hi.T))


def _iv_rows(a: Iv, rows) -> Iv:
    return Iv(a.lo[rows], a.hi[rows])


def _sqnorm_up(mag: np.ndarray, axis) -> np.ndarray:
    return nonneg_sum_upper(up(mag * mag), axis)


def _norm_up(mag: np.ndarray, axis=None) -> np.ndarray:
    """>= the 2-norm of any vector with |v| <= mag entrywise (along `axis`)."""
    return up(np.sqrt(_sqnorm_up(mag, axis)))


def sym_norm_upper(Hm: np.ndarray, Hr: np.ndarray, signs=(1.0, -1.0)) -> float:
    """>= max over sign in `signs` of lambda_max(sign H) for every symmetric H with |H - Hm| <= Hr (both
    signs: >= ||H||_2). For a shift s (a power-iteration estimate, grown until a Cholesky factor L of
    fl(s I - sign Hm) exists), s I - sign Hm = L L^T + E with E enclosed by interval arithmetic and
    L L^T >= 0, so lambda_max(sign H) <= s + ||E||_2 + ||Hr||_2 (Weyl); nothing is assumed of the
    factor's accuracy. Else the Frobenius bound."""
    size = Hm.shape[0]
    mag = iv_mag(Iv(down(Hm - Hr), up(Hm + Hr)))
    frob = float(up(np.sqrt(float(_sqnorm_up(mag, None)))))
    if not np.isfinite(frob) or size == 0:
        return frob
    v = np.random.default_rng(0).standard_normal(size)
    est = 0.0
    for _ in range(60):
        w = Hm @ v
        est = float(np.linalg.norm(w))
        if not est > 0:
            break
        v = w / est
    radius = nonneg_norm2_upper(Hr)
    eye = np.eye(size)
    worst = 0.0
    for sign in signs:
        found = None
        for grow in (1.01, 1.03, 1.06, 1.1, 1.2, 1.35, 1.6, 2.0, 3.0, 5.0):     # est may be low: a slow power method
            shift = est * grow + 1e-300
            L = _cholesky(shift * eye - sign * Hm)
            if L is None:
                continue
            if np.all(np.isfinite(L)):
                M = iv_of(down(shift - sign * np.diag(Hm)), up(shift - sign * np.diag(Hm)))
                Mv = Iv(-sign * Hm)
                Mv = Iv(Mv.lo.copy(), Mv.hi.copy())
                np.fill_diagonal(Mv.lo, M.lo)
                np.fill_diagonal(Mv.hi, M.hi)
                E = iv_sub(Mv, iv_matmul(Iv(L), Iv(np.ascontiguousarray(L.T))))
                found = float(up(up(shift + nonneg_norm2_upper(iv_mag(E))) + radius))
            break
        if found is None:
            return frob
        worst = max(worst, found)
    return min(frob, worst)


def _cholesky(M: np.ndarray) -> np.ndarray | None:
    """A float Cholesky factor of M, or None where a pivot is not positive. Row by row in numpy up to
    512 (multi-threaded LAPACK took 0.25 s for a 256 Cholesky on a busy 2-core machine); its accuracy
    is not relied on (sym_norm_upper encloses the residual)."""
    size = M.shape[0]
    if size > 512:
        try:
            return np.linalg.cholesky(M)
        except np.linalg.LinAlgError:
            return None
    L = np.zeros_like(M)
    for j in range(size):
        row = L[j, :j]
        pivot = M[j, j] - row @ row
        if not pivot > 0:
            return None
        L[j, j] = np.sqrt(pivot)
        if j + 1 < size:
            L[j + 1:, j] = (M[j + 1:, j] - L[j + 1:, :j] @ row) / L[j, j]
    return L


def spectral_upper(gram: Iv) -> float:
    """>= sqrt(lambda_max(G)) for the symmetric positive semidefinite G enclosed by `gram` (W W^T:
    then >= ||W||_2), by sym_norm_upper."""
    Gm, Gr = symmetrize(*mid_rad(gram))
    return float(up(np.sqrt(sym_norm_upper(Gm, Gr, signs=(1.0,)))))


class ThreeLayerCurvature:
    """bound(center, radius, r) >= sup over B(center, radius) and r_ic in r of ||sum_ic r_ic Hess f_ic||_2
    for F = s (A g2 + b3), g2 = act(z2), z2 = alpha W2 g1 + b2, g1 = act(z1), z1 = W1 u + b1, u = m x
    (docs/theory.md 10.12, "three layers"). With s = 1 (the Hessian is linear in s), per sample i,
    ghat_i = (alpha g1_i, 1), u~_i = (u_i, 1), rho_i = sum_c r_ic A_c, beta_il = rho_il act''(z2_il):

      (W~2, A) [unit-diagonal over layer 2's units l]: [[M_l, V_l], [V_l^T, 0]],
          M_l = sum_i beta_il ghat_i ghat_i^T, V_l's column c = sum_i r_ic act'(z2_il) ghat_i;
      (W~1, W~1) = sum_i u~_i u~_i^T (x) (alpha^2 E_i W2^T diag(beta_i) W2 E_i + diag(q_i act''(z1_i))),
          E_i = diag act'(z1_i), q_i = sum_c r_ic Q_ic, Q_ic = alpha W2^T (act'(z2_i) A_c);
      (W~2, W~1): X -> sum_i [(beta_i . alpha W2 E_i X u~_i) ghat_i^T + alpha t_i (act'(z1_i) . X u~_i)^T];
      (A, W~1):   X -> [sum_i r_ic act'(z2_i) . alpha W2 E_i X u~_i]_c.

    The unit-diagonal parts keep the residuals' signs (the Frobenius norms of M_l and V_l from the
    n x n Gram matrix of the ghat_i); the rest are sums over the samples of operator-norm products.
    Over the ball every vector is its value at the centre (an enclosure) plus a deviation bounded in
    norm, matrices W2 at the centre plus ||dW2||_F <= radius, so nothing of size width^2 is formed
    beyond W2 itself. ||H|| <= lambda_max of the 3 x 3 matrix of the blocks' norm bounds."""

    def __init__(self, chain_form: Chain, model):
        self.chain = chain_form
        first, second = chain_form.layers
        self.first, self.second = first, second
        self.k = chain_form.k
        sl = _slices(model)
        self.sl = {"W1": sl[first.W], "W2": sl[second.W], "A": sl[chain_form.A],
                   "b1": sl[first.b] if first.b else None, "b2": sl[second.b] if second.b else None}
        n = model.x.shape[0]
        xs = np.asarray(model.x, dtype=np.float64)
        xv = iv_mul(Iv(xs), factor_iv(first.scale)) if first.scale else Iv(xs)
        if first.b is not None:
            ones = np.ones((n, 1))
            xv = Iv(np.concatenate([xv.lo, ones], axis=1), np.concatenate([xv.hi, ones], axis=1))
        self.ut = Iv(np.ascontiguousarray(xv.lo), np.ascontiguousarray(xv.hi))           # u~_i [n, dt]
        self.gram = iv_square(iv_matmul(self.ut, _t(self.ut)))                           # (u~_i . u~_l)^2
        self.unorm = _norm_up(iv_mag(self.ut), 1)                                           # >= |u~_i|
        self.alpha = factor_iv(second.scale)
        self.amag = _mag_up(self.alpha)
        self.scale = float(up(_mag_up(factor_iv(chain_form.scale))))

    @classmethod
    def of(cls, model) -> "ThreeLayerCurvature | None":
        """The bound for two hidden layers (`chain`'s form), else None; kept on the model."""
        if not hasattr(model, "_curvature3"):
            c = chain(model)
            model._curvature3 = cls(c, model) if c is not None and len(c.layers) == 2 else None
        return model._curvature3

    def _params(self, theta):
        f, g = self.first, self.second
        W1 = theta[self.sl["W1"]]
        W1 = W1.reshape(f.h, f.fan_in) if f.w_first else W1.reshape(f.fan_in, f.h).T
        if self.sl["b1"] is not None:
            W1 = np.concatenate([W1, theta[self.sl["b1"]].reshape(f.h, 1)], axis=1)
        W2 = theta[self.sl["W2"]].reshape(g.h, g.fan_in)
        b2 = theta[self.sl["b2"]] if self.sl["b2"] is not None else None
        A = theta[self.sl["A"]].reshape(self.k, g.h)
        return np.ascontiguousarray(W1), np.ascontiguousarray(W2), b2, A

    def bound(self, center: np.ndarray, radius: float, r: Iv) -> float:
        """An upper bound on ||sum_ic r_ic Hess f_ic(theta)||_2 for every theta within `radius` of
        `center` and every r_ic in the interval r [n k] (sample-major)."""
        R = float(up(radius))
        W1, W2, b2, A = self._params(np.asarray(center, dtype=np.float64))
        n, k = self.ut.shape[0], self.k
        act1, act2 = self.first.activation, self.second.activation
        amag = self.amag
        # layer 1: z1 entrywise within R |u~_i| of the centre (|dW~1 u~_i| <= R |u~_i|)
        Z1 = iv_matmul(self.ut, Iv(np.ascontiguousarray(W1.T)))                       # [n, h1]
        z1c, z1 = Z1, _widen(Z1, up(self.unorm * R)[:, None])
        g1c, _, _ = activation_derivatives(act1, z1c)
        _, s1, t1 = activation_derivatives(act1, z1)                                  # act', act'' over the ball
        e1 = np.max(iv_mag(s1), axis=1)                                               # >= |act'(z1_ij)|
        dg = up(up(e1 * self.unorm) * R)                                              # >= |g1_i - g1c_i|
        g1norm = up(_norm_up(iv_mag(g1c), 1) + dg)                                   # >= |g1_i|
        # layer 2's input ghat = (alpha g1, 1)
        gh = iv_mul(g1c, self.alpha)
        if b2 is not None:
            gh = Iv(np.concatenate([gh.lo, np.ones((n, 1))], 1), np.concatenate([gh.hi, np.ones((n, 1))], 1))
        eps = up(dg * amag)                                                           # >= |ghat_i - ghatc_i|
        ghn = _norm_up(iv_mag(gh), 1)                                                 # >= |ghatc_i|
        W2t = np.concatenate([W2, b2.reshape(-1, 1)], 1) if b2 is not None else W2
        z2c = iv_matmul(gh, Iv(np.ascontiguousarray(W2t.T)))                         # [n, h2]
        K = iv_matmul(Iv(W2), Iv(np.ascontiguousarray(W2.T)))                     # W2c W2c^T [h2, h2]
        w2 = spectral_upper(K)
        w2b = float(up(w2 + R))                                                       # >= ||W2|| on the ball
        rows2 = _norm_up(np.abs(W2), 1)                                               # |W2c_l|
        cols2 = _norm_up(np.abs(W2), 0)                                               # |W2c[:, j]|
        bias_dev = R if b2 is not None else 0.0
        shift = up(up(amag * up(g1norm * R)) + bias_dev)                              # alpha |dW2| |g1| + |db2|
        dz2 = up(up(amag * up(w2 * dg)) + shift)                                      # >= |z2_i - z2c_i|
        dz2e = np.minimum(dz2[:, None], up(up(amag * up(rows2[None, :] * dg[:, None])) + shift[:, None]))
        z2 = _widen(z2c, dz2e)
        _, s2c, _ = activation_derivatives(act2, z2c)
        _, s2, t2 = activation_derivatives(act2, z2)
        e2 = np.max(iv_mag(s2), axis=1)
        tmax2 = np.max(iv_mag(t2), axis=1)
        Av = _widen(Iv(A), np.full(A.shape, R))                                       # [k, h2]
        rr = Iv(r.lo.reshape(n, k), r.hi.reshape(n, k))
        rmag = iv_mag(rr)
        # --- layer 2's units: M_l and V_l, the samples' signs kept (Gram of the ghatc_i) --------------
        G = iv_matmul(gh, _t(gh))                                                     # [n, n]
        beta = iv_mul(iv_matmul(rr, Av), t2)                                          # [n, h2]
        bmag = iv_mag(beta)
        quad = iv_matmul(iv_mul(G, G), beta)                                          # (G o G) beta_l
        frobM = _sqrt_hi(iv_sum(iv_mul(beta, quad), 0))
        frobM = up(frobM + nonneg_sum_upper(up(bmag * up(up(up(2.0 * ghn) + eps) * eps)[:, None]), 0))
        vsq = np.zeros(W2.shape[0])
        for c in range(k):
            kap = iv_mul(_iv_rows(rr, (slice(None), slice(c, c + 1))), s2)             # r_ic act'(z2_il)
            vc = _sqrt_hi(iv_sum(iv_mul(kap, iv_matmul(G, kap)), 0))
            vc = up(vc + nonneg_sum_upper(up(iv_mag(kap) * eps[:, None]), 0))
            vsq = up(vsq + up(vc * vc))
        frobV = up(np.sqrt(vsq))
        N22, N23 = float(np.max(frobM)), float(np.max(frobV))
        NG2 = float(np.max(up(frobM + frobV)))
        # --- Q_ic = alpha W2^T (act'(z2_i) . A_c) over the ball: centre enclosure + deviation ------------
        amax = np.max(np.abs(A), axis=1) + R                                          # >= |A_cl| on the ball
        s2cmax = np.max(iv_mag(s2c), axis=1)
        q = None
        tn = np.zeros(n)                                                              # >= |t_i|, t_i = sum_c r_ic v_ic
        dtn = np.zeros(n)                                                             # >= |t_i - t_ic|
        tc = None                                                                     # t_i at the centre
        for c in range(k):
            v = iv_mul(s2c, Iv(A[c][None, :]))                                        # [n, h2] at the centre
            vn = _norm_up(iv_mag(v), 1)
            dv = up(up(up(tmax2 * dz2) * float(up(amax[c]))) + up(s2cmax * R))       # >= |v_ic - vc_ic|
            vsup = up(vn + dv)
            Qc = iv_mul(iv_matmul(v, Iv(W2)), self.alpha)                             # [n, h1]
            dQ = up(amag * up(up(cols2[None, :] * dv[:, None]) + up(R * vsup)[:, None]))
            term = iv_mul(_iv_rows(rr, (slice(None), slice(c, c + 1))), _widen(Qc, dQ))
            q = term if q is None else iv_add(q, term)
            tn = up(tn + up(rmag[:, c] * vsup))
            dtn = up(dtn + up(rmag[:, c] * dv))
            term_t = iv_mul(_iv_rows(rr, (slice(None), slice(c, c + 1))), v)
            tc = term_t if tc is None else iv_add(tc, term_t)
        gam = iv_mul(q, t1)                                                           # q_ij act''(z1_ij)
        Nd = float(np.max(_gram_frob(self.gram, gam)))                                # ||sum_i gam_ij u~_i u~_i^T||_F
        # the rest of (W~1, W~1) and the cross blocks: sums over the samples of operator norms
        unit1 = up(e1 * self.unorm)                                                   # |E_i X u~_i| / |X|
        lin = up(amag * up(w2b * unit1))                                              # |alpha W2 E_i X u~_i| / |X|
        bsup = np.max(bmag, axis=1)
        # ||alpha^2 W2^T diag(beta_i) W2|| <= alpha^2 ||W2||^2 max|beta_i|, or its Frobenius norm:
        # alpha^2 (sqrt(beta_i^T (K o K) beta_i) at W2c, K = W2c W2c^T, + max|beta_i| R (2||W2c|| + R))
        # (the first is smaller at large widths, the second at small ones)
        kk = _sqrt_hi(iv_sum(iv_mul(beta, _t(iv_matmul(iv_mul(K, K), _t(beta)))), 1))
        frobQ = up(kk + up(bsup * float(up(R * up(up(2.0 * w2) + R)))))
        qi = np.minimum(up(bsup * float(up(w2b * w2b))), frobQ)
        Nq = float(nonneg_sum_upper(up(up(amag * amag) * up(qi * up(unit1 * unit1))), None))
        if n * W2.shape[0] * W2.shape[1] ** 2 <= DENSE_WORK and self.ut.shape[1] * W2.shape[1] <= DENSE_DIM:
            # small widths: that part at the centre as a matrix (the samples' and units' signs kept)
            # plus its change over the ball
            _, s1c, _ = activation_derivatives(act1, z1c)
            _, _, t2c = activation_derivatives(act2, z2c)
            beta_c = iv_mul(iv_matmul(rr, Iv(A)), t2c)
            dE = up(up(np.max(iv_mag(t1), axis=1) * self.unorm) * R)                 # >= ||E_i - E_ic||
            dB = np.max(up(beta.hi - beta.lo), axis=1)                                # >= ||B_i - B_ic||
            Mn = up(bsup * float(up(w2b * w2b)))                                      # >= ||W2^T B_i W2||
            dM = up(up(up(R * bsup) * float(up(w2b + w2))) + up(float(up(w2 * w2b)) * dB))
            dP = up(up(up(2.0 * up(dE * e1)) * Mn) + up(up(e1 * e1) * dM))
            dev = float(nonneg_sum_upper(up(up(amag * amag) * up(dP * up(self.unorm * self.unorm))), None))
            if dev < 0.5 * Nq:              # else the change over the ball alone spoils it: skip the work
                Nq = min(Nq, float(up(_dense_q(self.ut, s1c, W2, beta_c, self.alpha) + dev)))
        N11 = float(up(Nd + Nq))
        gsup = up(ghn + eps)
        # ||diag(beta_i) alpha W2|| <= alpha min(max|beta_i| ||W2||, (sum_l beta_il^2 (|W2c_l| + R)^2)^(1/2))
        rowb = _norm_up(up(bmag * up(rows2 + R)[None, :]), 1)
        bw = up(amag * np.minimum(up(bsup * w2b), rowb))
        N12 = float(nonneg_sum_upper(up(up(bw * up(unit1 * gsup)) + up(amag * up(tn * unit1))), None))
        if W2.shape[0] * gh.shape[1] * W2.shape[1] * self.ut.shape[1] <= DENSE_CROSS:
            # small widths: (W~2, W~1) at the centre as a matrix plus its change, per sample by the
            # product rule on diag(beta_i) W2 E_i (.) ghat_i and t_i (E_i .)
            _, s1c, _ = activation_derivatives(act1, z1c)
            _, _, t2c = activation_derivatives(act2, z2c)
            beta_c = iv_mul(iv_matmul(rr, Iv(A)), t2c)
            dB = np.max(up(beta.hi - beta.lo), axis=1)
            dE1 = up(up(np.max(iv_mag(t1), axis=1) * self.unorm) * R)
            first = up(up(up(dB * w2b) * e1) + up(up(bsup * R) * e1))
            first = up(up(up(first + up(up(bsup * w2) * dE1)) * gsup) + up(up(up(bsup * w2) * e1) * eps))
            second = up(up(dtn * e1) + up(tn * dE1))
            dev12 = float(nonneg_sum_upper(up(up(amag * self.unorm) * up(first + second)), None))
            if dev12 < 0.5 * N12:
                T12 = _dense_w2w1(beta_c, gh, s1c, self.ut, W2, tc, self.alpha)
                N12 = min(N12, float(up(T12 + dev12)))
        rn = _norm_up(rmag, 1)
        N13 = float(nonneg_sum_upper(up(rn * up(e2 * lin)), None))
        if k * W2.size * self.ut.shape[1] <= DENSE_CROSS:
            # small widths: (A, W~1) at the centre as a matrix, T[(c, l), (j, q)] = alpha W2_lj
            # sum_i r_ic act'(z2_il) act'(z1_ij) u~_iq, plus its change: per sample
            # ||D2 W2 E - D2c W2c Ec|| <= |dD2| ||W2|| e1 + e2 R e1 + e2 ||W2c|| |dE|
            _, s1c, _ = activation_derivatives(act1, z1c)
            dD2 = up(tmax2 * np.max(dz2e, axis=1))
            dE1 = up(up(np.max(iv_mag(t1), axis=1) * self.unorm) * R)
            per = up(up(up(dD2 * w2b) * e1) + up(up(e2 * R) * e1))
            per = up(per + up(up(e2 * w2) * dE1))
            dev13 = float(nonneg_sum_upper(up(up(rn * amag) * up(per * self.unorm)), None))
            if dev13 < 0.5 * N13:
                N13 = min(N13, float(up(_dense_cross(rr, s2c, s1c, self.ut, W2, self.alpha) + dev13)))
        N = np.array([[N11, N12, N13], [N12, N22, N23], [N13, N23, 0.0]])
        N1G = float(up(np.sqrt(float(up(up(N12 * N12) + up(N13 * N13))))))
        worst = min(nonneg_norm2_upper(N), nonneg_norm2_upper(np.array([[N11, N1G], [N1G, NG2]])))
        self.last = {"N": N, "NG2": NG2, "w2": w2, "Nd": Nd, "Nq": Nq}
        return float(up(worst * self.scale)) if np.isfinite(worst) else float("inf")


DENSE_WORK = 10 ** 8      # n h1^2 h2: the centre's (W1, W1) block formed only below this
DENSE_DIM = 128           # and its side (h1 (d + 1)) at most this (LAPACK on a busy machine: 0.25 s a 256 Cholesky)


DENSE_CROSS = 2 * 10 ** 5  # entries of the centre's cross blocks formed as matrices (above: 0.2 s a bound at 64 x 64)


def _dense_cross(rr: Iv, s2c: Iv, s1c: Iv, ut: Iv, W2: np.ndarray, alpha: Iv) -> float:
    """>= ||T|| at the centre, T[(c, l), (j, q)] = alpha W2_lj sum_i r_ic act'(z2_il) act'(z1_ij) u~_iq (all
    enclosures): the sum over i one interval product [k h2, n] x [n, h1 dt], ||T|| by spectral_upper of
    T T^T's enclosure."""
    n, k = rr.shape
    h2, h1 = W2.shape
    dt = ut.shape[1]
    a = iv_mul(Iv(rr.lo[:, :, None], rr.hi[:, :, None]), Iv(s2c.lo[:, None, :], s2c.hi[:, None, :]))  # [n, k, h2]
    b = iv_mul(Iv(s1c.lo[:, :, None], s1c.hi[:, :, None]), Iv(ut.lo[:, None, :], ut.hi[:, None, :]))  # [n, h1, dt]
    S = iv_matmul(_t(Iv(a.lo.reshape(n, k * h2), a.hi.reshape(n, k * h2))),
                  Iv(b.lo.reshape(n, h1 * dt), b.hi.reshape(n, h1 * dt)))                           # [k h2, h1 dt]
    S = Iv(S.lo.reshape(k, h2, h1, dt), S.hi.reshape(k, h2, h1, dt))
    T = iv_mul(iv_mul(S, Iv(W2[None, :, :, None])), alpha)
    T = Iv(T.lo.reshape(k * h2, h1 * dt), T.hi.reshape(k * h2, h1 * dt))
    if not (np.all(np.isfinite(T.lo)) and np.all(np.isfinite(T.hi))):
        return float("inf")
    return spectral_upper(iv_matmul(T, _t(T)))


def _dense_w2w1(beta_c: Iv, gh: Iv, s1c: Iv, ut: Iv, W2: np.ndarray, tc: Iv, alpha: Iv) -> float:
    """>= ||T|| at the centre, T[(l, p), (j, q)] = sum_i beta_il ghat_ip alpha W2_lj act'(z1_ij) u~_iq
    + [p = j] alpha sum_i t_il act'(z1_ij) u~_iq (all enclosures), by spectral_upper of T^T T."""
    n, h2 = beta_c.shape
    h1, hp, dt = W2.shape[1], gh.shape[1], ut.shape[1]
    a = iv_mul(Iv(beta_c.lo[:, :, None], beta_c.hi[:, :, None]), Iv(gh.lo[:, None, :], gh.hi[:, None, :]))
    b = iv_mul(Iv(s1c.lo[:, :, None], s1c.hi[:, :, None]), Iv(ut.lo[:, None, :], ut.hi[:, None, :]))
    bf = Iv(b.lo.reshape(n, h1 * dt), b.hi.reshape(n, h1 * dt))
    S = iv_matmul(_t(Iv(a.lo.reshape(n, h2 * hp), a.hi.reshape(n, h2 * hp))), bf)        # [h2 hp, h1 dt]
    S = Iv(S.lo.reshape(h2, hp, h1, dt), S.hi.reshape(h2, hp, h1, dt))
    T = iv_mul(S, Iv(W2[:, None, :, None]))
    D = iv_matmul(_t(tc), bf)                                                          # [h2, h1 dt]
    D = Iv(D.lo.reshape(h2, h1, dt), D.hi.reshape(h2, h1, dt))
    j = np.arange(h1)
    lo, hi = T.lo.copy(), T.hi.copy()
    lo[:, j, j, :] = down(lo[:, j, j, :] + D.lo)                                       # the p = j entries
    hi[:, j, j, :] = up(hi[:, j, j, :] + D.hi)
    T = iv_mul(Iv(lo.reshape(h2 * hp, h1 * dt), hi.reshape(h2 * hp, h1 * dt)), alpha)
    if not (np.all(np.isfinite(T.lo)) and np.all(np.isfinite(T.hi))):
        return float("inf")
    return spectral_upper(iv_matmul(_t(T), T))


def _dense_q(ut: Iv, s1c: Iv, W2: np.ndarray, beta_c: Iv, alpha: Iv) -> float:
    """>= ||sum_i u~_i u~_i^T (x) alpha^2 E_i W2^T diag(beta_i) W2 E_i|| at the centre (E_i = diag s1c_i,
    all enclosures): the matrix enclosed by interval products, its norm ||Hm|| + ||Hr|| (midpoint by
    spectral_upper of Hm Hm^T, radius by nonneg_norm2_upper)."""
    n, dt = ut.shape
    h1 = W2.shape[1]
    Y = iv_mul(Iv(s1c.lo[:, None, :], s1c.hi[:, None, :]), Iv(W2[None, :, :]))          # W2 E_i [n, h2, h1]
    Zb = iv_mul(Iv(beta_c.lo[:, :, None], beta_c.hi[:, :, None]), Y)                   # diag(beta_i) W2 E_i
    Yt = Iv(np.ascontiguousarray(np.swapaxes(Y.lo, 1, 2)), np.ascontiguousarray(np.swapaxes(Y.hi, 1, 2)))
    P = iv_mul(iv_matmul(Yt, Zb), iv_mul(alpha, alpha))                                # [n, h1, h1]
    O = iv_mul(Iv(ut.lo[:, :, None], ut.hi[:, :, None]), Iv(ut.lo[:, None, :], ut.hi[:, None, :]))   # [n, dt, dt]
    K = iv_mul(Iv(O.lo[:, :, None, :, None], O.hi[:, :, None, :, None]),
               Iv(P.lo[:, None, :, None, :], P.hi[:, None, :, None, :]))               # [n, dt, h1, dt, h1]
    H = iv_sum(K, 0)
    H = Iv(H.lo.reshape(dt * h1, dt * h1), H.hi.reshape(dt * h1, dt * h1))
    Hm, Hr = symmetrize(*mid_rad(H))
    if not (np.all(np.isfinite(Hm)) and np.all(np.isfinite(Hr))):
        return float("inf")
    return sym_norm_upper(Hm, Hr)


def _widen(a: Iv, w) -> Iv:
    return iv_of(down(a.lo - w), up(a.hi + w))


def _sqrt_hi(a: Iv) -> np.ndarray:
    """>= sqrt of the real number in a (known to be >= 0: a squared norm)."""
    return up(np.sqrt(np.maximum(a.hi, 0.0)))


def residual_curvature(model) -> "TwoLayerCurvature | ThreeLayerCurvature | None":
    """The signed residual-curvature bound for the model's layered form (one or two hidden layers),
    else None: the tube's ell (tube.segment_numbers)."""
    return TwoLayerCurvature.of(model) or ThreeLayerCurvature.of(model)
