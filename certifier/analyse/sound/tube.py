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
cross-section ball B(theta_j, e_j) (L never increases along the flow).

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
from ...compile.iv import Iv, iv_mag, iv_matmul, iv_mul, iv_sub, mid_rad
from ...compile.rounding import INF, down, nonneg_sum_upper, point_bounds, up
from .ball import BallModel, ball_rule
from .linalg import nonneg_norm2_upper, sqrt_down, sqrt_up

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
    loss_upper: float        # sup L over B(theta_j, e_in): L(t) <= it on [t_j, t_j + h]


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
    message: str = ""
    notes: list = field(default_factory=list)


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
        node = bm.evaluate(np.asarray(center, dtype=np.float64), radius)
        shape = (model.n,) + model.out_shape
        F = Iv(np.broadcast_to(node.v.lo, shape).reshape(model.n, model.k),
               np.broadcast_to(node.v.hi, shape).reshape(model.n, model.k))
    r = iv_sub(F, Iv(model.yk))
    mag = iv_mag(r)                                       # (n, k)
    sq = nonneg_sum_upper(up(mag * mag), None)
    L = float(up(sq / model.n)) if model.n else 0.0
    return L, np.asarray(up(np.sqrt(nonneg_sum_upper(up(mag * mag), 1)))).reshape(-1)


@dataclass
class Tangent:
    """The float data of a segment's comparison curve at theta_j, and its point enclosures."""
    theta: np.ndarray
    J: Iv                    # interval Jacobian at theta_j (n k, m)
    r: Iv                    # interval residual (n k,)
    B: np.ndarray            # J~^T U  (m, nk)
    lam: np.ndarray          # clamped eigenvalues
    ur: np.ndarray           # U^T r~
    Jnorm: float             # >= ||J_j||_2
    C: float                 # >= |J_j^T r_j - B ur|
    M: float                 # >= ||J_j^T J_j B - B diag(lam)||_2


def tangent(model: IntervalModel, theta: np.ndarray) -> Tangent:
    enc = model.at_point(theta, True)
    J = enc.J
    r = Iv(enc.r.lo.reshape(-1), enc.r.hi.reshape(-1))
    Jm, _ = mid_rad(J)
    rm, _ = mid_rad(r)
    lam, U = np.linalg.eigh(Jm @ Jm.T)
    lam = np.maximum(lam, 0.0)
    B = Jm.T @ U
    ur = U.T @ rm
    JT = Iv(J.lo.T.copy(), J.hi.T.copy())
    Jnorm = nonneg_norm2_upper(iv_mag(J))
    C = _norm_up(iv_mag(iv_sub(iv_matmul(JT, r), iv_matmul(Iv(B), Iv(ur)))))
    JB = iv_matmul(J, Iv(B))                               # (nk, nk)
    JJB = iv_matmul(JT, JB)                                # (m, nk)
    Bl = iv_mul(Iv(B), Iv(np.broadcast_to(lam, B.shape).copy()))
    M = nonneg_norm2_upper(iv_mag(iv_sub(JJB, Bl)))
    return Tangent(np.asarray(theta, dtype=np.float64), J, r, B, lam, ur, Jnorm, C, M)


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
    next checkpoint)."""
    moved = iv_matmul(Iv(tg.B), phi_iv)
    lo = down(down(tg.theta + moved.lo) - nxt)
    hi = up(up(tg.theta + moved.hi) - nxt)
    return _norm_up(np.maximum(np.abs(lo), np.abs(hi)))


def segment_numbers(model: IntervalModel, bm: BallModel, tg: Tangent, h: float, rho: float) -> dict:
    """ell, the defect bound and the extent D of the segment of length h from tg's checkpoint, over
    the ball B(theta_j, D + rho)."""
    c = 2.0 / model.n
    Phi = phi_bounds(tg, c, h)
    colup = up(np.sqrt(nonneg_sum_upper(up(tg.B * tg.B), 0)))     # column norms, rounded up
    D1 = float(nonneg_sum_upper(up(Phi * colup), None))
    D2 = float(up(nonneg_norm2_upper(np.abs(tg.B)) * _norm_up(Phi)))
    D = min(D1, D2)
    radius = float(up(D + rho))
    lip = bm.lipschitz(tg.theta, radius)
    H = np.asarray(lip["H"], dtype=np.float64)
    node = lip["node"]
    shape = (model.n,) + model.out_shape
    F = Iv(np.broadcast_to(node.v.lo, shape).reshape(-1), np.broadcast_to(node.v.hi, shape).reshape(-1))
    rmag = iv_mag(iv_sub(F, Iv(model.yk.reshape(-1))))
    sH = float(nonneg_sum_upper(up(rmag * H), None))
    cup = float(up(2.0 / model.n))
    ell = float(up(cup * sH))
    termA = float(up(sH * D))
    Hl2 = _norm_up(H)
    termB = float(up(up(up(tg.Jnorm * Hl2) * up(D * D)) * 0.5))
    termD = float(up(tg.M * _norm_up(Phi)))
    defect = float(up(cup * up(up(termA + termB) + up(tg.C + termD))))
    return {"ell": ell, "defect": defect, "extent": D, "ball_radius": radius}


def propagate(ell: float, defect: float, e_in: float, h: float) -> float:
    """E = exp(ell h) (e_in + defect h), rounded up."""
    return float(up(_exp_up(float(up(ell * h))) * up(e_in + up(defect * h))))


# --- building the tube ----------------------------------------------------------------------------
def build(model: IntervalModel, bm: BallModel, *, cap: float, target_loss: float, max_segments: int = MAX_SEGMENTS,
          h0: float = 0.0625, try_terminal=None, progress=lambda: None, local_tol: float = None) -> Tube:
    """Follow the tangent-model flow from theta0 and prove the tube segment by segment. `cap` bounds
    the tube radius (beyond it the enclosures are useless); the tube stops once the loss bound is
    below `target_loss`, or when try_terminal(tube) returns a Terminal, or at max_segments."""
    c = 2.0 / model.n
    local_tol = LOCAL_TOL if local_tol is None else local_tol
    theta = model.theta0.copy()
    e, t, h = 0.0, 0.0, h0
    L_now, _ = loss_over_ball(model, bm, theta, 0.0)
    tube = Tube([], theta, 0.0, L_now, 0.0)
    tg = tangent(model, theta)
    last_try = math.inf
    while len(tube.segments) < max_segments:
        progress()
        accepted = None
        guess = None
        for _ in range(40):
            rho = max(float(up(SAFETY * e)), cap * 1e-6) if guess is None else max(guess, cap * 1e-6)
            for _ in range(6):
                nums = segment_numbers(model, bm, tg, h, rho)
                E = propagate(nums["ell"], nums["defect"], e, h)
                if E < rho:
                    break
                rho = float(up(SAFETY * E))
            ok = E < rho and E <= cap and up(nums["defect"] * h) <= local_tol * cap
            if ok:
                accepted = (nums, E, rho)
                break
            h *= 0.5
            guess = float(up(SAFETY * E)) if E < INF else None
            if h < 1e-12:
                break
        if accepted is None:
            tube.message = f"no segment from t = {t:.4g} keeps the tube below radius {cap:g} (tube radius {e:.3g})"
            return tube
        nums, E, rho = accepted
        if (t + h) - t != h:            # segment times must be exact: t_{j+1} = t_j + h_j
            tube.message = f"the segment times lost exactness at t = {t:.6g}"
            return tube
        # the next checkpoint: the comparison curve's end in floats
        phi, phi_iv = phi_end(tg, c, h)
        nxt = tg.theta + tg.B @ phi
        jmp = jump(tg, phi_iv, nxt)
        tube.segments.append(Segment(t, h, tg.theta, e, rho, nums["ell"], nums["defect"], nums["extent"], E, L_now))
        t = float(t + h)
        e = float(up(E + jmp))
        theta = nxt
        L_now = min(L_now, loss_over_ball(model, bm, theta, e)[0])
        tube.end_theta, tube.end_e, tube.end_loss, tube.end_time = theta, e, L_now, t
        tg = tangent(model, theta)
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
    tube.message = f"{max_segments} segments: the loss bound is {L_now:.3g} at t = {t:.4g}"
    return tube


def terminal(model: IntervalModel, bm: BallModel, theta: np.ndarray, e: float, loss_upper: float,
             radius: float | None = None):
    """The ball rule around the tube's end: (Terminal or None, the rule's Bound of the last try).
    With sigma' = sigma_min(J_c) - D_c and mu(r) = (sigma' - Lip r)^2 / n the condition
    r >= e + sqrt(L / mu(r)) reads (r - e)(sigma' - Lip r) >= sqrt(n L), largest at
    r* = (e + sigma' / Lip) / 2: radius None tries r* (twice, Lip depends on r)."""
    r = radius if radius is not None else float(up(e + max(sqrt_up(loss_upper), 1e-9)))
    bound = None
    for _ in range(1 if radius is not None else 3):
        bound = ball_rule(model, bm, theta, r)
        mu = float(bound.value)
        if mu > 0 and terminal_needed(e, loss_upper, mu) <= r:
            return Terminal(r, mu, loss_upper, e, bound), bound
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


def replay(model: IntervalModel, bm: BallModel, thetas: list, hs: list, rhos: list) -> dict:
    """Re-prove a recorded tube: checkpoints theta_0..theta_N (theta_0 must be the spec's theta0),
    lengths h_j and assumed radii rho_j. Returns the recomputed numbers, or raises ValueError naming
    the first segment that does not close."""
    if not np.array_equal(thetas[0], model.theta0):
        raise ValueError("the first checkpoint is not theta0")
    c = 2.0 / model.n
    e, t = 0.0, 0.0
    L_now, _ = loss_over_ball(model, bm, thetas[0], 0.0)
    out = []
    for j, (h, rho) in enumerate(zip(hs, rhos)):
        if not (h > 0 and math.isfinite(h) and rho > 0 and math.isfinite(rho)):
            raise ValueError(f"segment {j}: h = {h!r}, rho = {rho!r} are not positive numbers")
        tg = tangent(model, thetas[j])
        nums = segment_numbers(model, bm, tg, h, rho)
        E = propagate(nums["ell"], nums["defect"], e, h)
        if not E < rho:
            raise ValueError(f"segment {j}: the error bound E = {E!r} is not below the assumed radius {rho!r}")
        _, phi_iv = phi_end(tg, c, h)
        jmp = jump(tg, phi_iv, thetas[j + 1])
        out.append({"t": t, "e_in": e, "loss_upper": L_now, "e_out": E, "ell": nums["ell"], "defect": nums["defect"]})
        t = float(t + h)
        e = float(up(E + jmp))
        L_now = min(L_now, loss_over_ball(model, bm, thetas[j + 1], e)[0])
    return {"segments": out, "end_time": t, "end_e": e, "end_loss": L_now}


# --- the route, for compose/sound.py --------------------------------------------------------------
def route(model: IntervalModel, *, floor: float, cap: float = 0.02, max_segments: int = MAX_SEGMENTS,
          reporter=None) -> Tube:
    """The trajectory route: the tube from theta0 until the terminal ball closes (or the loss bound is
    at the floor, or max_segments). Least squares, a model the ball rule takes (the caller checks)."""
    bm = BallModel(model)
    tries = []

    def try_terminal(tube: Tube):
        term, bound = terminal(model, bm, tube.end_theta, tube.end_e, tube.end_loss)
        tries.append({"t": tube.end_time, "tube_radius": tube.end_e, "loss_upper": tube.end_loss,
                      "mu": float(bound.value) if bound is not None else None,
                      "radius": (bound.numbers or {}).get("radius") if bound is not None else None})
        return term
    tube = build(model, bm, cap=cap, target_loss=floor, max_segments=max_segments, h0=1 / 16,
                 try_terminal=try_terminal)
    tube.notes = tries
    return tube
