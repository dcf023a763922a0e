"""Population losses: L(theta) = E_{x ~ N(0, I_d)} (f(x) - y(x))^2 in closed form, for a model
and a target that are sums of ReLU neurons (docs/theory.md, section 11).

With the arc-cosine kernel of degree 1,

    k(u, w) = E[relu(u.x) relu(w.x)] = |u| |w| (sin t + (pi - t) cos t) / (2 pi),   t = angle(u, w),

a sum of neurons f = sum_i a_i relu(u_i.x) and a target y = sum_j b_j relu(v_j.x) give

    L = a' K(U, U) a - 2 a' K(U, V) b + b' K(V, V) b          (exact).

Written as k(u, w) = u.w / 2 + |u| |w| J(t) / (2 pi), J(t) = sin t - t cos t (J ~ t^3 / 3 near
0), the value is accurate where the two vectors are nearly parallel (t -> 0) or opposite
(t -> pi). The gradient is written in closed form (OffDiagonalGram.backward):

    d k / d u = w / 2 + (|w| / (2 pi)) (sin t u^ - t w^)  =  [(pi - t) w + |w| sin t u^] / (2 pi),

and is itself built from differentiable operations, so Hessian-vector products (the adversarial
search, the smoothness estimate) work through it. Guards, so that no NaN is produced:

- the angle is t = atan2(|w^ - c u^|, c) with c = u^.w^ clipped to [-1, 1], never arccos (whose
  derivative is infinite at c = +-1, where autodiff gives NaN); J(t) by its Taylor series below
  t = 0.25 (the direct formula cancels there);
- the diagonal k(w, w) = |w|^2 / 2 (gradient w) is written in closed form, not through the angle;
- a neuron at exactly 0 (u = 0): L is not differentiable there (k(., w) is positively
  homogeneous of degree 1). The unit vector u^ is taken as 0, which gives d k / d u = w / 4: the
  gradient with the convention relu'(0) = 1/2. Neurons near 0 are ordinary points.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..language.evaluate import CONSTANTS, evaluate

TWO_PI = 2.0 * math.pi
SERIES_BELOW = 0.25   # J(t) by its Taylor series below this angle (relative error < 1e-14)


def _j(t: np.ndarray) -> np.ndarray:
    """J(t) = sin t - t cos t, by its Taylor series for small t (no cancellation):
    J = sum_{k>=1} (-1)^(k+1) 2k t^(2k+1) / (2k+1)!  = t^3/3 - t^5/30 + t^7/840 - ..."""
    t2 = t * t
    series = t * t2 * (1 / 3 + t2 * (-1 / 30 + t2 * (1 / 840 + t2 * (-1 / 45360 + t2 * (1 / 3991680)))))
    return np.where(t < SERIES_BELOW, series, np.sin(t) - t * np.cos(t))


# The same formulas serve numpy (fast on these tiny arrays: the value, and the gradient when no
# second derivative is asked) and torch (the gradient as a differentiable graph, for
# Hessian-vector products). `xp` is the module; torch accepts numpy's names used here.

def _unit(P, xp):
    """(|p|, p^) row by row, with p^ = 0 where p = 0 (no division by zero, no NaN gradient)."""
    norm_sq = (P * P).sum(axis=1)
    zero = norm_sq == 0
    norm = xp.sqrt(xp.where(zero, xp.ones_like(norm_sq), norm_sq))
    norm = xp.where(zero, xp.zeros_like(norm), norm)
    unit = P / xp.where(zero, xp.ones_like(norm), norm)[:, None]
    return norm, unit


def _angles(Ph, xp):
    """t_ij = angle(p_i, p_j) and s_ij = sin t_ij for unit (or zero) rows: t = atan2(|p^_j - c p^_i|, c),
    c = p^_i . p^_j clipped to [-1, 1] (a zero row gives t = pi/2 against any other row)."""
    c = (Ph @ Ph.T).clip(-1.0, 1.0)
    perp = Ph[None, :, :] - c[:, :, None] * Ph[:, None, :]      # [i, j, :] = p^_j - c_ij p^_i
    s_sq = (perp * perp).sum(axis=-1)
    zero = s_sq == 0
    s = xp.sqrt(xp.where(zero, xp.ones_like(s_sq), s_sq))
    s = xp.where(zero, xp.zeros_like(s), s)
    return xp.arctan2(s, c), s


def _off_value(P: np.ndarray) -> np.ndarray:
    """k(p_i, p_j) = p_i.p_j / 2 + |p_i| |p_j| J(t_ij) / (2 pi) off the diagonal, 0 on it."""
    a, Ph = _unit(P, np)
    t, _ = _angles(Ph, np)
    K = (P @ P.T) / 2 + np.outer(a, a) * _j(t) / TWO_PI
    np.fill_diagonal(K, 0.0)
    return K


def _off_grad(P, G, xp):
    """d/dp_i of sum_{j != l} G_jl k(p_j, p_l) in closed form, with S = G + G' (k is symmetric):
    sum_j S_ij d k(p_i, p_j) / d p_i,   d k(u, w) / d u = w / 2 + (|w| / (2 pi)) (sin t u^ - t w^)."""
    a, Ph = _unit(P, xp)
    t, s = _angles(Ph, xp)
    off = 1 - (np.eye(P.shape[0]) if xp is np else torch.eye(P.shape[0], dtype=P.dtype, device=P.device))
    S = (G + G.T) * off
    Sa = S * a[None, :]            # S_ij |p_j|
    return (S @ P) / 2 + ((Sa * s).sum(axis=1)[:, None] * Ph - (Sa * t) @ Ph) / TWO_PI


class OffDiagonalGram(torch.autograd.Function):
    """K_ij = k(p_i, p_j) for i != j and 0 on the diagonal, for the rows p_i of P [N, d], with the
    closed-form gradient. The value, and the gradient when no graph is asked, are computed in numpy;
    with create_graph the gradient is a torch graph (double backward goes through _off_grad)."""

    @staticmethod
    def forward(ctx, P):
        ctx.save_for_backward(P)
        value = _off_value(P.detach().cpu().numpy())
        return torch.from_numpy(value).to(dtype=P.dtype, device=P.device)

    @staticmethod
    def backward(ctx, G):
        (P,) = ctx.saved_tensors
        if torch.is_grad_enabled():      # create_graph: a differentiable gradient
            return _off_grad(P, G, torch)
        grad = _off_grad(P.detach().cpu().numpy(), G.detach().cpu().numpy(), np)
        return torch.from_numpy(grad).to(dtype=P.dtype, device=P.device)


def arccos_gram(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """[p, q] matrix of k(u_i, v_j) = E[relu(u_i.x) relu(v_j.x)], x ~ N(0, I) (a test helper: the loss
    uses energy())."""
    P = torch.cat([U, V])
    p = U.shape[0]
    K = OffDiagonalGram.apply(P)[:p, p:]
    return K


def energy(P: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """E[(sum_i c_i relu(p_i.x))^2] = sum_i c_i^2 |p_i|^2 / 2 + sum_{i != j} c_i c_j k(p_i, p_j): the
    diagonal k(p, p) = |p|^2 / 2 (gradient p) in closed form, the other pairs by OffDiagonalGram."""
    diag = 0.5 * (c * c * (P * P).sum(dim=1)).sum()
    if P.shape[0] < 2:
        return diag
    return diag + c @ OffDiagonalGram.apply(P) @ c


# --- the population loss of a checked spec ---------------------------------------------------------

def _neurons(terms, env: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the neuron groups of one side (model or target) into weights [N, d] and coefficients [N]."""
    Us, As = [], []
    for term in terms:
        W = evaluate(term.weights, env)
        W = W.reshape(1, -1) if W.dim() == 1 else W
        coef = torch.ones(W.shape[0], dtype=W.dtype, device=W.device)
        for c in term.coefs:
            coef = coef * evaluate(c, env)
        for factor in term.factors:
            coef = coef * evaluate(factor, env)
        Us.append(W)
        As.append(coef * term.sign)
    return torch.cat(Us), torch.cat(As)


class PopulationLoss:
    """theta -> L(theta) = E (f - y)^2 over x ~ N(0, I_d), in closed form (a torch scalar, with
    autograd): f - y = sum_i c_i relu(p_i.x) over the model's neurons (c = a) and the target's
    (c = -b). `value_and_grad` is a numpy fast path for L and grad L (no autograd, no graph) when
    every neuron group's weights are a bare name and its coefficients bare names or numbers: the
    common specs, where one gradient step costs tens of microseconds instead of a millisecond."""

    def __init__(self, problem, checked):
        form = checked.population
        self.problem = problem
        self.constants = dict(problem.constants)
        with torch.no_grad():
            self.V, self.b = _neurons(form.target, dict(self.constants))
        self.model = form.model
        self._plan = _fast_plan(problem, form.model, self.constants)
        if self._plan is not None:
            self._Vn, self._bn = self.V.cpu().numpy(), self.b.cpu().numpy()

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        env = dict(self.constants)
        env.update(self.problem.unflatten(theta))
        U, a = _neurons(self.model, env)
        return energy(torch.cat([U, self.V]), torch.cat([a, -self.b]))

    @property
    def fast(self) -> bool:
        return self._plan is not None

    def value_and_grad(self, theta: torch.Tensor) -> tuple[float, np.ndarray]:
        """(L, grad L as a numpy array) by the closed forms in numpy: dL/dp_i = c_i^2 p_i + 2 sum_j c_i c_j dk(p_i, p_j)/dp_i
        and dL/dc_i = c_i |p_i|^2 + 2 sum_j c_j k(p_i, p_j), then the chain rule into theta."""
        th = theta.detach().cpu().numpy()
        rows, coefs = [], []
        for g in self._plan:
            rows.append(g["weights"](th))
            coefs.append(g["sign"] * g["scale"] * _prod([c(th) for c in g["coefs"]], rows[-1].shape[0]))
        U, a = np.concatenate(rows), np.concatenate(coefs)
        L, gP, gc = energy_and_grads(np.concatenate([U, self._Vn]), np.concatenate([a, -self._bn]))
        grad = np.zeros_like(th)
        i = 0
        for g, W, co in zip(self._plan, rows, coefs):
            n = W.shape[0]
            g["weights_grad"](grad, gP[i:i + n])
            for j, cg in enumerate(g["coef_grads"]):
                if cg is not None:     # d c_i / d coef_j = sign * scale * prod of the other coefs
                    others = _prod([c(th) for k, c in enumerate(g["coefs"]) if k != j], n)
                    cg(grad, gc[i:i + n] * g["sign"] * g["scale"] * others)
            i += n
        return L, grad


def energy_and_grads(P: np.ndarray, c: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """E[(sum_i c_i relu(p_i.x))^2] and its gradients with respect to P and c, in one pass (the
    formulas of _off_value and _off_grad, with the angles computed once)."""
    sq = (P * P).sum(axis=1)
    norm = np.sqrt(sq)
    unit = P / np.where(norm > 0, norm, 1.0)[:, None]
    C = (unit @ unit.T).clip(-1.0, 1.0)
    perp = unit[None, :, :] - C[:, :, None] * unit[:, None, :]
    s = np.sqrt((perp * perp).sum(axis=-1))
    t = np.arctan2(s, C)
    K = (P @ P.T) / 2 + np.outer(norm, norm) * _j(t) / TWO_PI
    np.fill_diagonal(K, 0.0)
    Kc = K @ c
    L = 0.5 * float((c * c * sq).sum()) + float(c @ Kc)
    S = 2 * np.outer(c, c)
    np.fill_diagonal(S, 0.0)
    Sa = S * norm[None, :]
    gP = (S @ P) / 2 + ((Sa * s).sum(axis=1)[:, None] * unit - (Sa * t) @ unit) / TWO_PI + (c * c)[:, None] * P
    return L, gP, c * sq + 2 * Kc


def _prod(values: list, n: int) -> np.ndarray:
    out = np.ones(n)
    for v in values:
        out = out * v
    return out


def _fast_plan(problem, groups, constants) -> list[dict] | None:
    """Per group: how to read its weights and coefficients from theta (numpy) and where their
    gradients go; None when a group is not of the simple form (then autograd is used)."""
    offsets, i = {}, 0
    for name, shape, size in zip(problem.names, problem.shapes, problem.sizes):
        offsets[name] = (i, i + size, shape)
        i += size
    consts = {k: v.cpu().numpy() for k, v in constants.items()}

    def reader(e):
        """(read(th) -> array, add_grad(grad, g) or None) for a bare name or a number; None otherwise."""
        if e.op == "number":
            value = float(e.attrs["value"])
            return (lambda th: value), None
        if e.op != "name":
            return None
        name = e.attrs["id"]
        if name in offsets:
            lo, hi, shape = offsets[name]

            def add(grad, g, lo=lo, hi=hi):
                g = np.asarray(g)
                # a parameter broadcast over the neurons (shape [] or [1]) collects the sum
                grad[lo:hi] += g.reshape(-1) if g.size == hi - lo else g.sum()

            return (lambda th, lo=lo, hi=hi, shape=shape: th[lo:hi].reshape(shape)), add
        if name in consts:
            value = consts[name]
            return (lambda th: value), None
        if name in CONSTANTS:
            value = CONSTANTS[name]
            return (lambda th: value), None
        return None

    plan = []
    for group in groups:
        w = reader(group.weights) if group.weights.op == "name" else None
        if w is None:
            return None
        coef = [reader(c) for c in group.coefs]
        if any(r is None for r in coef):
            return None
        scale = 1.0
        for factor in group.factors:
            if any(n in offsets for n in names_in(factor)):
                return None
            scale *= float(evaluate(factor, {**constants}))
        read_w, add_w = w

        def weights(th, read_w=read_w):
            W = np.asarray(read_w(th), dtype=np.float64)
            return W.reshape(1, -1) if W.ndim == 1 else W

        def weights_grad(grad, g, add_w=add_w):
            if add_w is not None:
                add_w(grad, g)

        plan.append({"weights": weights, "weights_grad": weights_grad, "coefs": [r for r, _ in coef],
                     "coef_grads": [add for _, add in coef], "sign": float(group.sign), "scale": scale})
    return plan


def names_in(e) -> set[str]:
    """Every name an expression reads."""
    if e.op == "name":
        return {e.attrs["id"]}
    out = set()
    for a in e.args:
        out |= names_in(a)
    for v in e.kwargs.values():
        out |= names_in(v)
    return out


def population_loss(problem, checked) -> PopulationLoss:
    return PopulationLoss(problem, checked)


ROUNDING = 1e-14   # relative to E f^2 + E y^2: measured errors are about 1e-16 of it (docs/theory.md 11)


def rounding_level(problem, checked) -> float:
    """The closed form adds terms of size E f^2 + E y^2 that cancel near a fit, so its absolute
    rounding error is about 1e-16 (E f^2 + E y^2) (measured against 40-digit mpmath); losses below
    1e-14 (E f^2 + E y^2) at theta0 are treated as rounding noise."""
    form = checked.population
    env = dict(problem.constants)
    env.update(problem.unflatten(problem.theta0))
    with torch.no_grad():
        U, a = _neurons(form.model, env)
        V, b = _neurons(form.target, dict(problem.constants))
        scale = float(energy(U, a)) + float(energy(V, b))
    return ROUNDING * scale
