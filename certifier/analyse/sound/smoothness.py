"""A proved smoothness bound over a box, for gradient descent with a step in the sound mode
(docs/theory.md 10.9): beta >= sup ||Hess L||_2 and lam >= sup lambda_max(K) over the box.

For least squares Hess L = (2/n) (J^T J + sum_e r_e Hess F_e): the first term from the interval
Jacobian (sigma_max(Jc) verified by a Cholesky of s I - Gram, plus ||J - Jc||_2 by Weyl), the second
from the residual's magnitude and ball.py's second-order rule table (H_e >= sup ||Hess F_e||_2 over a
ball that contains the box; 0 for affine models).

For the other losses of the table on affine models (logistic, exponential, cross-entropy),
Hess L = (1/n) sum_i J_i^T Hess_F l_i J_i with Hess_F l_i PSD and ||Hess_F l_i||_2 <= d_i over the box
(compile/interval_losses.py's curvature), so 0 <= Hess L <= (1/n) J^T diag(d) J in the Loewner order
and beta is a verified lambda_max of that interval matrix (the same shifted Cholesky).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...compile.interval_model import IntervalModel
from ...compile.iv import Iv, iv_matmul, iv_sub, mid_rad
from ...compile.rounding import down, nonneg_sum_upper, sqnorm_upper, up
from .ball import BallModel, _umul
from .linalg import nonneg_norm2_upper, symmetrize


def lambda_max_upper(Gm: np.ndarray, Gr: np.ndarray) -> tuple[float, dict]:
    """An upper bound on lambda_max(G) for every symmetric G with |G - Gm| <= Gr (Gm symmetric): for a
    shift s above the float estimate, a float Cholesky factor L~ of fl(s I - Gm) gives
    s I - Gm = L~ L~^T + E with E enclosed by interval arithmetic, so lambda_max(Gm) <= s + ||E||_2, and
    Weyl adds ||Gr||_2. Falls back to || |Gm| + Gr ||_2 (>= ||G||_2, monotone on nonnegative matrices)."""
    size = Gm.shape[0]
    fallback = nonneg_norm2_upper(up(np.abs(Gm) + Gr))
    info: dict = {"fallback": fallback}
    if size == 0:
        return 0.0, info
    if not (np.all(np.isfinite(Gm)) and np.all(np.isfinite(Gr))):
        return fallback, info
    try:
        est = float(np.linalg.eigvalsh(Gm)[-1])
    except np.linalg.LinAlgError:
        return fallback, info
    info["estimate"] = est
    radius = nonneg_norm2_upper(Gr)
    scale = float(np.max(np.abs(Gm)))
    eye = np.eye(size)
    best = fallback
    for frac in (1e-12, 1e-9, 1e-6, 1e-3, 1e-1):
        s = float(up(est + max(frac * abs(est), 64 * size * 2.0 ** -53 * scale, 1e-300)))
        try:
            Lc = np.linalg.cholesky(s * eye - Gm)
        except np.linalg.LinAlgError:
            continue
        if not np.all(np.isfinite(Lc)):
            continue
        product = iv_matmul(Iv(Lc), Iv(np.ascontiguousarray(Lc.T)))
        E = iv_sub(iv_sub(Iv(s * eye), Iv(Gm)), product)        # s * eye is exact
        residual = nonneg_norm2_upper(np.maximum(np.abs(E.lo), np.abs(E.hi)))
        bound = float(up(up(s + residual) + radius))
        info.update(shift=s, residual_norm=residual)
        best = min(best, bound)
        break
    return best, info


@dataclass
class Smoothness:
    """Over a box U (least squares): beta >= sup ||Hess L||_2 and lam >= sup lambda_max(K) = sup ||J||_2^2 / n."""

    beta: float
    lam: float
    numbers: dict


def smoothness_bound(model: IntervalModel, lo: np.ndarray, hi: np.ndarray) -> Smoothness | str:
    """Hess L = (2/n) (J^T J + sum_e r_e Hess F_e) for least squares, so over the box
        ||Hess L||_2 <= (2/n) (sigma^2 + sum_e |r_e| H_e),
    sigma >= sigma_max(Jc) + ||J - Jc||_2 (Weyl; sigma_max(Jc)^2 = lambda_max of its smaller Gram
    matrix, verified), |r_e| the residual's magnitude over the box, H_e >= sup ||Hess F_e||_2 over the
    ball around the box's centre through its corners (ball.py's second-order rule table; 0 for affine
    models). A string says why no bound is available."""
    if not model.least_squares and not model.affine:
        return (f"a smoothness bound for loss '{model.loss.name}' on a model that is not affine (least squares "
                "takes any model, the other losses linear models)")
    enc = model.over_box(lo, hi)
    Jm, Jr = mid_rad(enc.J)
    if not (np.all(np.isfinite(Jm)) and np.all(np.isfinite(Jr))):
        return "the Jacobian enclosure over the region is unbounded"
    A = Jm if Jm.shape[0] <= Jm.shape[1] else np.ascontiguousarray(Jm.T)
    G = iv_matmul(Iv(A), Iv(np.ascontiguousarray(A.T)))
    Gm, Gr = mid_rad(G)
    Gm, Gr = symmetrize(Gm, Gr)
    lam_c, info = lambda_max_upper(Gm, Gr)
    sigma = float(up(float(up(np.sqrt(max(lam_c, 0.0)))) + nonneg_norm2_upper(Jr)))
    jtj = float(up(sigma * sigma))
    curvature = 0.0
    numbers = {"sigma_max_upper": sigma, "gram_lambda_max_upper": lam_c, "jacobian_radius_norm":
               nonneg_norm2_upper(Jr)}
    if not model.affine:
        bm = BallModel(model)
        if bm.unsupported is not None:
            return f"a bound on the model's second derivatives ({bm.unsupported})"
        c = np.asarray(enc.center, dtype=np.float64)
        reach = np.maximum(up(hi - c), up(c - lo))
        radius = float(up(np.sqrt(sqnorm_upper(reach))))
        H = np.asarray(bm.lipschitz(c, radius)["H"], dtype=np.float64)
        rmag = np.maximum(np.abs(enc.r.lo), np.abs(enc.r.hi)).reshape(-1)
        terms = _umul(np.broadcast_to(rmag, H.shape), H)
        curvature = float(nonneg_sum_upper(terms)) if np.all(np.isfinite(terms)) else math.inf
        numbers.update(hessian_radius=radius, curvature_term=curvature, hessian_output_max=float(np.max(H))
                       if H.size else 0.0)
    if not math.isfinite(curvature) or not math.isfinite(jtj):
        return "the model's curvature over the region is unbounded in interval arithmetic"
    n = model.n
    lam = float(up(jtj / n))
    if not model.least_squares:
        beta = _weighted_gram_bound(model, enc, numbers)
        if isinstance(beta, str):
            return beta
        numbers.update(beta=beta, kernel_lambda_max_upper=lam)
        return Smoothness(beta, lam, numbers)
    beta = float(up(up(2.0 * float(up(jtj + curvature))) / n))
    numbers.update(beta=beta, kernel_lambda_max_upper=lam)
    return Smoothness(beta, lam, numbers)


def _weighted_gram_bound(model: IntervalModel, enc, numbers: dict) -> float | str:
    """beta >= lambda_max((1/n) J^T diag(d) J) >= ||Hess L||_2 over the box, for an affine model and a loss
    with Hess_F l_i PSD and ||Hess_F l_i||_2 <= d_i (each row (i, e) of J weighted by d_i)."""
    from ...compile.interval_losses import INTERVAL_LOSSES

    n, k = enc.F.shape
    d = np.asarray(INTERVAL_LOSSES[model.loss.name].curvature(enc.F, model.yk), dtype=np.float64)
    if not (d.shape == (n,) and np.all(np.isfinite(d)) and np.all(d >= 0)):
        return "the loss's second derivative over the region is unbounded in interval arithmetic"
    rows = np.repeat(d, k)[:, None]                       # row (i, e) of J belongs to sample i
    DJ = Iv(down(enc.J.lo * rows), up(enc.J.hi * rows))    # rows >= 0: J d is monotone in J
    M = iv_matmul(Iv(np.ascontiguousarray(enc.J.lo.T), np.ascontiguousarray(enc.J.hi.T)), DJ)
    Mm, Mr = mid_rad(M)
    if not (np.all(np.isfinite(Mm)) and np.all(np.isfinite(Mr))):
        return "the weighted Gram matrix over the region is unbounded in interval arithmetic"
    Mm, Mr = symmetrize(Mm, Mr)
    top, _ = lambda_max_upper(Mm, Mr)
    beta = float(up(max(top, 0.0) / n))
    numbers.update(loss_curvature_max=float(np.max(d)) if d.size else 0.0, weighted_gram_lambda_max_upper=top)
    return beta
