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
class Form:
    """F(x) = s sum_j a_j act((W x)_j + b_j) + c: the parameters' slices of theta ('W', 'a', 'b')."""

    slices: dict
    h: int
    d: int
    w_first: bool                  # W [h, d] (W @ x); False: W [d, h] (x @ W)
    activation: str
    scale: tuple | None            # ('div', k) or ('mul', k)


def match(model) -> Form | None:
    """The two-layer form of an IntervalModel's expression: [index(..., 0) of a one-entry output]
    [+ c] of [core / k, core * k, k * core or core], core = sum(a * H), a @ H (a [h]) or A @ H (A [1, h]),
    H = act(W @ x [+ b]) or act(x @ W [+ b]) (compile/two_layer.py's form, and the torch translation's
    `(output.weight @ act(hidden.weight @ x)) / k` with its [0])."""
    if model.k != 1 or model.x.ndim != 2:
        return None
    shapes = {name: tuple(shape) for name, shape in zip(model.names, model.shapes)}
    slices = {name: slice(int(o), int(o) + int(z)) for name, o, z in zip(model.names, model.offsets, model.sizes)}
    body = model.body
    if body.op == "index" and len(body.args) == 2 and body.args[1].op == "number" and body.args[1].attrs["value"] == 0:
        body = body.args[0]
    core, _ = _split_add(body, {k for k, v in shapes.items() if v in ((), (1,))})
    core, op, k = _split_scale(core)
    a = hidden = None
    inner = _plain_call(core, "sum")
    if inner is not None and inner.op == "mul" and len(inner.args) == 2:
        left, right = inner.args
        a, hidden = (_name(left), right) if _name(left) in shapes else (_name(right), left)
    elif core.op == "matmul" and len(core.args) == 2:
        a, hidden = _name(core.args[0]), core.args[1]
    if a not in shapes or len(shapes[a]) not in (1, 2) or (len(shapes[a]) == 2 and shapes[a][0] != 1):
        return None
    h = shapes[a][-1]
    act = next((f for f in ACTIVATIONS if _plain_call(hidden, f) is not None), None) if hidden is not None else None
    if act is None:
        return None
    pre, b = _split_add(_plain_call(hidden, act), {k for k, v in shapes.items() if v == (h,)})
    if pre.op != "matmul" or len(pre.args) != 2:
        return None
    left, right = (_name(t) for t in pre.args)
    d = model.x.shape[1]
    if left in shapes and right == model.arg and shapes[left] == (h, d):
        W, w_first = left, True
    elif left == model.arg and right in shapes and shapes[right] == (d, h):
        W, w_first = right, False
    else:
        return None
    roles = {"W": W, "a": a, "b": b}
    used = [v for v in roles.values() if v is not None]
    if len(set(used)) != len(used):
        return None
    return Form({role: slices[name] for role, name in roles.items() if name is not None}, int(h), int(d), w_first,
                act, (op, k) if op else None)


class TwoLayerCurvature:
    """bound(center, radius, r) >= sup over B(center, radius) and r_i in r of ||sum_i r_i Hess f_i||_2."""

    def __init__(self, form, x: np.ndarray):
        self.form = form
        self.h, self.d = form.h, form.d
        ones = [np.ones((x.shape[0], 1))] if "b" in form.slices else []
        self.xt = np.ascontiguousarray(np.concatenate([np.asarray(x, dtype=np.float64)] + ones, axis=1))
        n, dt = self.xt.shape
        outer = self.xt[:, :, None] * self.xt[:, None, :]              # x~_i x~_i^T, each product rounded
        self.outer = iv_of(down(outer.reshape(n, dt * dt)), up(outer.reshape(n, dt * dt)))
        self.xnorm = up(np.sqrt(nonneg_sum_upper(up(self.xt * self.xt), 1)))      # >= |x~_i|
        op, k = form.scale or ("mul", 1.0)
        s = abs(1.0 / k) if op == "div" else abs(k)
        self.scale = float(up(up(s) * (1.0 + REL_MARGIN)))

    @classmethod
    def of(cls, model) -> "TwoLayerCurvature | None":
        """The bound for an IntervalModel whose model is a two-layer network with a smooth activation
        and one output (written in the spec or translated from a torch module), else None. Made once
        and kept on the model."""
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
        return np.ascontiguousarray(W), theta[f.slices["a"]]

    def bound(self, center: np.ndarray, radius: float, r: Iv) -> float:
        """An upper bound on ||sum_i r_i Hess f_i(theta)||_2 for every theta within `radius` of
        `center` and every r_i in the interval r [n]."""
        Wt, a = self._units(np.asarray(center, dtype=np.float64))
        Z = iv_matmul(Iv(self.xt), Iv(np.ascontiguousarray(Wt.T)))             # [n, h] at the centre
        dz = up(self.xnorm * radius)[:, None]
        z = iv_of(down(Z.lo - dz), up(Z.hi + dz))
        av = iv_of(down(a - radius)[None, :], up(a + radius)[None, :])
        _, f1, f2 = activation_derivatives(self.form.activation, z)
        rr = Iv(r.lo.reshape(-1, 1), r.hi.reshape(-1, 1))
        C2 = iv_mul(iv_mul(rr, av), f2)                                       # r_i a_j act''(z_ij)
        C1 = iv_mul(rr, f1)                                                   # r_i act'(z_ij)
        A = iv_matmul(Iv(np.ascontiguousarray(C2.lo.T), np.ascontiguousarray(C2.hi.T)), self.outer)   # [h, dt^2]
        v = iv_matmul(Iv(np.ascontiguousarray(C1.lo.T), np.ascontiguousarray(C1.hi.T)), Iv(self.xt))  # [h, dt]
        magA, magv = iv_mag(A), iv_mag(v)
        frob = up(np.sqrt(nonneg_sum_upper(up(magA * magA), 1)))
        vnorm = up(np.sqrt(nonneg_sum_upper(up(magv * magv), 1)))
        worst = float(np.max(up(frob + vnorm)))
        return float(up(worst * self.scale)) if np.isfinite(worst) else float("inf")
