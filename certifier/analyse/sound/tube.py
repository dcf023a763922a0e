"""The trajectory route of the sound mode (`method interval(route=trajectory)`, issue 18): a
validated tube around the numerical gradient flow from theta0, then the ball rule around its end
(docs/theory.md section 10.12, docs/sound.md "Certifying the trajectory").

Least squares only (grad L = (2/n) J^T r, r = F - y), models the ball rule takes (ball.py: a
Lipschitz Jacobian). On segment j = [t_j, t_j + h_j] the comparison curve is the exact flow of the
tangent model at the checkpoint theta_j (a double vector, read as exact):

    theta~(s) = theta_j + B phi(s),   B = J~^T U,   phi_k(s) = -(1 - exp(-c lam_k s)) / lam_k * ur_k

with c = 2/n, J~ a double matrix (the midpoint of the interval Jacobian at theta_j), J~ J~^T =
U diag(lam) U^T in floats (lam clamped at 0), ur = U^T r~, r~ the midpoint of r(theta_j). These are
just data: nothing about their accuracy is assumed. theta~' = -c B (ur + lam phi) exactly, and the
defect delta = theta~' + grad L(theta~) splits as

    delta / c = (J(theta~) - J_j)^T r(theta~)                       |.| <= sum_i |r_i| H_i D
              + J_j^T (r(theta~) - r_j - J_j B phi)                 |.| <= ||J_j|| (sum_i H_i^2)^(1/2) D^2 / 2
              + (J_j^T r_j - B ur)                                  interval, at the point theta_j
              + (J_j^T J_j B - B diag(lam)) phi                     interval matrix, |phi_k| <= Phi_k

where J_j, r_j are the exact Jacobian and residual at theta_j (enclosed at the point), D >= sup_s
|B phi(s)| (the segment's extent, from |phi_k(s)| <= |ur_k| min(c h, 1/lam_k)) and H_i >= sup
||Hess f_i|| over the ball B(theta_j, D + rho) (ball.py). The error e = theta - theta~ of the true
flow obeys d|e|/dt <= ell |e| + |delta| with ell >= -lambda_min(Hess L) on that ball:
Hess L = (2/n)(J^T J + sum_i r_i Hess f_i) and J^T J >= 0, so ell = (2/n) sum_i |r_i| H_i. Assuming
|e| < rho on the segment (so that theta stays in the ball), Gronwall gives
|e(t)| <= exp(ell h) (e_j + delta h) =: E_j for every t in the segment; E_j < rho closes the
assumption (first exit time). At the next checkpoint e_{j+1} = E_j + |theta~_j(h) - theta_{j+1}|
(the jump, by interval arithmetic). The loss bound on [t_j, t_{j+1}] is the sup of L over the
cross-section at t_j (L never increases along the flow).

Row-space split (docs/theory.md 10.12): with P the exact orthogonal projector onto the row space of
J_j (sigma_min(J_j) >= sigma > 0 proved at the point), a = |P e|, b = |(1 - P) e| obey the Metzler
comparison system a' <= -alpha a + beta b + |delta|, b' <= ell b + beta a + |delta| with
alpha = (2/n)(sigma - Lip_J R)^2 - ell and beta = (2/n)(||J_j|| + Lip_J R) Lip_J R + ell; it is
solved with assumed bounds rho_row >= a, rho_null >= b in the coupling terms (closed like rho). The
Gronwall bound stays: every bound is the smaller of the two. The residuals in ell and the defect
are bounded on the comparison curve and the tube's region by Taylor at theta_j (the kernel part of
e moves F only to second order), not over the whole ball. `build(split=False)` is the old bound.

Terminal step: at the last checkpoint N, every flow point theta(T) lies in B(theta_N, e_N); the
ball rule proves R >= mu on B(theta_N, r), and e_N + sqrt(L_N / mu) <= r (L_N >= sup L over the
cross-section) keeps the flow from theta(T) in that ball, so L(t) <= L_N exp(-4 mu (t - T)) for
t >= T (docs/theory.md 10.1 and 4, started at theta(T)).

Every number is a double rounded outward (`up`/`down` after each operation); enclosures come
from compile/interval_model.py and ball.py. `replay` re-runs the same bounds from recorded
checkpoints (certificate/sound.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...compile.interval_model import IntervalModel
from ...compile.iv import Iv, iv_mag, iv_matmul, iv_mul, iv_of, iv_sub, mid_rad
from ...compile.rounding import (
    ETA,
    INF,
    down,
    gamma,
    nonneg_matmul_upper,
    nonneg_sum_upper,
    point_bounds,
    up,
)
from .ball import BallModel, ball_rule
from .curvature import residual_curvature
from .linalg import lambda_max_upper, lambda_min_lower, nonneg_norm2_upper, sqrt_down, sqrt_up, symmetrize
from .two_layer_ball import TwoLayerBall

SAFETY = 1.1            # the assumed radius rho is this times the estimate of E (margin for a replay)
MAX_SEGMENTS = 400
LOCAL_TOL = 0.004         # a segment's own error delta h is at most this fraction of the tube radius cap


@dataclass
class Segment:
    t: float                 # start time t_j
    h: float                 # length
    theta: np.ndarray        # checkpoint theta_j (doubles)
    e_in: float              # |theta(t_j) - theta_j| <= e_in
    rho: float               # assumed radius (proved: E < rho)
    ell: float               # one-sided Lipschitz bound on the segment's ball
    defect: float            # sup |delta| on the segment
    extent: float            # D
    e_out: float             # E: |theta(t) - theta~(t)| <= E on the segment
    loss_upper: float        # sup L over the cross-section at t_j: L(t) <= it on [t_j, t_j + h]
    a_in: float = 0.0        # |P_j (theta(t_j) - theta_j)| <= a_in (P_j: onto the row space of J(theta_j))
    b_in: float = 0.0        # |(1 - P_j)(theta(t_j) - theta_j)| <= b_in
    rho_row: float | None = None    # assumed bounds of the two components (None: no split)
    rho_null: float | None = None
    alpha: float | None = None      # row-space contraction rate (may be negative)
    beta: float | None = None       # coupling
    a_sup: float = math.inf         # |P_j e| <= a_sup, |(1 - P_j) e| <= b_sup on the segment (e = theta - theta~)
    b_sup: float = math.inf


@dataclass
class Terminal:
    radius: float
    mu: float
    loss_upper: float        # sup L over B(theta_N, e_N)
    e: float
    rule: object = None      # rules.Bound of the ball rule


@dataclass
class Tube:
    segments: list
    end_theta: np.ndarray | None = None       # theta_N
    end_e: float = 0.0                         # e_N
    end_loss: float = math.inf                 # sup L over B(theta_N, e_N)
    end_time: float = 0.0
    terminal: Terminal | None = None
    end_row: float = 0.0                       # |P_N e_N| <= end_row
    end_null: float = 0.0
    message: str = ""
    notes: list = field(default_factory=list)
    budget_spent: bool = False                 # ended at max_segments (more might have closed it)


# --- sound pieces ---------------------------------------------------------------------------------
def _norm_up(v: np.ndarray) -> float:
    v = np.abs(np.asarray(v, dtype=np.float64))
    return float(up(np.sqrt(nonneg_sum_upper(up(v * v), None))))


def _exp_up(x: float) -> float:
    return float(point_bounds("exp", np.array([x]))[1][0])


def loss_over_ball(model: IntervalModel, bm: BallModel, center: np.ndarray, radius: float) -> tuple[float, np.ndarray]:
    """(an upper bound of L over B(center, radius), per-sample upper bounds of |r_i|) (least squares)."""
    if radius == 0.0:
        enc = model.at_point(center, False)
        F = enc.F
    else:
        v = bm.enclosure(center, radius)
        shape = (model.n,) + model.out_shape
        F = Iv(np.broadcast_to(v.lo, shape).reshape(model.n, model.k),
               np.broadcast_to(v.hi, shape).reshape(model.n, model.k))
    r = iv_sub(F, Iv(model.yk))
    mag = iv_mag(r)                                       # (n, k)
    sq = nonneg_sum_upper(up(mag * mag), None)
    L = float(up(sq / model.n)) if model.n else 0.0
    return L, np.asarray(up(np.sqrt(nonneg_sum_upper(up(mag * mag), 1)))).reshape(-1)


@dataclass
class Tangent:
    """The float data of a segment's comparison curve at theta_j, and its point enclosures. B = Jm^T U
    is the exact product of the two float matrices: never formed (move() applies it in floats)."""
    theta: np.ndarray
    Jm: np.ndarray           # the interval Jacobian at theta_j (n k, m) as a midpoint Jm and radius Jr:
    Jr: np.ndarray           # |J_j - Jm| <= Jr entrywise
    r: Iv                    # interval residual (n k,)
    lam: np.ndarray          # clamped eigenvalues
    ur: np.ndarray           # U^T r~
    Jnorm: float             # >= ||J_j||_2
    C: float                 # >= |J_j^T r_j - B ur|
    M: float                 # >= ||J_j^T J_j B - B diag(lam)||_2
    U: np.ndarray            # the float eigenvectors of Jm Jm^T
    JB: np.ndarray           # >= |J_j B| entrywise
    JBres: np.ndarray        # >= |J_j B - U diag(lam)| entrywise
    rres: np.ndarray         # >= |r_j - U ur| entrywise
    rmag: np.ndarray         # >= |r_j| entrywise
    Uur: np.ndarray          # >= |U| |ur| entrywise
    rows: np.ndarray         # >= ||grad f_i(theta_j)|| (the row norms of J_j)
    sigma: float | None      # <= sigma_min(J_j) (None: no positive bound; no row-space split)
    Jrnorm: float            # >= ||Jr||_F
    Bcols: np.ndarray        # >= the column norms of B
    Bnorm: float             # >= ||B||_2

    def move(self, phi: np.ndarray) -> np.ndarray:
        """B phi in floats (Jm^T (U phi)): the comparison curve's displacement, up to rounding."""
        return self.Jm.T @ (self.U @ phi)

    @property
    def B(self) -> np.ndarray:
        """fl(Jm^T U), for inspection (tests); the bounds are those of the exact product."""
        return self.Jm.T @ self.U


def _gram(X: np.ndarray) -> tuple[np.ndarray, Iv]:
    """(fl(X X^T), an enclosure of the exact X X^T). The error of each entry is at most
    gamma_k sum_j |X_ij||X_lj| + k eta (k = X's columns, any order of summation: fact 3), and
    sum_j |X_ij||X_lj| <= sqrt(S_i S_l) with S_i >= sum_j X_ij^2 from the computed diagonal,
    S_i <= (P_ii + k eta)(1 + 2 gamma_k) (Cauchy-Schwarz: no second product |X||X|^T is formed)."""
    k = X.shape[1]
    with np.errstate(invalid="ignore", over="ignore"):
        P = X @ X.T
        S = up(up(np.maximum(np.diagonal(P), 0.0) + k * ETA) * float(up(1.0 + 2.0 * gamma(k))))
        root = up(np.sqrt(S))
        rad = up(up(gamma(k) * up(root[:, None] * root[None, :])) + k * ETA)
        return P, iv_of(down(P - rad), up(P + rad))


def _spectral(gram: Iv) -> float:
    """>= ||X||_2 = sqrt(lambda_max(X X^T)) from an enclosure of the Gram matrix X X^T (or X^T X)."""
    return sqrt_up(lambda_max_upper(gram))


def _row_sqnorms_upper(X: np.ndarray) -> np.ndarray:
    """>= sum_j X_ij^2 per row: one dot product each (no temporary as large as X), whose error is at
    most gamma_k S + k eta (Higham's bound; eta for underflowing products), so
    S <= (S~ + k eta)(1 + 2 gamma_k)."""
    k = X.shape[1]
    S = np.einsum("ij,ij->i", X, X)
    return up(up(S + k * ETA) * float(up(1.0 + 2.0 * gamma(k))))


def tangent(model: IntervalModel, theta: np.ndarray) -> Tangent:
    """The comparison curve's data at theta_j from the interval Jacobian J = Jm +- Jr (reverse mode).
    Every bound comes from the n k x n k Gram matrix G = Jm Jm^T (enclosed once), ||Jr|| and n k-sized
    products: B = Jm^T U is not formed, so that B^T B = U^T G U, J_j B = G U + (J_j - Jm) B and
    J_j^T r_j - B ur = Jm^T (r_j - U ur) + (J_j - Jm)^T r_j (docs/theory.md 10.12, "The checkpoint's
    norms"). The [n k, m] work is the reverse mode, its midpoint and radius, G and ||Jr_i||."""
    F, J = model.outputs(np.asarray(theta, dtype=np.float64), None, True)
    g = model.loss_enclosure(F).g                          # least squares: the residual F - y
    r = Iv(g.lo.reshape(-1), g.hi.reshape(-1))
    Jm, Jr = mid_rad(J)
    del J
    rm, _ = mid_rad(r)
    nk, m = Jm.shape
    P, G = _gram(Jm)                                       # G encloses Jm Jm^T
    lam, U = np.linalg.eigh(P)
    lam = np.maximum(lam, 0.0)
    ur = U.T @ rm
    aU = np.abs(U)
    Ui = Iv(U)
    # ||J_j - Jm||_2 <= ||Jr||_F, the row norms ||J_j,i|| <= ||Jm_i|| + ||Jr_i|| with ||Jm_i||^2 = (Jm Jm^T)_ii,
    # ||J_j||_2 <= ||Jm||_2 + ||Jr||_F (Weyl)
    Jr_rows = np.asarray(up(np.sqrt(_row_sqnorms_upper(Jr))))          # >= ||Jr_i||
    Jrnorm = float(up(np.sqrt(nonneg_sum_upper(up(Jr_rows * Jr_rows), None))))
    Jm_norm = _spectral(G)
    Jnorm = float(up(Jm_norm + Jrnorm))
    rows = np.asarray(up(up(np.sqrt(np.maximum(np.diagonal(G.hi), 0.0))) + Jr_rows))
    # B^T B = U^T (Jm Jm^T) U: ||B||_2 and the column norms ||B_k|| from its enclosure
    BtB = iv_matmul(Iv(np.ascontiguousarray(U.T)), iv_matmul(G, Ui))
    Bnorm = _spectral(BtB)
    Bcols = np.asarray(up(np.sqrt(np.maximum(np.diagonal(BtB.hi), 0.0))))
    # J_j B = (Jm Jm^T) U + (J_j - Jm) B, |(J_j - Jm) B|_ik <= ||Jr_i|| ||B_k|| (Cauchy-Schwarz)
    GU = iv_matmul(G, Ui)
    extra = up(Jr_rows[:, None] * Bcols[None, :])
    JB = Iv(down(GU.lo - extra), up(GU.hi + extra))        # (nk, nk)
    # the residual along the comparison curve: r_j + J_j B phi = (r_j - U ur) + (J_j B - U diag lam) phi
    # + U (ur + lam phi), and |ur_k + lam_k phi_k(s)| = |ur_k| exp(-c lam_k s) <= |ur_k|
    Ul = iv_mul(Ui, Iv(np.broadcast_to(lam, U.shape).copy()))
    JBres = iv_mag(iv_sub(JB, Ul))
    # C >= |J_j^T r_j - B ur| = |Jm^T (r_j - U ur) + (J_j - Jm)^T r_j| <= ||Jm|| |r_j - U ur| + ||Jr||_F |r_j|
    rmag = iv_mag(r)
    rres = iv_mag(iv_sub(r, iv_matmul(Ui, Iv(ur))))
    C = float(up(up(Jm_norm * _norm_up(rres)) + up(Jrnorm * _norm_up(rmag))))
    # M >= ||J_j^T J_j B - B diag lam||_2 = ||J_j^T (J_j B - U diag lam) + (J_j - Jm)^T U diag lam||
    Unorm = _spectral(iv_matmul(Iv(np.ascontiguousarray(U.T)), Ui))       # ||U||_2 = sqrt(lambda_max(U^T U))
    M = float(up(up(Jnorm * nonneg_norm2_upper(JBres)) + up(up(Jrnorm * Unorm) * float(np.max(lam, initial=0.0)))))
    Uur = nonneg_matmul_upper(aU, np.abs(ur))
    fast = TwoLayerBall.of(model)
    if fast is not None:
        fast.prime(theta, F, rows)                         # the segment's ball table is centred here
    sigma = None
    if nk <= m:
        # sigma_min(J_j) >= sigma_min(Jm) - ||J_j - Jm||_2 (Weyl), lambda_min(Jm Jm^T) from G (linalg.gram_lower)
        lam_c, _ = lambda_min_lower(*symmetrize(*mid_rad(G)))
        if lam_c is not None:
            s = float(down(sqrt_down(lam_c) - Jrnorm))
            sigma = s if s > 0 else None
    return Tangent(np.asarray(theta, dtype=np.float64), Jm, Jr, r, lam, ur, Jnorm, C, M, U, iv_mag(JB), JBres,
                   rres, rmag, Uur, rows, sigma, Jrnorm, Bcols, Bnorm)


def jacobian_distance(tg: Tangent, nxt: Tangent) -> float:
    """>= ||J' - J||_2 for the exact Jacobians at two checkpoints: ||Jm' - Jm||_2 + ||Jr'||_F + ||Jr||_F.
    D = fl(Jm' - Jm) is within u/(1 - u) |D| <= gamma_1 |D| of the exact difference X entrywise, so
    ||X||_2 <= ||D||_2 + gamma_1 ||D||_F, and ||D||_2 = sqrt(lambda_max(D D^T)) from D D^T enclosed (an
    n k x n k matrix: the signs are kept, and no power iteration runs over [n k, m] arrays)."""
    with np.errstate(invalid="ignore", over="ignore"):
        D = nxt.Jm - tg.Jm
    _, G = _gram(D)
    frob = float(up(np.sqrt(nonneg_sum_upper(np.maximum(np.diagonal(G.hi), 0.0), None))))
    dm = float(up(_spectral(G) + up(gamma(1) * frob)))
    return float(up(up(dm + nxt.Jrnorm) + tg.Jrnorm))


def phi_bounds(tg: Tangent, c: float, h: float) -> np.ndarray:
    """Phi_k >= sup_{0 <= s <= h} |phi_k(s)| = |ur_k| (1 - exp(-c lam_k h)) / lam_k <= |ur_k| min(c h, 1/lam_k)."""
    ch = up(c * h)
    with np.errstate(divide="ignore"):
        inv = np.where(tg.lam > 0, up(1.0 / np.where(tg.lam > 0, tg.lam, 1.0)), INF)
    return up(np.abs(tg.ur) * np.minimum(ch, inv))


def phi_end(tg: Tangent, c: float, h: float) -> tuple[np.ndarray, Iv]:
    """phi(h) in floats (the next checkpoint) and as an enclosure."""
    x = c * tg.lam * h
    with np.errstate(divide="ignore", invalid="ignore"):
        coef = np.where(tg.lam > 0, -np.expm1(-x) / np.where(tg.lam > 0, tg.lam, 1.0), c * h)
    phi = -coef * tg.ur
    # enclosure: 1 - exp(-x) with x in [down(c lam h), up(c lam h)]
    xlo = down(down(c * tg.lam) * h)
    xhi = up(up(c * tg.lam) * h)
    e_lo = point_bounds("exp", -xhi)[0]
    e_hi = point_bounds("exp", -np.maximum(xlo, 0.0))[1]
    one_lo, one_hi = np.maximum(down(1.0 - e_hi), 0.0), up(1.0 - e_lo)
    pos = tg.lam > 0
    safe = np.where(pos, tg.lam, 1.0)
    clo = np.where(pos, down(one_lo / safe), down(c * h))
    chi = np.where(pos, up(one_hi / safe), up(c * h))
    chi = np.minimum(chi, up(c * h))                       # (1 - e^-x) / lam <= c h
    ur = tg.ur
    plo = np.where(ur >= 0, down(-chi * ur), down(-clo * ur))
    phi_hi = np.where(ur >= 0, up(-clo * ur), up(-chi * ur))
    return phi, Iv(plo, phi_hi)


def jump(tg: Tangent, phi_iv: Iv, nxt: np.ndarray) -> float:
    """An upper bound of |theta_j + B phi(h) - theta_{j+1}| (the comparison curve's end against the
    next checkpoint), B phi = Jm^T (U phi) exactly: w = U phi enclosed, then Jm^T w within
    fl(Jm^T w_m) +- (gamma_nk |Jm|^T |w_m| + nk eta + |Jm|^T w_r) (one product with |Jm|^T)."""
    w = iv_matmul(Iv(tg.U), phi_iv)
    wm, wr = mid_rad(w)
    nk = tg.Jm.shape[0]
    with np.errstate(invalid="ignore", over="ignore"):
        c = tg.Jm.T @ wm
        rad = up(nonneg_matmul_upper(np.abs(tg.Jm).T, up(up(gamma(nk) * np.abs(wm)) + wr)) + nk * ETA)
        lo = down(down(tg.theta + down(c - rad)) - nxt)
        hi = up(up(tg.theta + up(c + rad)) - nxt)
    return _norm_up(np.maximum(np.abs(lo), np.abs(hi)))


def segment_numbers(model: IntervalModel, bm: BallModel, tg: Tangent, h: float, rho: float,
                    rho_row: float | None = None) -> dict:
    """The segment's constants over the ball B(theta_j, D + rho) and the tube's region there (|e| <= rho,
    and |P e| <= rho_row when given: P the orthogonal projector onto the row space of J_j):
    ell (>= sup (2/n) sum_i |r_i| ||Hess f_i||), the defect bound, the extent D, and with rho_row and a
    proved sigma_min(J_j) the row-space split's alpha (contraction) and beta (coupling)."""
    c = 2.0 / model.n
    Phi = phi_bounds(tg, c, h)
    D1 = float(nonneg_sum_upper(up(Phi * tg.Bcols), None))         # |B phi| <= sum_k ||B_k|| |phi_k|
    D2 = float(up(tg.Bnorm * _norm_up(Phi)))                       # <= ||B||_2 |phi|
    D = min(D1, D2)
    radius = float(up(D + rho))
    lip = bm.lipschitz(tg.theta, radius)
    H = np.asarray(lip["H"], dtype=np.float64)
    Lip = float(lip["lip_jacobian"])
    node = lip["node"]
    shape = (model.n,) + model.out_shape
    F = Iv(np.broadcast_to(node.v.lo, shape).reshape(-1), np.broadcast_to(node.v.hi, shape).reshape(-1))
    rball = iv_mag(iv_sub(F, Iv(model.yk.reshape(-1))))
    # |r_i| on the comparison curve: r(theta~) = r_j + J_j B phi + O(D^2) (Taylor, H_i), with
    # |r_j + J_j B phi| <= |r_j| + |J_j B| Phi, or <= |r_j - U ur| + |J_j B - U diag lam| Phi + |U| |ur|
    taylor = up(up(H * up(D * D)) * 0.5)
    rc1 = up(up(tg.rmag + nonneg_matmul_upper(tg.JB, Phi)) + taylor)
    rc2 = up(up(up(tg.rres + nonneg_matmul_upper(tg.JBres, Phi)) + tg.Uur) + taylor)
    rc = np.minimum(rball, np.minimum(rc1, rc2))
    # |r_i| over the region theta~ + e: + |grad f_i(theta_j) . e| + |(grad f_i(theta~) - grad f_i(theta_j)) . e|
    # + H_i |e|^2 / 2, and grad f_i(theta_j) . e = grad f_i(theta_j) . P e (e - P e is in the kernel of J_j)
    first = rho if rho_row is None else min(rho_row, rho)
    rt = np.minimum(rball, up(up(rc + up(tg.rows * first)) + up(H * up(rho * up(D + 0.5 * rho)))))
    sH = float(nonneg_sum_upper(up(rt * H), None))
    cup = float(up(2.0 / model.n))
    ell = float(up(cup * sH))
    termA = float(up(float(nonneg_sum_upper(up(rc * H), None)) * D))
    curvature = residual_curvature(model)
    if curvature is not None:
        # ||sum_i r_i Hess f_i|| over the ball with the residuals' signs (curvature.py): both ell and
        # the defect's first term are that norm (times c, and times D)
        K = curvature.bound(tg.theta, radius, iv_sub(F, Iv(model.yk.reshape(-1))))
        ell = min(ell, float(up(cup * K)))
        termA = min(termA, float(up(K * D)))
    Hl2 = _norm_up(H)
    termB = float(up(up(up(tg.Jnorm * Hl2) * up(D * D)) * 0.5))
    termD = float(up(tg.M * _norm_up(Phi)))
    defect = float(up(cup * up(up(termA + termB) + up(tg.C + termD))))
    out = {"ell": ell, "defect": defect, "extent": D, "ball_radius": radius, "lip_jacobian": Lip,
           "residual_curve": float(_norm_up(rc)), "residual_tube": float(_norm_up(rt))}
    if rho_row is not None and tg.sigma is not None:
        LR = float(up(Lip * radius))                              # >= ||J(theta) - J_j|| on the ball
        sig = float(down(tg.sigma - LR))                          # <= sigma_min of J(theta) on row(J_j)
        clo = float(down(2.0 / model.n))
        alpha = float(down(down(clo * down(sig * sig)) - ell)) if sig > 0 else -ell
        kappa = float(up(up(tg.Jnorm + LR) * LR))                 # |J e_r| |J e_n| <= kappa |e_r| |e_n|
        beta = float(up(up(cup * kappa) + ell))
        out.update(alpha=alpha, beta=beta, sigma_row=sig)
    return out


def propagate(ell: float, defect: float, e_in: float, h: float) -> float:
    """E = exp(ell h) (e_in + defect h), rounded up (for ell >= 0: the sup over the segment)."""
    return float(up(_exp_up(float(up(ell * h))) * up(e_in + up(defect * h))))


def contract(alpha: float, g: float, a_in: float, h: float) -> tuple[float, float]:
    """(sup, end) over [0, h] of the solution of u' = -alpha u + g, u(0) = a_in, rounded up (alpha > 0):
    u(h) = a_in e^{-alpha h} + g (1 - e^{-alpha h}) / alpha, monotone in t, so sup = max(a_in, u(h))."""
    if not alpha > 0:
        E = propagate(-alpha, g, a_in, h)
        return E, E
    x_lo, x_hi = float(down(alpha * h)), float(up(alpha * h))
    decay = _exp_up(-x_lo)                                        # >= e^{-alpha h}
    rise = float(up(1.0 - float(point_bounds("exp", np.array([-x_hi]))[0][0])))   # >= 1 - e^{-alpha h}
    gain = min(h, float(up(rise / alpha)))                        # (1 - e^{-x}) / x <= 1
    end = float(up(up(a_in * decay) + up(g * gain)))
    return max(a_in, end), end


def bounds(nums: dict, h: float, e_in: float, a_in: float, b_in: float, rho: float,
           rho_row: float | None, rho_null: float | None) -> dict:
    """The error bounds on the segment under the assumptions |e| <= rho, |P e| <= rho_row, |(1 - P) e| <=
    rho_null: Gronwall for |e| (the old bound), and with the split the comparison system
        a' <= -alpha a + beta b + |delta|,   b' <= ell b + beta a + |delta|
    (a = |P e|, b = |(1 - P) e|) solved with b <= rho_null in a's equation and a <= rho_row in b's.
    ok: every sup strictly below its assumption (first exit time)."""
    E_old = propagate(nums["ell"], nums["defect"], e_in, h)
    if "alpha" not in nums or rho_row is None or rho_null is None:
        return {"E": E_old, "e_end": E_old, "a_sup": E_old, "b_sup": E_old, "a_end": E_old, "b_end": E_old,
                "E_gronwall": E_old, "ok": E_old < rho}
    d, beta = nums["defect"], nums["beta"]
    B = propagate(nums["ell"], float(up(up(beta * rho_row) + d)), b_in, h)
    A_sup, A_end = contract(nums["alpha"], float(up(up(beta * rho_null) + d)), a_in, h)
    a_sup, b_sup = min(A_sup, E_old), min(B, E_old)
    a_end, b_end = min(A_end, E_old), min(B, E_old)
    E = min(E_old, sqrt_up(float(up(up(a_sup * a_sup) + up(b_sup * b_sup)))))
    e_end = min(E_old, sqrt_up(float(up(up(a_end * a_end) + up(b_end * b_end)))))
    return {"E": E, "e_end": e_end, "a_sup": a_sup, "b_sup": b_sup, "a_end": a_end, "b_end": b_end,
            "E_gronwall": E_old, "ok": E < rho and a_sup < rho_row and b_sup < rho_null}


def reproject(tg: Tangent, nxt: Tangent, a: float, b: float, e: float, jmp: float) -> tuple[float, float]:
    """Bounds on |P' v|, |(1 - P') v| for v = e(h) + the jump, P' the projector of the next checkpoint:
    ||P' (1 - P)|| <= ||J' - J|| / sigma_min(J') and ||(1 - P') P|| <= ||J' - J|| / sigma_min(J) (the rows
    of J are in row(J), so (1 - P) J'^T = (1 - P)(J' - J)^T, and P' = J'^T (J' J'^T)^-1 J')."""
    if tg.sigma is None or nxt.sigma is None:
        return e, e
    dJ = jacobian_distance(tg, nxt)
    s_next, s_prev = min(1.0, float(up(dJ / nxt.sigma))), min(1.0, float(up(dJ / tg.sigma)))
    a2 = float(up(up(a + up(s_next * b)) + jmp))
    b2 = float(up(up(b + up(s_prev * a)) + jmp))
    return min(a2, e), min(b2, e)


def cross_section_loss(model: IntervalModel, bm: BallModel, tg: Tangent, e: float, a: float, b: float) -> float:
    """An upper bound of L over the cross-section {theta_j + v : |v| <= e, |P v| <= a, |(1 - P) v| <= b}:
    the ball's enclosure, and |r_i| <= |r_i(theta_j)| + ||grad f_i(theta_j)|| a + H_i |v|^2 / 2 (the
    kernel component moves F only to second order)."""
    if e == 0.0:
        return loss_over_ball(model, bm, tg.theta, 0.0)[0]
    lip = bm.lipschitz(tg.theta, e)
    node = lip["node"]
    shape = (model.n,) + model.out_shape
    F = Iv(np.broadcast_to(node.v.lo, shape).reshape(-1), np.broadcast_to(node.v.hi, shape).reshape(-1))
    mag = iv_mag(iv_sub(F, Iv(model.yk.reshape(-1))))
    if tg.sigma is not None and a < e:
        q = min(float(up(e * e)), float(up(up(a * a) + up(b * b))))
        split = up(up(tg.rmag + up(tg.rows * a)) + up(up(np.asarray(lip["H"]) * q) * 0.5))
        mag = np.minimum(mag, split)
    sq = nonneg_sum_upper(up(mag * mag), None)
    return float(up(sq / model.n))


# --- building the tube ----------------------------------------------------------------------------
def _prove(model, bm, tg, h, e, a, b, guess, split):
    """Fixed-point search for the assumed radii (rho, rho_row, rho_null): (nums, bounds, radii)."""
    rho, rr, rn = guess
    nums = out = None
    for _ in range(8):
        nums = segment_numbers(model, bm, tg, h, rho, rr if split else None)
        out = bounds(nums, h, e, a, b, rho, rr if split else None, rn if split else None)
        if out["ok"] or not math.isfinite(out["E"]):
            break
        rho = max(rho, float(up(SAFETY * out["E"])))
        rr = max(rr, float(up(SAFETY * out["a_sup"])))
        rn = max(rn, float(up(SAFETY * out["b_sup"])))
    return nums, out, (rho, rr, rn)


def build(model: IntervalModel, bm: BallModel, *, cap: float, target_loss: float, max_segments: int = MAX_SEGMENTS,
          h0: float = 0.0625, try_terminal=None, progress=lambda tube: None, local_tol: float = None,
          split: bool = True) -> Tube:
    """Follow the tangent-model flow from theta0 and prove the tube segment by segment. `cap` bounds
    the tube radius (beyond it the enclosures are useless); the tube stops once the loss bound is
    below `target_loss`, or when try_terminal(tube) returns a Terminal, or at max_segments.
    progress(tube) is called after each proved segment (the tube so far is a theorem up to its end).
    split=False: Gronwall on |e| alone (no row-space split)."""
    c = 2.0 / model.n
    local_tol = LOCAL_TOL if local_tol is None else local_tol
    theta = model.theta0.copy()
    e = a = b = 0.0
    t, h = 0.0, h0
    tg = tangent(model, theta)
    L_now = cross_section_loss(model, bm, tg, 0.0, 0.0, 0.0)
    tube = Tube([], theta, 0.0, L_now, 0.0)
    last_try = math.inf
    floor_r = cap * 1e-6
    while len(tube.segments) < max_segments:
        accepted = None
        guess = (max(float(up(SAFETY * e)), floor_r), max(float(up(SAFETY * a)), floor_r),
                 max(float(up(SAFETY * b)), floor_r))
        for _ in range(40):
            nums, out, radii = _prove(model, bm, tg, h, e, a, b, guess, split)
            if out["ok"] and out["E"] <= cap and up(nums["defect"] * h) <= local_tol * cap:
                accepted = (nums, out, radii)
                break
            h *= 0.5
            if math.isfinite(out["E"]):
                guess = (max(float(up(SAFETY * out["E"])), floor_r), max(float(up(SAFETY * out["a_sup"])), floor_r),
                         max(float(up(SAFETY * out["b_sup"])), floor_r))
            if h < 1e-12:
                break
        if accepted is None:
            return _last_try(tube, try_terminal, last_try,
                             f"no segment from t = {t:.4g} keeps the tube below radius {cap:g} (tube radius {e:.3g})")
        nums, out, (rho, rr, rn) = accepted
        if (t + h) - t != h:            # segment times must be exact: t_{j+1} = t_j + h_j
            return _last_try(tube, try_terminal, last_try, f"the segment times lost exactness at t = {t:.6g}")
        # the next checkpoint: the comparison curve's end in floats
        phi, phi_iv = phi_end(tg, c, h)
        nxt = tg.theta + tg.move(phi)
        jmp = jump(tg, phi_iv, nxt)
        split_here = "alpha" in nums
        tube.segments.append(Segment(t, h, tg.theta, e, rho, nums["ell"], nums["defect"], nums["extent"], out["E"],
                                     L_now, a, b, rr if split_here else None, rn if split_here else None,
                                     nums.get("alpha"), nums.get("beta"), out["a_sup"], out["b_sup"]))
        t = float(t + h)
        tg_next = tangent(model, nxt)
        e, a, b = _advance(tg, tg_next, out, jmp, split_here)
        theta, tg = nxt, tg_next
        L_now = min(L_now, cross_section_loss(model, bm, tg, e, a, b))
        tube.end_theta, tube.end_e, tube.end_loss, tube.end_time = theta, e, L_now, t
        tube.end_row, tube.end_null = a, b
        progress(tube)
        h *= 2.0
        if try_terminal is not None and L_now <= 0.5 * last_try:
            last_try = L_now
            term = try_terminal(tube)
            if term is not None:
                tube.terminal = term
                tube.message = "tube and terminal ball proved"
                return tube
        if L_now <= target_loss:
            tube.message = f"the loss bound reached {L_now:.3g} at t = {t:.4g}"
            return tube
    tube.budget_spent = True
    return _last_try(tube, try_terminal, last_try,
                     f"{max_segments} segments: the loss bound is {L_now:.3g} at t = {t:.4g}")


def _last_try(tube: Tube, try_terminal, last_try: float, message: str) -> Tube:
    """The tube ends without its terminal ball: the ball is tried once more at the tube's end when
    the loss bound fell since the last try (tries are made at every halving of the bound, so up to
    half of the last factor would otherwise go untried)."""
    tube.message = message
    if try_terminal is not None and tube.end_loss < last_try and tube.segments:
        term = try_terminal(tube)
        if term is not None:
            tube.terminal = term
            tube.message = "tube and terminal ball proved"
            tube.budget_spent = False
    return tube


def _advance(tg: Tangent, tg_next: Tangent, out: dict, jmp: float, split: bool) -> tuple[float, float, float]:
    """(e, a, b) at the next checkpoint: the segment's end bounds plus the jump, re-projected."""
    e = float(up(out["e_end"] + jmp))
    if not split:
        return e, e, e
    a, b = reproject(tg, tg_next, out["a_end"], out["b_end"], e, jmp)
    return e, a, b


def terminal(model: IntervalModel, bm: BallModel, theta: np.ndarray, e: float, loss_upper: float,
             radius: float | None = None):
    """The ball rule around the tube's end: (Terminal or None, the rule's Bound of the last try).
    With sigma' = sigma_min(J_c) - D_c and mu(r) = (sigma' - Lip r)^2 / n the condition
    r >= e + sqrt(L / mu(r)) reads (r - e)(sigma' - Lip r) >= sqrt(n L), largest at
    r* = (e + sigma' / Lip) / 2: radius None tries r* (twice, Lip depends on r). Once a radius closes,
    the smallest one that does has the largest mu (the fastest rate after T): radius None then tries
    the smaller root of that quadratic (smallest_terminal)."""
    r = radius if radius is not None else float(up(e + max(sqrt_up(loss_upper), 1e-9)))
    bound = None
    for _ in range(1 if radius is not None else 3):
        bound = ball_rule(model, bm, theta, r)
        mu = float(bound.value)
        if mu > 0 and terminal_needed(e, loss_upper, mu) <= r:
            found = Terminal(r, mu, loss_upper, e, bound)
            if radius is None:
                found = smallest_terminal(model, bm, theta, found)
            return found, found.rule
        nums = bound.numbers or {}
        sig = nums.get("sigma_center_lower")
        lip = nums.get("lip_jacobian")
        if radius is not None or sig is None or not lip:
            break
        r_star = 0.5 * (e + (sig - nums.get("center_radius_norm", 0.0)) / lip)
        if not r_star > e or r_star == r:
            break
        r = float(r_star)
    return None, bound


def smallest_terminal(model: IntervalModel, bm: BallModel, theta: np.ndarray, found: Terminal,
                      tries: int = 2) -> Terminal:
    """A closing terminal ball with a larger mu than `found`, if one is proved: the smaller root r- of
    (r - e)(sigma' - Lip r) = sqrt(n L), with sigma' and Lip of the last ball that closed (Lip over a
    smaller ball is usually smaller, so r- closes with room); each try is a full ball rule, so the
    choice is heuristic and the result as sound as any other radius."""
    e, L = found.e, found.loss_upper
    for _ in range(tries):
        nums = found.rule.numbers or {}
        sig = nums.get("sigma_center_lower")
        lip = nums.get("lip_jacobian")
        if sig is None or not lip:
            break
        sp = sig - nums.get("center_radius_norm", 0.0)
        b = sp + lip * e
        disc = b * b - 4.0 * lip * (e * sp + float(np.sqrt(model.n * L)))
        if not disc > 0:
            break
        low = (b - float(np.sqrt(disc))) / (2.0 * lip)
        r = float(up(low + 0.05 * (found.radius - low)))        # a little room above the root
        if not e < r < found.radius:
            break
        bound = ball_rule(model, bm, theta, r)
        mu = float(bound.value)
        if not (mu > found.mu and terminal_needed(e, L, mu) <= r):
            break
        found = Terminal(r, mu, L, e, bound)
    return found


def terminal_needed(e: float, loss_upper: float, mu: float) -> float:
    """e + sqrt(L / mu), rounded up: the radius the terminal ball needs."""
    return float(up(e + up(sqrt_up(loss_upper) / sqrt_down(mu))))


# --- the bound and its replay ---------------------------------------------------------------------
def numbers_of(tube: Tube) -> dict:
    """What the bound is built from (bound_from_numbers; certificates rebuild it from the replay)."""
    return {"starts": [s.t for s in tube.segments], "losses": [s.loss_upper for s in tube.segments],
            "end_time": tube.end_time, "end_loss": tube.end_loss,
            "mu": tube.terminal.mu if tube.terminal is not None else None}


def bound_from_numbers(starts, losses, end_time, end_loss, mu):
    """t -> the proved bound: losses[j] on [starts[j], starts[j+1]), then end_loss exp(-4 mu (t - T))
    from T = end_time on (mu None: end_loss, the floor was reached). Rounded up."""
    starts = np.asarray(list(starts), dtype=np.float64)
    losses = list(losses)

    def bound(t: float) -> float:
        if t >= end_time or not len(losses):
            if mu is None or t <= end_time:
                return float(end_loss)
            decay = float(down(down(4.0 * mu) * down(t - end_time)))   # <= 4 mu (t - T)
            return float(up(end_loss * _exp_up(-max(decay, 0.0))))
        k = int(np.searchsorted(starts, t, side="right")) - 1
        return float(losses[max(k, 0)])
    return bound


def bound_function(tube: Tube):
    """t -> the proved bound: the tube's step function up to T, L_N exp(-4 mu (t - T)) after."""
    return bound_from_numbers(**numbers_of(tube))


def curve_points(numbers: dict, horizon: float, points: int = 61) -> list[list[float]]:
    """The rate's curve: the bound at the checkpoints and on a logarithmic grid from T to the horizon."""
    bound = bound_from_numbers(**numbers)
    end = numbers["end_time"]
    grid = np.logspace(math.log10(max(end, 1e-6)), math.log10(max(horizon, end * 1.001)), points)
    ts = sorted(set([0.0] + list(numbers["starts"]) + [end] + [float(t) for t in grid]))
    return [[float(t), float(bound(t))] for t in ts if t <= horizon]


def replay(model: IntervalModel, bm: BallModel, thetas: list, hs: list, rhos: list, rho_rows: list | None = None,
           rho_nulls: list | None = None) -> dict:
    """Re-prove a recorded tube: checkpoints theta_0..theta_N (theta_0 must be the spec's theta0),
    lengths h_j and assumed radii rho_j (and, for the row-space split, rho_row_j and rho_null_j; None
    entries or lists: Gronwall on |e| alone for that segment). Returns the recomputed numbers, or
    raises ValueError naming the first segment that does not close."""
    if not np.array_equal(thetas[0], model.theta0):
        raise ValueError("the first checkpoint is not theta0")
    N = len(hs)
    rho_rows = list(rho_rows) if rho_rows is not None else [None] * N
    rho_nulls = list(rho_nulls) if rho_nulls is not None else [None] * N
    if len(rho_rows) != N or len(rho_nulls) != N:
        raise ValueError("the split's radii are not one per segment")
    c = 2.0 / model.n
    e = a = b = 0.0
    t = 0.0
    tg = tangent(model, thetas[0])
    L_now = cross_section_loss(model, bm, tg, 0.0, 0.0, 0.0)
    out = []
    for j, (h, rho, rr, rn) in enumerate(zip(hs, rhos, rho_rows, rho_nulls)):
        if not (h > 0 and math.isfinite(h) and rho > 0 and math.isfinite(rho)):
            raise ValueError(f"segment {j}: h = {h!r}, rho = {rho!r} are not positive numbers")
        split = rr is not None and rn is not None
        if split and not (rr > 0 and rn > 0 and math.isfinite(rr) and math.isfinite(rn)):
            raise ValueError(f"segment {j}: rho_row = {rr!r}, rho_null = {rn!r} are not positive numbers")
        if split and tg.sigma is None:
            raise ValueError(f"segment {j}: no positive bound on sigma_min(J) at the checkpoint: no row-space split")
        if not split:
            a = b = e
        nums = segment_numbers(model, bm, tg, h, rho, rr if split else None)
        res = bounds(nums, h, e, a, b, rho, rr if split else None, rn if split else None)
        if not res["ok"]:
            raise ValueError(f"segment {j}: the error bound E = {res['E']!r} (row {res['a_sup']!r}, kernel "
                             f"{res['b_sup']!r}) is not below the assumed radius {rho!r} (row {rr!r}, kernel {rn!r})")
        _, phi_iv = phi_end(tg, c, h)
        jmp = jump(tg, phi_iv, thetas[j + 1])
        out.append({"t": t, "e_in": e, "a_in": a, "b_in": b, "loss_upper": L_now, "e_out": res["E"],
                    "ell": nums["ell"], "defect": nums["defect"], "alpha": nums.get("alpha")})
        t = float(t + h)
        tg_next = tangent(model, thetas[j + 1])
        e, a, b = _advance(tg, tg_next, res, jmp, split)
        tg = tg_next
        L_now = min(L_now, cross_section_loss(model, bm, tg, e, a, b))
    return {"segments": out, "end_time": t, "end_e": e, "end_loss": L_now, "end_row": a, "end_null": b}


# --- the route, for compose/sound.py --------------------------------------------------------------
def segment_budget(local_tol: float, segments: int | None = None) -> int:
    """The tube's segment budget: `segments` when the spec gives it, else MAX_SEGMENTS grown with
    1/tolerance (a smaller tolerance takes more segments: 400 at the default, 1600 at 0.001)."""
    if segments is not None:
        return int(segments)
    return max(MAX_SEGMENTS, int(MAX_SEGMENTS * LOCAL_TOL / local_tol))


def route(model: IntervalModel, *, floor: float, cap: float = 0.02, local_tol: float = LOCAL_TOL,
          segments: int | None = None, progress=lambda tube: None) -> Tube:
    """The trajectory route: the tube from theta0 until the terminal ball closes (or the loss bound is
    at the floor, or the segment budget is spent). Least squares, a model the ball rule takes (the
    caller checks)."""
    bm = BallModel(model)
    tries = []

    def try_terminal(tube: Tube):
        term, bound = terminal(model, bm, tube.end_theta, tube.end_e, tube.end_loss)
        tries.append({"t": tube.end_time, "tube_radius": tube.end_e, "loss_upper": tube.end_loss,
                      "mu": float(bound.value) if bound is not None else None,
                      "radius": (bound.numbers or {}).get("radius") if bound is not None else None})
        return term
    tube = build(model, bm, cap=cap, target_loss=floor, max_segments=segment_budget(local_tol, segments), h0=1 / 16,
                 try_terminal=try_terminal, local_tol=local_tol, progress=progress)
    tube.notes = tries
    return tube
