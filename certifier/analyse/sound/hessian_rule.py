"""The `hessian` rule: local strong convexity for least squares on sample models whose tangent kernel is
singular (fewer parameters than outputs, m < n k: the spectrum and block rules cannot apply), e.g. a
finite-width network that cannot fit its data (docs/theory.md 10.13).

Let theta* be a near-minimiser (damped Newton on L from theta0, snapped to a grid of 2^-30 so that a
replay on another BLAS build finds the same double point; a candidate only: nothing rests on its
accuracy) and U the smallest box holding the box B and theta*. If lambda_min(Hess L) >= a > 0 on U
(the interval Hessian of compile/interval_hessian.py; hessian_lower: Weyl on its midpoint-radius form or
Young's inequality on the Gauss-Newton part, lambda_min verified by a shifted Cholesky), L is a-strongly convex on U, so for theta in B

    L(theta*) >= L(theta) + grad L(theta) . (theta* - theta) + (a/2) |theta* - theta|^2
              >= L(theta) - |grad L(theta)|^2 / (2 a),

i.e. |grad L|^2 >= 2 a (L - L(theta*)) and R = |grad L|^2 / (4 L) >= (a/2)(1 - L(theta*)_up / level) on
{theta in B : L(theta) >= level}, level = max(floor, min_B L). This bounds R on boxes that hold the
minimiser, where min |grad L| = 0 defeats the direct rule, down to any floor above L(theta*).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...compile.interval import NotSupported
from ...compile.interval_hessian import loss_hessian, loss_hessian_parts
from ...compile.iv import Iv, iv_add, iv_matmul, iv_scale, mid_rad
from ...compile.rounding import down, up
from .linalg import lambda_min_lower, nonneg_norm2_upper, symmetrize

GRID = 2.0 ** -30        # theta* snapped to this grid (its accuracy only enters through L(theta*))
NEWTON_STEPS = 200
YOUNG = tuple(2.0 ** -k for k in range(1, 16))    # the t of Young's inequality tried (exact powers of 2)


@dataclass
class HessianFacts:
    star: np.ndarray | None
    loss_star_upper: float
    reason: str


def applicable(model) -> bool:
    """Asked for (`method interval(hessian=on)`), least squares on a (non-affine) spec model with m < n k;
    populations have their own convex rule."""
    method = getattr(getattr(model, "checked", None), "method", None)
    if method is None or (method.options or {}).get("hessian") != "on":
        return False
    return (getattr(model, "least_squares", False) and not getattr(model, "affine", True)
            and getattr(model, "population", None) is None and hasattr(model, "x")
            and 0 < model.m < model.n * model.k)


def facts(model) -> HessianFacts:
    """theta* and an upper bound on L there, computed once per model (a function of the spec alone)."""
    cached = getattr(model, "_hessian_facts", None)
    if cached is None:
        cached = _newton(model)
        model._hessian_facts = cached
    return cached


def _newton(model) -> HessianFacts:
    """Damped Newton (Levenberg-Marquardt: H + lam I, lam raised until the float loss decreases) from theta0,
    then plain Newton steps once the Hessian is positive definite; deterministic for a given spec."""
    theta = np.array(model.theta0, dtype=np.float64)

    def loss(t):
        return float(np.mean(mid_rad(model.at_point(t, False).L)[0]))
    try:
        lam, current = 0.0, loss(theta)
        for _ in range(NEWTON_STEPS):
            g, _ = mid_rad(model.at_point(theta, True).grad)
            Hm, _ = mid_rad(loss_hessian(model, theta, theta))
            Hm = 0.5 * (Hm + Hm.T)
            scale = max(1e-300, float(np.max(np.abs(Hm))))
            moved = False
            for _ in range(60):
                try:
                    Lc = np.linalg.cholesky(Hm + lam * np.eye(model.m))
                    step = np.linalg.solve(Lc.T, np.linalg.solve(Lc, g))
                except np.linalg.LinAlgError:
                    lam = max(2.0 * lam, 1e-9 * scale)
                    continue
                trial = theta - step
                value = loss(trial) if np.all(np.isfinite(trial)) else math.inf
                if value <= current:
                    theta, current, moved = trial, value, True
                    lam = lam / 4 if lam > 1e-12 * scale else 0.0
                    break
                lam = max(2.0 * lam, 1e-9 * scale)
            if not moved or float(np.max(np.abs(step))) <= 1e-15 * (1.0 + float(np.max(np.abs(theta)))):
                break
    except NotSupported as exc:
        return HessianFacts(None, math.inf, f"no Hessian enclosure: {exc.message}")
    star = np.round(theta / GRID) * GRID
    L_up = float(model.at_point(star, False).L.hi)
    if not math.isfinite(L_up):
        return HessianFacts(None, math.inf, "the loss at the near-minimiser is not finite")
    return HessianFacts(star, L_up, "damped Newton from theta0")


def hessian_lower(model, lo: np.ndarray, hi: np.ndarray, F=None) -> tuple[float | None, dict]:
    """A lower bound on lambda_min(Hess L) over [lo, hi] (None: no positive bound), the larger of
    - Weyl on the interval Hessian (2/n)(J^T J + C) (midpoint's lambda_min verified, minus the radius's norm);
    - Young: with J = Jm + E (|E| <= Jr) and C = Cm + D (|D| <= Cr), for every unit v and t in (0, 1)
      |J v|^2 >= (1 - t)|Jm v|^2 - (1/t - 1)|E v|^2, so
      (n/2) v^T Hess L v >= lambda_min((1 - t) Jm^T Jm + Cm) - ||Cr||_2 - (1/t - 1) ||Jr||_2^2:
      the perturbation enters squared, not multiplied by ||J||_2 (docs/theory.md 10.13)."""
    J, C = loss_hessian_parts(model, lo, hi, F)
    n = model.n
    JT = Iv(np.ascontiguousarray(J.lo.T), np.ascontiguousarray(J.hi.T))
    H = iv_add(iv_matmul(JT, J), C)
    Hm, Hr = symmetrize(*mid_rad(H))
    weyl, info = lambda_min_lower(Hm, Hr)
    best = float(down(down(2.0 * weyl) / n)) if weyl is not None else None
    numbers = {"weyl": best, "hessian_estimate": 2.0 * info["estimate"] / n if "estimate" in info else None}
    Jm, Jr = mid_rad(J)
    Cm, Cr = symmetrize(*mid_rad(C))
    e2 = float(up(nonneg_norm2_upper(Jr) ** 2 * (1 + 1e-15)))
    cr = nonneg_norm2_upper(Cr)
    numbers.update(jacobian_radius_sq=e2, curvature_radius=cr)
    G = iv_matmul(Iv(np.ascontiguousarray(Jm.T)), Iv(Jm))
    for t in YOUNG:
        M = iv_add(iv_scale(G, 1.0 - t), Iv(Cm))
        lam, _ = lambda_min_lower(*symmetrize(*mid_rad(M)))
        if lam is None:
            continue
        value = float(down(down(lam - cr) - float(up(e2 * (1.0 / t - 1.0)))))
        value = float(down(down(2.0 * value) / n))
        if value > 0 and (best is None or value > best):
            best = value
            numbers["young_t"] = t
    return best, numbers


def hessian_bound(model, enc, floor: float):
    """(value, reason, numbers) of the rule on enc's box, or None where it does not apply."""
    if not applicable(model):
        return None
    f = facts(model)
    if f.star is None:
        return None
    lo, hi = np.minimum(enc.lo, f.star), np.maximum(enc.hi, f.star)
    numbers = {"loss_point_upper": f.loss_star_upper, "hull_width": float(np.max(hi - lo))}
    try:
        F = model.over_box(lo, hi).F
        a, more = hessian_lower(model, lo, hi, F)
    except NotSupported as exc:
        return (0.0, f"no Hessian enclosure: {exc.message}", numbers)
    numbers.update(more)
    numbers["hessian_lower"] = a
    if a is None or not a > 0:
        return (0.0, "the Hessian enclosure over the box and the near-minimiser is not proved positive definite "
                "(Weyl or Young on the interval Hessian)", numbers)
    level = max(float(floor), float(enc.L.lo))
    numbers["level"] = level
    if not level > f.loss_star_upper:
        return (0.0, f"L at the near-minimiser ({f.loss_star_upper:.6g}) is not below the box's level "
                f"{level:.6g}", numbers)
    factor = float(down(1.0 - float(up(f.loss_star_upper / level))))
    value = float(down(float(down(a * 0.5)) * factor))
    return (max(value, 0.0), "L is a-strongly convex on the box and the near-minimiser theta* (interval Hessian, "
            "Weyl or Young): R >= (a/2)(1 - L(theta*)/L) on {L >= level}", numbers)
