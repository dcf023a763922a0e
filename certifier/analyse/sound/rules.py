"""The Rayleigh lower-bound rules of the sound mode: rule name -> rule.

Each rule receives the enclosures of one box (certifier.compile.interval.BoxEnclosure) and returns
a `Bound`: a number b such that R(theta) >= b for every theta in the box with L(theta) >= floor,
rounded down, with the reason and the numbers it came from (or None when it does not apply).
docs/theory.md section 10 derives each one. Conventions: R = ||grad L||^2 / ||g||_D^2 (least squares:
||g||_D^2 = 4 L; exponential: mean l_i^2), K = J J^T / n, so lambda_min(K) = sigma_min(J)^2 / n; since
grad L = (1/n) J^T g for every loss, ||grad L||^2 >= lambda_min(K) ||g||_D^2 whatever the loss.

- direct:    R >= min ||grad L||^2 / max ||g||_D^2 over the box.
- spectrum:  R >= lambda_min(K) >= (sigma_min(Jc) - ||J - Jc||_2)_+^2 / n  (Weyl), with a verified
             lower bound on sigma_min(Jc)^2 = lambda_min(Jc Jc^T); needs m >= n k.
- block:     the same with the columns of one parameter block: K >= K_b.
- subspace:  least squares on models affine in theta (exactly, by structure): R >= lambda_min(Sigma) (1 - L*/L),
             Sigma = J^T J / n, L* = min L <= L*_up, on {L >= max(floor, min L over the box)}.
- convex:    populations (no Jacobian): L a-strongly convex on the box joined with a near-minimiser theta*
             (Gershgorin on the interval Hessian): R >= (a/2)(1 - L(theta*)/L) (docs/theory.md 11.5).
- hessian:   least squares with m < n k (a singular kernel): the same on sample models, with an interval
             Hessian of L and Weyl (hessian_rule.py, docs/theory.md 10.13).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...compile.interval_model import BoxEnclosure, IntervalModel
from ...compile.iv import Iv, iv_matmul, iv_mig, mid_rad
from ...compile.rounding import down, nonneg_sum_lower, up
from .linalg import gram_lower, lambda_min_lower, nonneg_norm2_upper, sqrt_down, symmetrize

MAX_ROWS = 2048    # spectrum/block rules form an (n k) x (n k) Gram matrix


@dataclass
class Bound:
    rule: str
    value: float                     # sound lower bound on R over box cap {L >= floor}
    reason: str
    numbers: dict = field(default_factory=dict)


@dataclass
class SubspaceFacts:
    """Global facts of an affine model (computed once): lambda_min(Sigma) >= lam, min L <= lstar."""

    lam: float
    lstar: float
    numbers: dict


@dataclass
class RuleContext:
    model: IntervalModel
    floor: float
    subspace: SubspaceFacts | None = None
    blocks: dict[str, tuple[int, int]] = field(default_factory=dict)   # name -> (start, stop)


def _div_down(a: float, b: float) -> float:
    return float(down(a / b))


def rule_direct(ctx: RuleContext, enc: BoxEnclosure) -> Bound | None:
    if enc.grad is None:
        return None
    L_hi = float(enc.L.hi)
    if not (L_hi > 0 and math.isfinite(L_hi)):
        return None
    den = float(enc.gsq.hi)          # max ||g||_D^2 over the box (least squares: up(4 L_hi))
    if not (den > 0 and math.isfinite(den)):
        return None
    mig = iv_mig(enc.grad)
    num = float(nonneg_sum_lower(np.maximum(down(mig * mig), 0.0)))
    value = _div_down(num, den)
    numbers = {"grad_sqnorm_lower": num, "loss_upper": L_hi}
    if not ctx.model.least_squares:
        numbers["g_sqnorm_upper"] = den
    return Bound("direct", value, f"min ||grad L||^2 / max {ctx.model.iloss.gsq_text} over the box", numbers)


def _spectrum_bound(ctx: RuleContext, J: Iv, name: str, what: str) -> Bound | None:
    rows, cols = J.shape
    if rows > cols or rows > MAX_ROWS or rows == 0:
        return None
    Jm, Jr = mid_rad(J)
    if not (np.all(np.isfinite(Jm)) and np.all(np.isfinite(Jr))):
        return None
    lam_c, info = gram_lower(Jm)
    if lam_c is None:
        return Bound(name, 0.0, f"no positive lower bound on lambda_min(Jc Jc^T) ({what})",
                     {"lambda_center_estimate": info.get("estimate")})
    sigma_c = sqrt_down(lam_c)
    dnorm = nonneg_norm2_upper(Jr)
    gap = float(down(sigma_c - dnorm))
    n = ctx.model.n
    value = float(down(down(gap * gap) / n)) if gap > 0 else 0.0
    return Bound(name, value,
                 f"lambda_min(K) >= (sigma_min(Jc) - ||J - Jc||_2)^2 / n ({what}; Weyl, verified Cholesky)",
                 {"sigma_center_lower": sigma_c, "jacobian_radius_norm": dnorm,
                  "shift": info.get("shift"), "cholesky_residual": info.get("residual_norm")})


def rule_spectrum(ctx: RuleContext, enc: BoxEnclosure) -> Bound | None:
    if enc.J is None:
        return None
    return _spectrum_bound(ctx, enc.J, "spectrum", "all parameters")


def rule_block(ctx: RuleContext, enc: BoxEnclosure) -> Bound | None:
    if enc.J is None or len(ctx.blocks) < 2:
        return None
    rows = enc.J.shape[0]
    best = None
    for name, (a, b) in ctx.blocks.items():
        if b - a < rows:
            continue
        Jb = Iv(np.ascontiguousarray(enc.J.lo[:, a:b]), np.ascontiguousarray(enc.J.hi[:, a:b]))
        bound = _spectrum_bound(ctx, Jb, "block", f"block '{name}' alone")
        if bound is not None:
            bound.numbers["block"] = name
            if best is None or bound.value > best.value:
                best = bound
    return best


def rule_subspace(ctx: RuleContext, enc: BoxEnclosure) -> Bound | None:
    facts = ctx.subspace
    if facts is None:
        return None
    level = max(ctx.floor, float(enc.L.lo))
    if not level > facts.lstar:
        return Bound("subspace", 0.0, "the box reaches losses at or below the bound on min L",
                     {"lambda_sigma_lower": facts.lam, "min_loss_upper": facts.lstar, "loss_lower": level})
    ratio = float(up(facts.lstar / level))
    factor = float(down(1.0 - ratio))
    value = float(down(facts.lam * factor))
    return Bound("subspace", value, "affine model: R >= lambda_min(Sigma) (1 - L*/L) on {L >= level}",
                 {"lambda_sigma_lower": facts.lam, "min_loss_upper": facts.lstar, "loss_lower": level})


def rule_convex(ctx: RuleContext, enc: BoxEnclosure) -> Bound | None:
    """Population models (compile/interval_population.py, docs/theory.md 11.5): L a-strongly convex on
    the box gives R >= (a/2)(1 - L(theta')/L) for a point theta' of the box; the model computes it."""
    fn = getattr(ctx.model, "convex_bound", None)
    out = fn(enc, ctx.floor) if fn is not None else None
    return None if out is None else Bound("convex", *out)


def rule_hessian(ctx: RuleContext, enc: BoxEnclosure) -> Bound | None:
    from .hessian_rule import hessian_bound

    out = hessian_bound(ctx.model, enc, ctx.floor)
    return None if out is None else Bound("hessian", *out)


RULES: dict[str, Callable[[RuleContext, BoxEnclosure], Bound | None]] = {
    "direct": rule_direct,
    "spectrum": rule_spectrum,
    "block": rule_block,
    "subspace": rule_subspace,
    "convex": rule_convex,
    "hessian": rule_hessian,
}


def best_bound(ctx: RuleContext, enc: BoxEnclosure) -> tuple[Bound, list[Bound]]:
    """Every rule's bound on the box, and the best (largest) one."""
    found = [b for b in (rule(ctx, enc) for rule in RULES.values()) if b is not None]
    found = [b for b in found if not math.isnan(b.value)]
    for b in found:
        b.value = max(float(b.value), 0.0)       # R >= 0 always; rounding may give -0 or -eta
    if not found:
        return Bound("none", 0.0, "no rule applies", {}), []
    return max(found, key=lambda b: b.value), found


def subspace_facts(model: IntervalModel) -> SubspaceFacts | None:
    """For an affine model F(theta) = J theta + b: a lower bound on lambda_min(Sigma), Sigma = J^T J / n,
    and an upper bound on min L (the loss at a float least-squares solution, enclosed)."""
    if not model.least_squares or not model.affine or model.m == 0 or model.m > MAX_ROWS:
        return None     # L - L* = d^T Sigma d is the least-squares fact the rule rests on
    enc = model.at_point(model.theta0, True)
    J = enc.J                                   # encloses the constant Jacobian
    JT = Iv(np.ascontiguousarray(J.lo.T), np.ascontiguousarray(J.hi.T))
    S = iv_matmul(JT, J)
    S = Iv(down(S.lo / model.n), up(S.hi / model.n))
    Sm, Sr = mid_rad(S)
    Sm, Sr = symmetrize(Sm, Sr)
    lam, info = lambda_min_lower(Sm, Sr)
    # a least-squares point: one Gauss-Newton step solves an affine problem (two for accuracy)
    theta = model.theta0.copy()
    Jm, _ = mid_rad(J)
    best = float(enc.L.hi)
    for _ in range(3):
        point = model.at_point(theta, False)
        best = min(best, float(point.L.hi))
        r, _ = mid_rad(point.r)
        step, *_ = np.linalg.lstsq(Jm, r.reshape(-1), rcond=None)
        theta = theta - step
    point = model.at_point(theta, False)
    best = min(best, float(point.L.hi))
    if lam is None:
        lam = 0.0
    return SubspaceFacts(lam, best, {"lambda_sigma_lower": lam, "lambda_sigma_estimate": info.get("estimate"),
                                     "min_loss_upper": best, "least_squares_point": theta.tolist()
                                     if theta.size <= 64 else None})
