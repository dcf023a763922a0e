"""Interval rules of the losses the sound mode takes, keyed by the name of the loss in the loss table
(language/losses.py declares each loss and its KL facts; it sits below compile/ and cannot hold interval
code, so the enclosures live here, one entry per loss, and tests/test_sound_losses.py checks that every
loss with `sound=True` has one).

For outputs F [n, k] enclosed over a box (or at a point) and the stored targets, a rule returns a
`LossEnclosure`, every part sound with directed rounding (docs/theory.md 10.3):

- per_sample: the per-sample losses l_i [n];
- L: the mean loss (1/n) sum_i l_i;
- g: the functional gradient g_i = dl_i/dF_i divided by the exact power of two `g_scale`, so that
  grad L = (g_scale / n) J^T g (least squares keeps its residual r = F - y with g_scale 2, which is
  what the sound mode has always computed with);
- gsq: ||g||_D^2 = (1/n) sum_i ||g_i||^2, the denominator of R = ||grad L||^2 / ||g||_D^2.

`refine(enc, L)` recomputes what depends on L after the caller tightened L (the mean-value form
over a box): least squares has ||g||_D^2 = 4 L exactly, the exponential loss ||g||_D^2 >= L^2, the
logistic loss nothing (its ||g||_D^2 = mean h(l_i) is not a function of L).

`curvature(F, y)` bounds the loss's second derivative in the outputs: d_i >= sup ||Hess_F l_i||_2 over
the enclosure F (least squares 2; logistic sigma'(z_i) <= 1/4; exponential l_i; cross-entropy
||diag(p) - p p^T||_2 <= max_j 2 p_j (1 - p_j) <= 1/2 by Gershgorin, the rows' sums being exact since
sum p = 1), so that Hess L <= (1/n) J^T diag(d) J for an affine model (the smoothness of gradient
descent, analyse/sound/smoothness.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from .interval import NotSupported, sigmoid_iv, unimodal_s1ms
from .iv import Iv, iv_of, iv_square, iv_sub, iv_sum, monotone
from .rounding import down, nonneg_sum_lower, nonneg_sum_upper, point_bounds, up


@dataclass
class LossEnclosure:
    per_sample: Iv       # [n]
    L: Iv                # scalar
    g: Iv                # [n, k]: the functional gradient / g_scale
    g_scale: float       # an exact power of two
    gsq: Iv              # scalar: ||g||_D^2 (of the functional gradient itself, not of g / g_scale)


@dataclass(frozen=True)
class IntervalLoss:
    name: str
    enclose: Callable[[Iv, np.ndarray], LossEnclosure]     # (F [n, k], y [n, k])
    refine: Callable[[LossEnclosure, Iv], LossEnclosure]    # the same with a tighter L
    gsq_text: str                                           # ||g||_D^2 in the direct rule's reason
    curvature: Callable[[Iv, np.ndarray], np.ndarray]      # d [n] >= sup ||Hess_F l_i||_2 over F
    gsq_per_loss: float     # ||g||_D^2 <= gsq_per_loss * L (exponential: * n L): G of gradient descent


def _scalar(lo, hi) -> Iv:
    return iv_of(np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64))


def _mean_nonneg(lo: np.ndarray, hi: np.ndarray, n: int) -> Iv:
    """(1/n) sum of nonnegative entries in [lo, hi], rounded outward."""
    return _scalar(np.maximum(down(nonneg_sum_lower(np.maximum(lo, 0.0)) / n), 0.0),
                   up(nonneg_sum_upper(hi) / n))


# --- least squares: l_i = ||F_i - y_i||^2, g = 2 (F - y), ||g||_D^2 = 4 L exactly ------------------------
def _ls_enclose(F: Iv, y: np.ndarray) -> LossEnclosure:
    n = F.shape[0]
    r = iv_sub(F, Iv(y))
    sq = iv_square(r)
    total = iv_sum(sq, None)
    L = iv_of(np.maximum(down(total.lo / n), 0.0), up(total.hi / n))
    per = iv_sum(sq, 1)
    return _ls_refine(LossEnclosure(Iv(np.maximum(per.lo, 0.0), per.hi), L, r, 2.0, L), L)


def _ls_refine(enc: LossEnclosure, L: Iv) -> LossEnclosure:
    # 4 L: multiplying by 4 is exact, the extra ulp only guards overflow to inf
    return replace(enc, L=L, gsq=_scalar(np.maximum(down(4.0 * L.lo), 0.0), up(4.0 * L.hi)))


# --- exponential, labels +-1, one output: l_i = exp(-y_i F_i), g_i = -y_i l_i, ||g||_D^2 = mean l_i^2 ----
def _exp_enclose(F: Iv, y: np.ndarray) -> LossEnclosure:
    n = F.shape[0]
    # ||g||_D^2 >= L^2 (the composition's constant c = 1) needs one output per sample
    pos, zlo, zhi = _pm1_z(F, y, "exponential")
    l = monotone("exp", Iv(zlo, zhi))
    llo, lhi = np.maximum(l.lo, 0.0), l.hi
    g = Iv(np.where(pos, -lhi, llo), np.where(pos, -llo, lhi))
    with np.errstate(over="ignore"):
        gsq = _mean_nonneg(np.maximum(down(llo * llo), 0.0), up(lhi * lhi), n)
    per = Iv(llo[:, 0], lhi[:, 0])
    L = _mean_nonneg(llo, lhi, n)
    return _exp_refine(LossEnclosure(per, L, g, 1.0, gsq), L)


def _exp_refine(enc: LossEnclosure, L: Iv) -> LossEnclosure:
    # mean l_i^2 >= (mean l_i)^2 (Jensen): a second lower bound, tighter when L was tightened
    with np.errstate(over="ignore"):
        lo = np.maximum(enc.gsq.lo, np.maximum(down(L.lo * L.lo), 0.0))
    return replace(enc, L=L, gsq=_scalar(lo, enc.gsq.hi))


# --- logistic, labels +-1, one output: l_i = log(1 + exp(z_i)), z_i = -y_i F_i, g_i = -y_i sigmoid(z_i) ----
def _pm1_z(F: Iv, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, k = F.shape
    if k != 1:
        raise NotSupported(f"the {what} loss with more than one output per sample", None)
    if not np.all(np.abs(y) == 1.0):
        raise NotSupported(f"the {what} loss with labels other than +-1", None)
    pos = y > 0
    return pos, np.where(pos, -F.hi, F.lo), np.where(pos, -F.lo, F.hi)     # z = -y F, exactly


def _softplus(zlo: np.ndarray, zhi: np.ndarray) -> Iv:
    """log(1 + e^z) (the exact function, not torch's thresholded one), increasing; >= max(z, 0)."""
    e_lo, _ = point_bounds("exp", zlo)
    _, e_hi = point_bounds("exp", zhi)
    lo, _ = point_bounds("log1p", e_lo)
    _, hi = point_bounds("log1p", e_hi)
    return iv_of(np.maximum(np.maximum(lo, zlo), 0.0), hi)


def _logistic_enclose(F: Iv, y: np.ndarray) -> LossEnclosure:
    n = F.shape[0]
    pos, zlo, zhi = _pm1_z(F, y, "logistic")
    l = _softplus(zlo, zhi)
    s = sigmoid_iv(Iv(zlo, zhi))                   # |g_i| = sigmoid(z_i) = 1 - exp(-l_i)
    g = Iv(np.where(pos, -s.hi, s.lo), np.where(pos, -s.lo, s.hi))
    gsq = _mean_nonneg(np.maximum(down(s.lo * s.lo), 0.0), up(s.hi * s.hi), n)
    return LossEnclosure(Iv(l.lo[:, 0], l.hi[:, 0]), _mean_nonneg(l.lo, l.hi, n), g, 1.0, gsq)


def _logistic_curvature(F: Iv, y: np.ndarray) -> np.ndarray:
    # l'' in F is sigmoid(z) (1 - sigmoid(z)) (y^2 = 1): concave in s = sigmoid(z), at most 1/4
    _, zlo, zhi = _pm1_z(F, y, "logistic")
    return unimodal_s1ms(sigmoid_iv(Iv(zlo, zhi))).hi[:, 0]


def _exp_curvature(F: Iv, y: np.ndarray) -> np.ndarray:
    # l'' in F is y^2 exp(-y F) = l_i: the per-sample loss's upper bound
    _, zlo, zhi = _pm1_z(F, y, "exponential")
    return monotone("exp", Iv(zlo, zhi)).hi[:, 0]


# --- softmax cross-entropy, one-hot labels: l_i = log(1 + sum_{j != y} e^{F_j - F_y}), g_i = p_i - e_{y_i} ------
def _exp_sum(dlo: np.ndarray, dhi: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on sum_j e^{d_j} over the entries where mask is true (last axis), d_j in [dlo, dhi]."""
    e_lo, _ = point_bounds("exp", dlo)
    _, e_hi = point_bounds("exp", dhi)
    e_lo = np.where(mask, np.maximum(e_lo, 0.0), 0.0)
    e_hi = np.where(mask, e_hi, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        return nonneg_sum_lower(e_lo, axis=-1), nonneg_sum_upper(e_hi, axis=-1)


def _ce_labels(F: Iv, y: np.ndarray) -> np.ndarray:
    onehot = y == 1.0
    if not (np.all((y == 0.0) | onehot) and np.all(onehot.sum(axis=1) == 1)):
        raise NotSupported("the cross_entropy loss with labels that are not one class per sample", None)
    return onehot


def _ce_probabilities(F: Iv) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on the softmax p_j = 1 / (1 + sum_{m != j} e^{F_m - F_j}): increasing in F_j, decreasing
    in the others."""
    n, k = F.shape
    p_lo, p_hi = np.empty((n, k)), np.empty((n, k))
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(k):
            others = np.ones(k, dtype=bool)
            others[j] = False
            mask = np.broadcast_to(others, (n, k))
            _, t_hi = _exp_sum(up(F.hi - F.lo[:, j:j + 1]), up(F.hi - F.lo[:, j:j + 1]), mask)
            t_lo, _ = _exp_sum(down(F.lo - F.hi[:, j:j + 1]), down(F.lo - F.hi[:, j:j + 1]), mask)
            p_lo[:, j] = down(1.0 / up(1.0 + t_hi))
            p_hi[:, j] = up(1.0 / down(1.0 + t_lo))
    return np.nan_to_num(np.clip(p_lo, 0.0, 1.0), nan=0.0), np.nan_to_num(np.clip(p_hi, 0.0, 1.0), nan=1.0)


def _ce_curvature(F: Iv, y: np.ndarray) -> np.ndarray:
    # Hess_F l_i = diag(p) - p p^T: PSD, row j's absolute sum p_j (1 - p_j) + p_j sum_{m != j} p_m
    # = 2 p_j (1 - p_j) exactly (sum p = 1), so lambda_max <= max_j 2 p_j (1 - p_j) (Gershgorin)
    _ce_labels(F, y)
    p_lo, p_hi = _ce_probabilities(F)
    return np.minimum(up(2.0 * np.max(unimodal_s1ms(Iv(p_lo, p_hi)).hi, axis=1)), 0.5)


def _ce_enclose(F: Iv, y: np.ndarray) -> LossEnclosure:
    n, k = F.shape
    onehot = _ce_labels(F, y)
    cls = np.argmax(onehot, axis=1)
    ylo, yhi = F.lo[np.arange(n), cls][:, None], F.hi[np.arange(n), cls][:, None]
    with np.errstate(over="ignore", invalid="ignore"):
        # l_i = log(1 + sum_{j != y} e^{d_j}), d_j = F_j - F_y (increasing in each d_j)
        s_lo, _ = _exp_sum(down(F.lo - yhi), down(F.lo - yhi), ~onehot)
        _, s_hi = _exp_sum(up(F.hi - ylo), up(F.hi - ylo), ~onehot)
        l_lo, _ = point_bounds("log1p", s_lo)
        _, l_hi = point_bounds("log1p", s_hi)
        l = iv_of(np.maximum(l_lo, 0.0), l_hi)
    p_lo, p_hi = _ce_probabilities(F)
    # g = p - e_y; |g_ij| = p_j off the label, 1 - p_y on it
    g = iv_of(np.where(onehot, down(p_lo - 1.0), p_lo), np.where(onehot, up(p_hi - 1.0), p_hi))
    a_lo = np.where(onehot, np.maximum(down(1.0 - p_hi), 0.0), p_lo)
    a_hi = np.where(onehot, up(1.0 - p_lo), p_hi)
    gsq = _mean_nonneg(nonneg_sum_lower(np.maximum(down(a_lo * a_lo), 0.0), axis=1),
                       nonneg_sum_upper(up(a_hi * a_hi), axis=1), n)
    return LossEnclosure(l, _mean_nonneg(l.lo, l.hi, n), g, 1.0, gsq)


INTERVAL_LOSSES: dict[str, IntervalLoss] = {
    "least_squares": IntervalLoss("least_squares", _ls_enclose, _ls_refine, "4L",
                                  lambda F, y: np.full(F.shape[0], 2.0), 4.0),
    "exponential": IntervalLoss("exponential", _exp_enclose, _exp_refine, "||g||_D^2 = mean l_i^2",
                                _exp_curvature, math.inf),
    # logistic: sigmoid(z)^2 <= sigmoid(z) = 1 - e^-l <= l; cross-entropy: ||p - e_y||^2 <= 2 (1 - p_y)^2
    # <= 2 (1 - p_y) <= 2 l; exponential: mean l_i^2 <= max l_i L <= n L^2 (gsq_per_loss inf: that case)
    "logistic": IntervalLoss("logistic", _logistic_enclose, lambda enc, L: replace(enc, L=L),
                             "||g||_D^2 = mean sigmoid(-y_i F_i)^2", _logistic_curvature, 1.0),
    "cross_entropy": IntervalLoss("cross_entropy", _ce_enclose, lambda enc, L: replace(enc, L=L),
                                  "||g||_D^2 = mean ||p_i - e_y_i||^2", _ce_curvature, 2.0),
}
