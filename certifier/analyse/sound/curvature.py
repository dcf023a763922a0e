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

The scale s is the model's constant factor (`/ k` or `* k`), taken with a relative margin of 2^-40
(a constant expression of a few correctly rounded operations or library functions is within a few
ulps of the real number it denotes; rounding.py's REL_MARGIN argument).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...compile.interval_hessian import activation_derivatives
from ...compile.iv import Iv, iv_mag, iv_matmul, iv_mul, iv_of
from ...compile.rounding import REL_MARGIN, down, nonneg_sum_upper, up
from ...compile.two_layer import _name, _plain_call, _split_add, _split_scale

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
    if pre_factors:                     # (W @ inp + b) / k: the bias is scaled too; not this form
        return False
    pre, b = _split_add(pre, set(shapes))
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
    return Chain(layers, A, rows, int(k), tuple(factors))


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
        dt = self.xt.shape[1]
        lo, hi = self.xt.lo, self.xt.hi
        outer = iv_mul(Iv(lo[:, :, None], hi[:, :, None]), Iv(lo[:, None, :], hi[:, None, :])) if not self.xt.point \
            else iv_mul(Iv(lo[:, :, None]), Iv(lo[:, None, :]))        # x~_i x~_i^T, each product enclosed
        self.outer = Iv(outer.lo.reshape(n, dt * dt), outer.hi.reshape(n, dt * dt))
        mag = iv_mag(self.xt)
        self.xnorm = up(np.sqrt(nonneg_sum_upper(up(mag * mag), 1)))       # >= |x~_i|
        self.scale = float(up(_mag_up(factor_iv(form.scale))))

    @classmethod
    def of(cls, model) -> "TwoLayerCurvature | None":
        """The bound for an IntervalModel whose model is a two-layer network with a smooth activation
        (written in the spec or translated from a torch module), else None. Made once and kept on
        the model."""
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
        M = iv_matmul(_t(C2), self.outer)                                      # [h, dt^2]
        magM = iv_mag(M)
        frob = up(np.sqrt(nonneg_sum_upper(up(magM * magM), 1)))
        vsq = np.zeros(self.h)
        for c in range(self.k):
            C1 = iv_mul(Iv(rr.lo[:, c:c + 1], rr.hi[:, c:c + 1]), f1)          # r_ic act'(z_ij)
            magv = iv_mag(iv_matmul(_t(C1), self.xt))                          # [h, dt]
            vsq = up(vsq + nonneg_sum_upper(up(magv * magv), 1))
        vnorm = up(np.sqrt(vsq))
        worst = float(np.max(up(frob + vnorm)))
        return float(up(worst * self.scale)) if np.isfinite(worst) else float("inf")


def _t(a: Iv) -> Iv:
    """The transpose of a 2-D interval array, contiguous."""
    return Iv(np.ascontiguousarray(a.lo.T), np.ascontiguousarray(a.hi.T))
