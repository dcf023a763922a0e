"""Verified linear algebra for the sound rules (float64, outward rounding).

- `nonneg_norm2_upper(D)`: an upper bound on the spectral norm of a nonnegative matrix, the
  smaller of the Frobenius norm and the Collatz-Wielandt bound rho(D^T D) <= max_i (D^T D v)_i / v_i
  (any v > 0; v from a few power iterations), each evaluated with upward rounding. For any real E
  with |E| <= D entrywise, ||E||_2 <= || |E| ||_2 <= ||D||_2 (the spectral norm is monotone on
  nonnegative matrices).
- `lambda_min_lower(Gm, Gr)`: a lower bound on lambda_min(G) for every symmetric G with
  |G - Gm| <= Gr: shifted Cholesky with an a-posteriori residual. For a shift s, any float
  lower-triangular L~ (here LAPACK's Cholesky of fl(Gm - sI)) gives
      Gm - sI = L~ L~^T + E,   L~ L~^T >= 0   =>   lambda_min(Gm) >= s - ||E||_2,
  where E is enclosed by interval arithmetic (the product L~ L~^T by the gamma_k bound), and Weyl's
  inequality adds -||Gr||_2 for the uncertainty of G. Nothing about the Cholesky routine's own
  accuracy is assumed: a bad factor only gives a weak (still true) bound.
- `GramAccumulator`: J J^T and |J_r| |J_r|^T summed over column blocks J = [J_1 ... J_B] (J J^T =
  sum_b J_b J_b^T exactly): each block's product enclosed by iv_matmul (its own gamma_k, k the
  block's columns), the sum of the enclosures rounded outward; the radius blocks' nonnegative Gram
  bounded above the same way. Then ||J_r||_2^2 = ||J_r J_r^T||_2 <= ||sum_b |J_r,b| |J_r,b|^T||_2
  (entrywise larger nonnegative matrix), so only one block of J is ever needed at a time.
"""
from __future__ import annotations

import numpy as np

from ...compile.iv import Iv, iv_add, iv_mag, iv_matmul, iv_of, iv_sub, mid_rad
from ...compile.rounding import ETA, INF, U, down, gamma, nonneg_matmul_upper, sqnorm_upper, up


def nonneg_norm2_upper(D: np.ndarray, iterations: int = 12) -> float:
    """Upper bound on ||D||_2 for a nonnegative matrix D (2-D)."""
    if D.size == 0:
        return 0.0
    if not np.all(np.isfinite(D)):
        return INF
    frob = float(up(np.sqrt(sqnorm_upper(D))))
    if frob == 0.0:
        return 0.0
    A = D if D.shape[0] >= D.shape[1] else D.T      # work with the smaller Gram matrix A^T A
    v = np.ones(A.shape[1])
    for _ in range(iterations):
        w = A.T @ (A @ v)
        top = float(w.max())
        if not top > 0:
            break
        v = w / top
    v = np.maximum(v, 1e-8 * float(v.max()) if v.max() > 0 else 1.0)
    w1 = nonneg_matmul_upper(A, v)
    w2 = nonneg_matmul_upper(A.T, w1)
    ratio = float(np.max(up(w2 / v)))
    cw = float(up(np.sqrt(ratio)))
    return min(frob, cw)


def symmetrize(Gm: np.ndarray, Gr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror the upper triangle: for a symmetric G with |G - Gm| <= Gr the mirrored pair still
    encloses G (G_ij = G_ji)."""
    upper = np.triu(np.ones(Gm.shape, dtype=bool))
    Gm = np.where(upper, Gm, Gm.T)
    Gr = np.where(upper, Gr, Gr.T)
    return Gm, Gr


def lambda_min_lower(Gm: np.ndarray, Gr: np.ndarray) -> tuple[float | None, dict]:
    """A lower bound on lambda_min(G) over symmetric G with |G - Gm| <= Gr, Gm symmetric. None
    when no positive bound is found."""
    info: dict = {}
    if not (np.all(np.isfinite(Gm)) and np.all(np.isfinite(Gr))):
        return None, {"reason": "non-finite Gram matrix"}
    size = Gm.shape[0]
    try:
        est = float(np.linalg.eigvalsh(Gm)[0])
    except np.linalg.LinAlgError:
        return None, {"reason": "eigvalsh failed"}
    info["estimate"] = est
    radius = nonneg_norm2_upper(Gr)
    info["radius_norm"] = radius
    if not est > radius:
        return None, info
    eye = np.eye(size)
    scale = float(np.max(np.abs(Gm)))
    for frac in (1e-12, 1e-9, 1e-6, 1e-3, 1e-1, 0.5):
        s = est - max(frac * est, 64 * size * 2.0 ** -53 * scale)
        if not s > 0:
            continue
        try:
            Lc = np.linalg.cholesky(Gm - s * eye)
        except np.linalg.LinAlgError:
            continue
        if not np.all(np.isfinite(Lc)):
            continue
        product = iv_matmul(Iv(Lc), Iv(np.ascontiguousarray(Lc.T)))
        E = iv_sub(iv_sub(Iv(Gm), Iv(s * eye)), product)       # s * eye is exact
        residual = nonneg_norm2_upper(iv_mag(E))
        bound = float(down(down(s - residual) - radius))
        info.update(shift=s, residual_norm=residual)
        if bound > 0:
            return bound, info
    return None, info


def lambda_max_upper(G: Iv) -> float:
    """An upper bound on lambda_max(G) for every symmetric G in the enclosure G: with s = twice the
    float estimate, lambda_max(G) = s - lambda_min(s I - G), and lambda_min_lower bounds the latter
    (s I - Gm in floats: the diagonal's rounding, at most 2u |fl(s - Gm_ii)|, joins the radius). About
    1e-12 relative above the estimate (sym_norm_upper's shifts cost up to 1 %). INF where it fails."""
    Gm, Gr = symmetrize(*mid_rad(G))
    if not (np.all(np.isfinite(Gm)) and np.all(np.isfinite(Gr))) or Gm.size == 0:
        return INF if Gm.size else 0.0
    top = float(np.linalg.eigvalsh(Gm)[-1])
    s = 2.0 * max(top, float(np.max(np.abs(Gm))) * 2.0 ** -40, 2.0 ** -400)   # (norms of zero are ~1e-162)
    Sm = -Gm
    d = s - np.diagonal(Gm)
    np.fill_diagonal(Sm, d)
    Sr = Gr.copy()
    np.fill_diagonal(Sr, up(np.diagonal(Gr) + up(2.0 * U * np.abs(d))))
    low, _ = lambda_min_lower(Sm, Sr)
    if low is None:
        return INF
    return float(up(s - low))


def gram_lower(Jm: np.ndarray) -> tuple[float | None, dict]:
    """A lower bound on lambda_min(Jm Jm^T) for a double matrix Jm (rows <= columns)."""
    JJ = iv_matmul(Iv(Jm), Iv(np.ascontiguousarray(Jm.T)))
    Gm, Gr = mid_rad(JJ)
    Gm, Gr = symmetrize(Gm, Gr)
    return lambda_min_lower(Gm, Gr)


class GramAccumulator:
    """J_m J_m^T (an interval enclosure) and an entrywise upper bound of J_r J_r^T, accumulated over
    column blocks of the Jacobian's midpoint J_m and radius J_r (module docstring)."""

    def __init__(self) -> None:
        self.G: Iv | None = None          # encloses sum_b J_m,b J_m,b^T
        self.R: np.ndarray | None = None  # >= sum_b J_r,b J_r,b^T entrywise
        self.columns = 0

    def add(self, Jm: np.ndarray, Jr: np.ndarray | None = None) -> None:
        """One block: midpoint columns Jm [rows, c] and their radius Jr (None or all zero: a point)."""
        # iv_matmul's enclosure of a product of points, fl(Jm Jm^T) +- (gamma_k |Jm||Jm|^T + k eta),
        # with the transposes passed as views: numpy then uses BLAS syrk (half the work of gemm;
        # the gamma_k bound holds for any order of summation)
        k = Jm.shape[1]
        with np.errstate(invalid="ignore", over="ignore"):
            C = np.matmul(Jm, Jm.T)
            A = np.abs(Jm)
            rad = up(up(gamma(k) * nonneg_matmul_upper(A, A.T)) + k * ETA)
            P = iv_of(down(C - rad), up(C + rad))
        self.G = P if self.G is None else iv_add(self.G, P)
        if Jr is not None and np.any(Jr != 0):
            Q = nonneg_matmul_upper(Jr, Jr.T)
            self.R = Q if self.R is None else up(self.R + Q)
        self.columns += Jm.shape[1]

    def add_iv(self, J: Iv) -> None:
        self.add(*mid_rad(J))

    def lambda_min_lower(self) -> tuple[float | None, dict]:
        """A lower bound on lambda_min(J_m J_m^T) (as gram_lower on the whole J_m)."""
        Gm, Gr = mid_rad(self.G)
        Gm, Gr = symmetrize(Gm, Gr)
        return lambda_min_lower(Gm, Gr)

    def radius_norm_upper(self) -> float:
        """An upper bound on ||J_r||_2."""
        if self.R is None:
            return 0.0
        return sqrt_up(nonneg_norm2_upper(self.R))


def sqrt_down(x: float) -> float:
    return float(max(down(np.sqrt(x)), 0.0)) if x > 0 else 0.0


def sqrt_up(x: float) -> float:
    return float(up(np.sqrt(x)))
