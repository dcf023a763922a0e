"""The region of a sound run as the engine and the boxes see it, and the interval check of one
point (the refutations of docs/theory.md 10.1)."""
from __future__ import annotations

import numpy as np
import torch

from ...compile.interval_model import IntervalModel
from ...compile.iv import iv_mag
from ...compile.rounding import down, nonneg_sum_lower, sqnorm_upper, up


def _numpy(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy().astype(np.float64)
    return np.asarray(t, dtype=np.float64)


class SoundRegion:
    """The region as boxes: box [c - h, c + h] or the bounding box of a ball, widened outward."""

    def __init__(self, region):
        self.kind = region.kind
        self.center = _numpy(region.center)
        self.size = float(region.radius if self.kind == "ball" else region.halfwidth)
        self.lo = down(self.center - self.size)
        self.hi = up(self.center + self.size)

    def contains(self, theta: np.ndarray) -> bool:
        """Verified membership of a double point."""
        d = np.maximum(np.abs(down(theta - self.center)), np.abs(up(theta - self.center)))
        if self.kind == "box":
            return bool(np.all(d <= self.size))
        return bool(float(sqnorm_upper(d)) <= float(down(self.size * self.size)))

    def outside(self, lo: np.ndarray, hi: np.ndarray) -> bool:
        """True when the box [lo, hi] has no point of the ball (box regions: never)."""
        if self.kind != "ball":
            return False
        gap = np.maximum(np.maximum(down(lo - self.center), down(self.center - hi)), 0.0)
        dist_sq = float(nonneg_sum_lower(np.maximum(down(gap * gap), 0.0)))
        return dist_sq > float(up(self.size * self.size))

    def project(self, theta: np.ndarray) -> np.ndarray:
        if self.kind == "box":
            return np.clip(theta, up(self.center - self.size), down(self.center + self.size))
        d = theta - self.center
        norm = float(np.linalg.norm(d))
        limit = self.size * (1 - 1e-12)
        return theta if norm <= limit else self.center + d * (limit / norm)


def verify_point(model: IntervalModel, reg: SoundRegion, theta: np.ndarray, floor: float,
                 needed: float, subspace=None, ceiling: float = np.inf) -> dict | None:
    """Interval evaluation at a double point: in the region, L >= floor, R < needed? Returns the
    verified numbers, or None.

    For an affine model with lambda_min(Sigma) >= lam > 0 it also bounds the minimum loss from
    below: L - L* = d^T Sigma d and ||grad L||^2 = 4 d^T Sigma^2 d >= 4 lam (L - L*), so
    L* >= L - ||grad L||^2 / (4 lam). When that exceeds the floor, the loss never reaches the
    floor along any trajectory: the claim itself is false."""
    theta = np.asarray(theta, dtype=np.float64)
    if not reg.contains(theta):
        return None
    enc = model.at_point(theta, True)
    L_lo, L_hi = float(enc.L.lo), float(enc.L.hi)
    if not (L_lo >= floor and L_lo > 0):
        return None
    if not L_hi <= ceiling:         # outside the sublevel set the certificate covers
        return None
    gsq_hi = float(sqnorm_upper(iv_mag(enc.grad)))
    den = float(enc.gsq.lo)          # min ||g||_D^2 at the point (least squares: down(4 L_lo))
    if not den > 0:
        return None
    r_hi = float(up(gsq_hi / den))
    if not r_hi < needed:
        return None
    out = {"distance": float(np.linalg.norm(theta - reg.center)), "loss_lower": L_lo, "loss_upper": L_hi,
           "grad_sqnorm_upper": gsq_hi, "rayleigh_upper": r_hi, "needed_mu": needed}
    if subspace is not None and subspace.lam > 0 and model.least_squares:
        # least squares on an affine model: ||grad L||^2 = 4 d^T Sigma^2 d (the docstring's 4)
        lstar_lower = float(down(L_lo - float(up(gsq_hi / down(4.0 * subspace.lam)))))
        out["min_loss_lower"] = lstar_lower
        out["claim_false"] = bool(lstar_lower > floor)
    if theta.size <= 64:
        out["theta"] = theta.tolist()
    return out
