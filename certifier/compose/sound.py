"""`method interval`: the sound run of one spec, from a checked spec to its Evidence (sound=True).

The verdict `certified` is a theorem (docs/theory.md section 10): bound_mu proved R >= mu on the
region above the floor, and rho = int_floor^L0 sqrt(phi'(u) / (c mu)) du for the loss's natural phi
(least squares: (sqrt(L0) - sqrt(floor)) / sqrt(mu); exponential: log(L0 / floor) / sqrt(mu)),
computed with upward rounding from an upper bound on L0 and mu rounded down, is <= the region's
radius (halfwidth). Then gradient flow from theta0 satisfies
L(theta_t) <= max(phi^-1(phi(L0_up) - c mu t), floor) for all t (least squares: L0_up exp(-4 mu t)).
`refuted` is a verified point: in the region, L >= floor and R < the mu that confinement needs.
Everything else is `inconclusive`. The witness descent runs as in the sampled mode (evidence).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..analyse.levels import NOISE, WITNESS_STEPS, ZERO_MU
from ..analyse.parallel import LazyPoolExecutor, make_executor
from ..analyse.regions import Ball, Box
from ..analyse.sound.ball import BallModel
from ..analyse.sound.engine import SoundOutcome, ball_applicable, bound_mu, size_problem
from ..analyse.sound.evidence import SoundEvidence
from ..analyse.sound.linalg import sqrt_down, sqrt_up
from ..analyse.sound.region import SoundRegion
from ..analyse.threads import set_threads
from ..analyse.witness import run_witness
from ..compile.interval import NotSupported
from ..compile.interval_losses import INTERVAL_LOSSES
from ..compile.interval_model import IntervalModel
from ..compile.problem import Problem, problem_device
from ..compile.rounding import down, elementary, up
from ..diagnostics import Diagnostic, SpecError
from ..language.desingularizers import LOG, Desingularizer, make
from ..language.losses import LOSSES, tangent_point
from ..result import FailingPoint, FailingRegion, MuSource
from .build import Evidence
from .composition import DECADES, auto_power
from .rate import ProfileRate, proved_rate
from .verdicts import nice_up as _nice_up

RADIUS_TRIES = 6
RULE_TEXT = {
    "subspace": "affine model: R >= lambda_min(Sigma) (1 - L*/L) with L* bounded above",
    "spectrum": "lambda_min of the tangent kernel by Weyl on an interval Jacobian",
    "block": "lambda_min of one parameter block's kernel (K >= K_b)",
    "direct": "min ||grad L||^2 / max ||g||_D^2 over interval enclosures",
    "ball": "lambda_min of the tangent kernel on the whole ball: sigma_min(Jc) - Lip_J r (Lipschitz Jacobian)",
    "convex": "strong convexity on the hull of the box and a near-minimiser: R >= (a/2)(1 - L(theta*)/L)",
    "hessian": "strong convexity from an interval Hessian of L on the hull of the box and a near-minimiser",
    "none": "no rule applied",
}


class SoundnessViolation(RuntimeError):
    """An independent check contradicts a proved bound: a proof was wrong, which is a bug in
    certify (the CLI reports it as an internal error, exit 4, never as a verdict)."""


def _span(span):
    if span is None:
        return None
    return {"line": span.line, "column": span.column, "end_line": span.end_line, "end_column": span.end_column}


def natural(loss) -> tuple[float, Desingularizer]:
    """(c, phi) of a loss of the table (or its name): its natural phi and c = phi'(L) G(L), so that
    phi'(L) ||grad L||^2 >= c R and K = c mu (least squares: 4, log; exponential: 1, -1/u)."""
    loss = LOSSES[loss] if isinstance(loss, str) else loss
    return float(loss.constant()), loss.natural_phi()


POWER_LOSSES = {"least_squares": (4.0, 1.0), "exponential": (1.0, 2.0)}   # G(L) = coef * L^degree, exactly


def power_constant(loss, phi: Desingularizer, floor: float, L0_up: float) -> float:
    """A float <= min over L in [floor, L0_up] of phi'(L) G(L) for phi = power(alpha) (phi' = u^-2 alpha) and
    a loss whose bound G(L) = coef L^d holds with equality or as a lower bound (least squares 4L,
    exponential L^2, docs/theory.md 3a): coef L^p with p = d - 2 alpha is monotone, so the minimum is at
    L0_up (p <= 0) or at the floor (p > 0; 0 when the floor is 0). Evaluated in arb, rounded down."""
    import flint

    coef, degree = POWER_LOSSES[loss.name]
    alpha = float(phi.params["alpha"])
    old = flint.ctx.prec
    flint.ctx.prec = 128
    try:
        p = flint.arb(degree) - 2 * flint.arb(alpha)
        if p <= 0:
            at = L0_up
        elif p > 0:
            if not floor > 0:
                return 0.0
            at = floor
        else:               # p straddles 0: alpha = degree / 2 exactly is not decided by arb; both ends
            return min(_power_value(coef, p, L0_up), _power_value(coef, p, floor) if floor > 0 else 0.0)
        return _power_value(coef, p, at)
    finally:
        flint.ctx.prec = old


def _power_value(coef: float, p, at: float) -> float:
    import flint

    v = flint.arb(coef) * flint.arb(at) ** p
    lo = float(v.lower())
    if math.isnan(lo):
        return 0.0
    return max(float(down(lo)), 0.0)


def phi_supported(loss, phi: Desingularizer) -> bool:
    """Whether the sound mode has a proved c for this (loss, phi): the natural phi, or a power for a loss
    whose G is a power of L (POWER_LOSSES)."""
    loss = LOSSES[loss] if isinstance(loss, str) else loss
    return phi == loss.natural_phi() or (phi.name == "power" and loss.name in POWER_LOSSES)


def sound_constant(loss, n: int, floor: float, L0_up: float,
                   M: float | None = None, phi: Desingularizer | None = None) -> tuple[float, Desingularizer, float | None]:
    """(c, phi, M) for the sound rate: phi the loss's natural desingularizer and c a lower bound of
    phi'(L) ||g||_D^2 wherever the flow can be above the floor (floor <= L <= L0 <= L0_up).
    Least squares and exponential: c = phi'(L) G(L), a constant (4, 1), M None. Logistic: every
    per-sample loss is <= n L <= n L0_up = M along the flow, so ||g||_D^2 >= h_M(L) (docs/theory.md 3b)
    and c = min over [floor, L0_up] of h_M(L) / h(L), bounded below in arb (minorant_ratio_lower).
    M given: a proved upper bound of the per-sample losses wherever the flow can be above the floor
    (the proven leaves' largest, sample_bound below); the smaller of it and n L0_up is used."""
    loss = LOSSES[loss] if isinstance(loss, str) else loss
    if phi is not None and phi != loss.natural_phi():
        if not phi_supported(loss, phi):
            raise ValueError(f"no sound constant for {phi.name} with loss {loss.name}")
        return power_constant(loss, phi, floor, L0_up), phi, None
    phi = loss.natural_phi()
    if not loss.needs_sample_bound:
        return float(loss.constant()), phi, None
    bound = float(up(float(n) * L0_up))
    M = bound if M is None else max(min(float(M), bound), L0_up)     # L <= max_i l_i: M >= L0 is true
    return minorant_ratio_lower(M, floor, L0_up), phi, M


def sample_bound(sample_max: float | None) -> float | None:
    """The recorded M from the proven leaves' largest per-sample bound, raised by 1e-9 relative so that
    a replay on another BLAS build (enclosures a few ulps apart) still finds its own maximum below it."""
    if sample_max is None or not math.isfinite(sample_max):
        return None
    return float(up(up(sample_max) * (1 + 1e-9)))


def minorant_ratio_lower(M: float, low: float, high: float, pieces: int = 512) -> float:
    """A float <= G(L) / h(L) for every L in [low, high] (0 < low <= high <= M), h(u) = (1 - e^-u)^2 and
    G <= h_M the minorant of docs/theory.md 3b: h up to a point u <= u1, the tangent of h at u after.
    u is the float bisection's u1, moved down until arb proves f(u) = h'(u)(M - u) - h(M) + h(u) <= 0
    and u <= ln 2 (then u <= u1 and that tangent lies below h_M). Beyond u, on each piece [a, b] of a
    geometric grid, G(L) / h(L) >= T(a) / h(b) (T and h increase), evaluated in arb and rounded down."""
    import flint

    if not (0 < low <= high <= M):
        raise ValueError("need 0 < low <= high <= M")
    old = flint.ctx.prec
    flint.ctx.prec = 128
    try:
        A = flint.arb

        def h(u):
            return (1 - (-u).exp()) ** 2

        def dh(u):
            e = (-u).exp()
            return 2 * e * (1 - e)
        ln2 = A(2).log()
        if A(M) <= ln2:                    # h convex on [0, M]: h_M = h
            return 1.0
        u = tangent_point(M)
        for _ in range(200):
            ua = A(u)
            f = dh(ua) * (A(M) - ua) - h(A(M)) + h(ua)
            if f <= 0 and ua <= ln2:       # arb comparisons are True only when certain
                break
            u = float(np.nextafter(u * (1 - 1e-9), 0.0))
        else:
            return 0.0
        if high <= u:
            return 1.0
        slope, hu = dh(ua), h(ua)
        grid = np.geomspace(max(low, u), high, pieces + 1)
        grid[0], grid[-1] = max(low, u), high
        grid = np.maximum.accumulate(grid)
        best = 1.0
        for a, b in zip(grid[:-1], grid[1:]):
            ratio = (hu + slope * (A(float(a)) - ua)) / h(A(float(b)))
            value = float(ratio.lower())
            if math.isnan(value):
                return 0.0
            best = min(best, float(np.nextafter(value, -math.inf)))   # float() rounds to nearest
        return max(best, 0.0)
    finally:
        flint.ctx.prec = old


def path_bounds(phi: Desingularizer, low: float, high: float) -> tuple[float, float]:
    """(lower, upper) bounds on int_low^high sqrt(phi'(u)) du for the exact reals low <= high, in arb
    (the path-length integral of confinement; inf when it diverges at low = 0)."""
    if not high > low:
        return 0.0, 0.0
    if phi.name == "power" and phi.params.get("alpha") != 1.0:
        import flint

        old = flint.ctx.prec
        flint.ctx.prec = 128
        try:     # int u^-alpha du = (b^(1 - alpha) - a^(1 - alpha)) / (1 - alpha), finite at a = 0
            e = 1 - flint.arb(float(phi.params["alpha"]))
            a = flint.arb(low) ** e if low > 0 else flint.arb(0)
            v = (flint.arb(high) ** e - a) / e
            lo, hi = float(v.lower()), float(v.upper())
        finally:
            flint.ctx.prec = old
        return max(float(down(lo)), 0.0), float(up(hi))
    if phi.name == "power" and phi.params.get("alpha") == 1.0:
        if not low > 0:
            return math.inf, math.inf
        import flint

        old = flint.ctx.prec
        flint.ctx.prec = 128
        try:
            v = (flint.arb(high) / flint.arb(low)).log()     # int u^-1 du
            lo, hi = float(v.lower()), float(v.upper())
        finally:
            flint.ctx.prec = old
        return max(float(down(lo)), 0.0), float(up(hi))     # float() rounds to nearest: one step out
    if phi.name == "lambert":
        if not low > 0:
            return math.inf, math.inf
        import flint

        old = flint.ctx.prec
        flint.ctx.prec = 128
        try:     # int 1/(1 - e^-u) du = log(e^u - 1)
            v = flint.arb(high).expm1().log() - flint.arb(low).expm1().log()
            lo, hi = float(v.lower()), float(v.upper())
        finally:
            flint.ctx.prec = old
        return max(float(down(lo)), 0.0), float(up(hi))
    raise ValueError(f"no outward path integral for {phi.name}")


def rho_upper(L0_up: float, floor: float, mu: float, phi: Desingularizer = LOG, c: float = 4.0) -> float:
    """int_floor^L0 sqrt(phi'(u) / (c mu)) du rounded up (L0_up >= L0, mu a proven lower bound); for
    least squares (log, c = 4) (sqrt(L0) - sqrt(floor)) / sqrt(mu)."""
    if not mu > 0:
        return math.inf
    if phi == LOG and c == 4.0:
        num = float(up(sqrt_up(L0_up) - sqrt_down(floor)))
        return float(up(num / sqrt_down(mu)))
    _, num = path_bounds(phi, floor, L0_up)
    K = float(mu) if c == 1 else float(down(c * mu))
    return float(up(num / sqrt_down(K)))


def needed_mu(L0_up: float, floor: float, radius: float, phi: Desingularizer = LOG, c: float = 4.0) -> float:
    """The smallest mu with rho_upper(mu) <= radius, rounded up (with a 1e-12 relative margin)."""
    if phi == LOG and c == 4.0:
        num = float(up(sqrt_up(L0_up) - sqrt_down(floor)))
        q = float(up(num / down(radius)))
        return float(up(up(q * q) * (1 + 1e-12)))
    _, num = path_bounds(phi, floor, L0_up)
    q = float(up(num / down(radius)))
    qq = float(up(q * q)) if c == 1 else float(up(up(q * q) / down(c)))
    return float(up(qq * (1 + 1e-12)))


def needed_mu_lower(L0_lo: float, floor: float, radius: float, phi: Desingularizer = LOG,
                    c: float = 4.0) -> float:
    """A lower bound on the exact mu that confinement needs, (int_floor^L0 sqrt(phi') / r)^2 / c
    (least squares: ((sqrt(L0) - sqrt(floor)) / r)^2), from L0_lo <= L(theta0): a point with R below
    it refutes whatever the rounding."""
    if phi == LOG and c == 4.0:
        num = float(down(sqrt_down(L0_lo) - sqrt_up(floor)))
    else:
        num = path_bounds(phi, floor, L0_lo)[0] if L0_lo > floor else 0.0
    if not num > 0:
        return 0.0
    q = float(down(num / up(radius)))
    return float(down(q * q)) if c == 1 or phi == LOG and c == 4.0 else float(down(down(q * q) / up(c)))


def crossing_upper(phi: Desingularizer, floor: float) -> float:
    """An upper bound on floor * sqrt(phi'(floor)) (0 at floor 0): the part below the floor of the one
    gradient-descent step that crosses it (docs/theory.md 10.9)."""
    if not floor > 0:
        return 0.0
    if phi == LOG:
        return sqrt_up(floor)                       # floor / sqrt(floor)
    import flint

    old = flint.ctx.prec
    flint.ctx.prec = 128
    try:
        e = flint.arb(floor)
        if phi.name == "power":
            v = e ** (1 - flint.arb(phi.params["alpha"]))          # e * e^-alpha
        elif phi.name == "lambert":
            v = e / (1 - (-e).exp())
        else:
            raise ValueError(f"no outward crossing term for {phi.name}")
        return float(up(float(v.upper())))
    finally:
        flint.ctx.prec = old


def step_slack(step: float, beta: float) -> float:
    """A lower bound on 1 - beta eta / 2 (the descent lemma's factor)."""
    return float(down(1.0 - float(up(up(beta * step) / 2))))


def rho_step_upper(L0_up: float, floor: float, mu: float, phi: Desingularizer, c: float, step: float,
                   beta: float, grad_bound: float, horizon: float) -> float:
    """The path-length bound of gradient descent with step eta <= 1/beta, rounded up (docs/theory.md 10.9):
        (int_floor^L0 sqrt(phi') + floor sqrt(phi'(floor))) / (sqrt(c mu) (1 - beta eta / 2))
        + sqrt(N eta floor / (1 - beta eta / 2)) + eta G,
    N = horizon (steps), G >= sup ||grad L|| over the points of the region with L <= L0."""
    if not mu > 0:
        return math.inf
    slack = step_slack(step, beta)
    if not slack > 0:
        return math.inf
    K = float(mu) if c == 1 else float(down(c * mu))
    flow = rho_upper(L0_up, floor, mu, phi, c)
    cross = float(up(crossing_upper(phi, floor) / sqrt_down(K)))
    above = float(up(up(flow + cross) / slack))
    post = sqrt_up(float(up(up(up(horizon * step) * floor) / slack))) if floor > 0 else 0.0
    last = float(up(step * grad_bound))
    return float(up(up(above + post) + last))


def needed_mu_step(L0_up: float, floor: float, radius: float, phi: Desingularizer, c: float, step: float,
                   beta: float, grad_bound: float, horizon: float) -> float:
    """The mu that rho_step_upper needs to be <= radius (rounded up, a 1e-9 relative margin); inf when the
    terms that do not depend on mu already exceed the radius."""
    slack = step_slack(step, beta)
    post = sqrt_up(float(up(up(up(horizon * step) * floor) / slack))) if floor > 0 else 0.0
    last = float(up(step * grad_bound))
    room = float(down(down(down(radius - post) - last) * slack))
    if not (room > 0 and slack > 0):
        return math.inf
    if phi == LOG:
        integral = float(up(2.0 * float(up(sqrt_up(L0_up) - sqrt_down(floor)))))
    else:
        integral = path_bounds(phi, floor, L0_up)[1]
    num = float(up(integral + crossing_upper(phi, floor)))
    q = float(up(num / room))
    return float(up(up(up(q * q) / down(c)) * (1 + 1e-9)))


FUNCTIONS_TEXT = {"margin": "numpy with a relative margin of 2^-40 (docs/theory.md section 10)",
                  "arb": "python-flint arb ball arithmetic (rigorous; docs/theory.md section 10)"}


def certify_sound(checked, options):
    """The sound run, with elementary functions evaluated as `functions=` says (margin or arb):
    (the problem, its Evidence)."""
    functions = str(checked.method.options.get("functions") or "margin")
    # --workers / --scheduler: the boxes of each branch-and-bound round (analyse/parallel.py)
    device = problem_device(checked, options.device)
    if options.workers and options.workers > 1 and not options.scheduler:
        executor = LazyPoolExecutor(checked, options.workers, device, options.threads or 1)
    else:
        executor = make_executor(checked, options.workers, options.scheduler, device, options.threads or 1)
    try:
        with elementary(functions):
            problem, evidence = _certify_sound(checked, options, functions, executor)
        note = executor.note() if getattr(executor, "note", None) else None
        if note and evidence is not None:
            evidence.notes.append(note)
        return problem, evidence
    finally:
        executor.close()


def _certify_sound(checked, options, functions: str, executor):
    t_start = time.perf_counter()
    reporter = options.reporter
    with reporter.phase("compiling the model", total=None):   # named, for a --budget running out here
        problem = Problem(checked, problem_device(checked, options.device))
    set_threads(options.threads or 1)          # torch's and numpy's BLAS: the sound mode is numpy products
    # the loss table's facts: its natural desingularizer phi and c = phi'(L) G(L), so K = c mu
    # (logistic: c depends on L0 and the floor, computed below once L0 is bounded)
    c, phi = natural(problem.loss_def) if not problem.loss_def.needs_sample_bound else \
        (None, problem.loss_def.natural_phi())
    M_used = None       # the M of c (logistic, cross-entropy), reported as loss.sample_bound
    claim, method, region_choice = checked.claim.options, checked.method.options, checked.region
    floor = float(claim.get("floor", 0.0))
    horizon = float(claim.get("horizon", 1e4))
    budget = int(method.get("boxes", 2000))
    seed = int(method.get("seed", 0))
    with reporter.phase("theta0: loss and gradient", total=None):
        p0 = problem.point(problem.theta0)
        problem.initial_loss_check(p0)   # E206: L, grad L and R at theta0 finite at this scale
    noise = NOISE * p0.loss
    timing: dict = {}
    reason: dict = {}      # why phi (the loss-level profile)
    claim_step = checked.claim.options.get("step")
    notes = ["sound mode: R >= mu is proved by interval arithmetic for the model and data as stored "
             "(float64 values read as exact reals); the rate is a theorem about gradient flow"
             + (" and, with step=, about gradient descent with that step" if claim_step is not None else "")]
    if problem.device.type != torch.device(options.device).type:
        notes.append(f"--device {options.device}: the sound mode computes on the CPU (interval arithmetic in "
                     "numpy); the device was not used")

    def result(verdict, sound, *, mu=None, outcome: SoundOutcome | None = None, failing=None, rate=None,
               bound=None, witness=None, radius=None, rho=None, history=(), L0_up=None, extra_notes=(),
               evidence=None):
        timing["total"] = time.perf_counter() - t_start
        rules = (outcome.rules_used if outcome else {}) or {}
        minima = _rule_minima(outcome) if outcome else {}
        sources = [MuSource(name, RULE_TEXT.get(name, name), minima.get(name), count)
                   for name, count in sorted(rules.items())]
        boxes = outcome.boxes_evaluated if outcome else 0
        seconds = outcome.bnb_seconds if outcome else 0.0
        return problem, Evidence(
            verdict=verdict, sound=sound,
            method={"name": "interval", "boxes": budget, "seed": seed, "functions": functions,
                    **({"route": method["route"]} if method.get("route") else {}),
                    "boxes_evaluated": boxes,
                    "boxes_per_second": boxes / seconds if seconds > 0 and boxes > 1 else None,
                    "elementary_functions": FUNCTIONS_TEXT[functions],
                    "status": outcome.status if outcome else None,
                    "message": outcome.message if outcome else None},
            loss={"initial": p0.loss, "initial_upper": L0_up, "constant": c, "floor": floor,
                  "sample_bound": M_used,
                  "inequality": problem.loss_def.inequality, "minimum_seen": None},
            phi=reason.get("rate_phi", phi), phi_reason=reason.get("phi"),
            mu=mu, mu_source=_weakest_rule(outcome) if outcome and mu is not None else None, mu_sources=sources,
            radius=radius, rho=rho, radius_search=list(history),
            rate=rate or {"formula": None, "curve": [], "times_to_fraction": {}, "horizon": horizon,
                          "time": "gradient-flow time t",
                          "convention": "R = ||grad L||^2 / ||g||_D^2 with the L2(D) inner product (mean over the data)"},
            witness=witness, failing=failing,
            timing=timing, notes=notes + list(extra_notes), proof=_proof(outcome), bound=bound, records=evidence)

    # --- what the sound mode covers: anything else is a diagnostic at its span -----------------------
    unsupported = None
    step = claim.get("step")
    step = float(step) if step is not None else None
    if step is not None and problem.loss_def.name not in INTERVAL_LOSSES:
        unsupported = ("E109", f"a step size with loss {problem.loss_def.name} (the sound mode proves a "
                       "smoothness bound for the losses of its table only)",
                       checked.claim.option_spans.get("step", checked.claim.span),
                       "leave out step= (gradient flow), or use loss least_squares")
    elif step is not None and region_choice.options.get("radius") == "auto":
        unsupported = ("E109", "a step size with radius=auto (the smoothness bound is proved over a fixed region)",
                       region_choice.span, "give the region a fixed radius or halfwidth")
    elif checked.desingularizer.name != "auto" and (_chosen(checked.desingularizer) is None or not phi_supported(
            problem.loss_def, _chosen(checked.desingularizer))):
        unsupported = ("E111", f"the desingularizer '{checked.desingularizer.name}' with loss {problem.loss_def.name}",
                       checked.desingularizer.span,
                       f"use desingularizer auto (or {_phi_spec(phi)}, the loss's natural one"
                       + (", or power(alpha)" if problem.loss_def.name in POWER_LOSSES else "")
                       + ") with method interval")
    elif (_chosen(checked.desingularizer) if checked.desingularizer.name != "auto" else phi) != phi:
        phi = _chosen(checked.desingularizer)   # a power: c = min over the loss band of phi'(L) G(L), below
        c = None
    if unsupported is None and _diverges(phi) and not floor > 0:
        unsupported = ("E109", f"floor=0 with loss {problem.loss_def.name} and phi = {_phi_spec(phi)}: the "
                       f"path-length bound int_floor^L0 sqrt(phi'(u)) du diverges at 0 (docs/theory.md 3e)",
                       checked.claim.option_spans.get("floor", checked.claim.span),
                       "certify a positive floor, e.g. rate(floor=1e-3)")
    model = None
    if unsupported is None:
        try:
            model = IntervalModel(checked)
        except NotSupported as exc:
            if exc.expr is not None:
                unsupported = ("E105", exc.message, exc.expr.span, "rewrite the expression with the supported "
                               "operations, or use method sampled(...)")
            elif "loss" in exc.message:
                sound = " or ".join(n for n, loss in LOSSES.items() if loss.sound and n in INTERVAL_LOSSES)
                unsupported = ("E106", exc.message, checked.loss.span, f"use loss {sound} with method interval")
            else:
                unsupported = ("E107", exc.message, checked.method.span, "use method sampled(...) for this model")
    if unsupported is None and size_problem(model) and not ball_applicable(model, region_choice.name):
        why, hint = size_problem(model), ("use method sampled(...) for large models, or a ball region: the ball rule "
                                          "bounds the whole ball at once for models with a Lipschitz Jacobian "
                                          "(docs/theory.md 10.7)")
        if region_choice.name == "ball":          # the spec has one: say why the ball rule does not take it
            why = f"{why}; the ball rule does not apply either: {BallModel(model).unsupported}"
            hint = ("use method sampled(...) for this model, or a narrower network (two-layer networks take the "
                    "ball rule at any width: docs/theory.md 10.7)")
        unsupported = ("E205", why, checked.method.span, hint)
    if unsupported is not None:
        code, what, span, hint = unsupported
        message = what if code == "E205" or what.startswith("floor=0") else \
            f"{what}: not supported in the sound mode (method interval)"
        raise SpecError([Diagnostic(code, message, span, hint, checked.spec.path)])

    enc0 = model.at_point(model.theta0, False)
    L0_up = float(enc0.L.hi)
    auto = region_choice.name == "ball" and region_choice.options.get("radius") == "auto"
    kind = region_choice.name
    make = (lambda r: Ball(problem.theta0, r)) if kind == "ball" else (lambda r: Box(problem.theta0, r))

    if float(enc0.L.hi) <= floor:
        bound = lambda t: L0_up   # noqa: E731 - L is non-increasing along the flow
        return result("certified", True, rho=0.0, L0_up=L0_up, bound=bound,
                      evidence=SoundEvidence(kind, None, floor, horizon, functions, L0_up, float(enc0.L.lo)),
                      extra_notes=["the initial loss is at or below the floor (verified): L(theta_t) <= L0 "
                                   "for all t, since L is non-increasing along the flow"])
    if method.get("route") == "trajectory":      # a validated tube, then the ball rule (issue 18)
        from .trajectory import certify_trajectory
        verdict, sound, kwargs, violation = certify_trajectory(problem, model, checked, floor, horizon, L0_up, enc0,
                                                               functions, reporter, seed)
        if violation is not None:
            raise SoundnessViolation(violation)
        return result(verdict, sound, L0_up=L0_up, **kwargs)
    M_leaves = None     # the recorded M from the proven leaves (certificates), when it raised c
    smooth = None       # gradient descent: the proved smoothness over the region (docs/theory.md 10.9)
    if step is not None:
        smooth = step_facts(model, make(float(region_choice.options.get("radius")
                                              or region_choice.options.get("halfwidth"))), L0_up)
        if isinstance(smooth, str):
            raise SpecError([Diagnostic("E109", f"a step size: {smooth}: not supported in the sound mode "
                                        "(method interval)", checked.claim.option_spans.get("step", checked.claim.span),
                                        "leave out step= (gradient flow), or use method sampled(...)",
                                        checked.spec.path)])
        notes.append(f"gradient descent with step {step!r}: the Hessian of L is bounded by beta = "
                     f"{smooth['beta']:.6g} over the region (interval Jacobian and second-derivative bounds), "
                     f"eta beta = {step * smooth['beta']:.4g} (docs/theory.md 10.9)")
    if c is None and phi != problem.loss_def.natural_phi():
        c, _, _ = sound_constant(problem.loss_def, model.n, floor, L0_up, phi=phi)
        notes.append(f"phi = {_phi_spec(phi)}: c = min over [floor, L0] of phi'(L) G(L) = {c:.6g} "
                     f"(docs/theory.md 10.10), K = c mu")
        if not c > 0:
            raise SpecError([Diagnostic("E111", f"phi = {_phi_spec(phi)} with loss {problem.loss_def.name} and floor "
                                        f"{floor:g}: phi'(L) G(L) tends to 0 at the floor, no KL constant",
                                        checked.desingularizer.span, "certify a positive floor, or use "
                                        f"{_phi_spec(problem.loss_def.natural_phi())}", checked.spec.path)])
    if c is None:
        c, _, M_used = sound_constant(problem.loss_def, model.n, floor, L0_up)
        notes.append(f"per-sample losses are <= n L(theta0) <= M = {M_used:.6g} along the flow, so "
                     f"||g||_D^2 >= h_M(L) and phi'(L) ||g||_D^2 >= c = {c:.6g} on [floor, L0] "
                     "(docs/theory.md 3b, 10)")
    c_search = c        # the c of the search's target and refutations (before any tighter M)

    # --- the proof: one radius, or the upward fixed-point iteration for radius=auto ------------------
    t1 = time.perf_counter()
    history = []
    # boxes above L(theta0) lie outside the sublevel set the flow never leaves (docs/theory.md 10.5):
    # dropped for the losses added with this rule; least squares keeps its earlier cover (and figures)
    ceiling = L0_up if not model.least_squares else math.inf
    if auto:
        start = _auto_start(model, floor, L0_up, phi, c)
        radii, per_radius = [start], max(budget // RADIUS_TRIES, 20)
    else:
        radii = [float(region_choice.options.get("radius") or region_choice.options.get("halfwidth"))]
        per_radius = budget
        if phi.name == "power" and phi != problem.loss_def.natural_phi() and floor > 0 and step is None:
            # a power phi says that R falls with L: one mu for the region rarely confines the flow, and
            # the loss-level profile below gets what this search leaves of the budget
            per_radius = max(budget // PROFILE_FIRST_SHARE, 1)
    outcome = None
    radius = radii[0]
    step_refused = smooth is not None and not float(up(step * smooth["beta"])) <= 1.0
    for attempt in range(0 if step_refused else RADIUS_TRIES if auto else 1):
        radius = radii[-1]
        need = needed_mu(L0_up, floor, radius, phi, c) if smooth is None else \
            needed_mu_step(L0_up, floor, radius, phi, c, step, smooth["beta"], smooth["grad_bound"], horizon)
        if not math.isfinite(need):
            outcome = SoundOutcome("unresolved", None, None, message=(
                f"with step {step!r} the step terms of the path-length bound alone exceed the radius {radius:g}"))
            history.append({"radius": radius, "mu": None, "path_length_bound": None, "status": outcome.status})
            break
        outcome = bound_mu(problem, make(radius), floor, need, per_radius, reporter, seed=seed,
                           refute_below=needed_mu_lower(float(enc0.L.lo), floor, radius, phi, c), executor=executor,
                           ceiling=ceiling)
        mu = outcome.mu if outcome.status == "proven" else None
        rho = _rho(L0_up, floor, mu, phi, c, smooth, step, horizon) if mu is not None else math.inf
        history.append({"radius": radius, "mu": outcome.mu, "path_length_bound": rho if math.isfinite(rho) else None,
                        "status": outcome.status})
        if outcome.status == "proven" or not auto:
            break
        if outcome.status == "refuted" and _decisive(outcome.failing_points[0], p0.rayleigh, float(enc0.L.lo)):
            break      # a near-critical point (or min L above the floor) refutes every larger radius too
        # mu(r) only falls as r grows while the mu needed falls like 1/r^2: climb as the sampled
        # mode does (docs/theory.md section 4), at most doubling
        known = outcome.mu or 0.0
        grow = rho_upper(L0_up, floor, known, phi, c) if known > 0 else 2 * radius
        radii.append(min(max(1.05 * grow, 1.25 * radius), 2 * radius))
    timing["search"] = time.perf_counter() - t1
    region = make(radius)

    verdict, failing, rate, bound, mu_value, extra = "inconclusive", None, None, None, None, []
    rho = math.inf
    if step_refused:
        outcome = None
        failing = FailingRegion(
            kind="step-size", message=(f"the step {step!r} exceeds 1/beta = {1 / smooth['beta']:.6g}, with beta = "
                                       f"{smooth['beta']:.6g} the proved bound on the Hessian of L over the region"),
            suggestion=f"use step <= {1 / smooth['beta']:.4g} (or a smaller region: beta may fall)", points=[],
            span=_span(checked.claim.option_spans.get("step", checked.claim.span)),
            numbers={"step": step, "smoothness": smooth["beta"], "max_step": 1 / smooth["beta"]})
    elif outcome.status == "proven":
        mu_value = float(outcome.mu)
        recorded = sample_bound(outcome.sample_max) if problem.loss_def.needs_sample_bound else None
        if recorded is not None:
            # a tighter M from the proven leaves: a larger c (the target mu above used n L0, a smaller c)
            c2, _, M2 = sound_constant(problem.loss_def, model.n, floor, L0_up, recorded)
            if c2 > c:
                notes.append(f"the proven boxes bound every per-sample loss by M = {M2:.6g} (n L0 gave "
                             f"{M_used:.6g}): c = {c2:.6g}")
                c, M_used, M_leaves = c2, M2, recorded
        rho = _rho(L0_up, floor, mu_value, phi, c, smooth, step, horizon)
        if rho <= radius:
            verdict = "certified"
            rate, bound = _rate(L0_up, mu_value, floor, horizon, c, phi, step,
                                smooth["beta"] if smooth is not None else None)
        else:
            failing = FailingRegion(
                kind="confinement", message=(f"mu = {mu_value:.6g} is proved, but rho = {rho:.6g} exceeds the "
                                             f"radius {radius:.6g} after outward rounding"),
                suggestion="enlarge the region slightly", points=[], span=_span(region_choice.span),
                numbers={"path_length_bound": rho, "radius": radius, "mu": mu_value})
    elif outcome.status == "refuted" and auto and not _decisive(outcome.failing_points[0], p0.rayleigh,
                                                                float(enc0.L.lo)):
        failing = FailingRegion(
            kind="no-radius", message=(f"no radius with a proved mu and rho(r) <= r after {len(history)} tries "
                                       f"(last r = {radius:.4g}: {outcome.message})"),
            suggestion="use a fixed radius or halfwidth, certify a floor, or start closer to a solution",
            points=[], span=_span(region_choice.span), numbers={"radius": radius})
    elif outcome.status == "refuted":
        pt = outcome.failing_points[0]
        r0 = p0.rayleigh
        critical = pt["rayleigh_upper"] <= ZERO_MU * r0
        claim_false = bool(pt.get("claim_false"))
        # a counterexample is a proved stationary point the flow can meet: in the sublevel set
        # {L <= L(theta0)} (docs/theory.md, section 7); a point with R below the mu confinement needs
        # refutes only this kind of certificate, so the verdict is then inconclusive
        outside = critical and not claim_false and not pt["loss_upper"] <= float(enc0.L.lo)
        verdict = "refuted" if _decisive(pt, r0, float(enc0.L.lo)) else "inconclusive"
        if outside:
            message = (f"R <= {pt['rayleigh_upper']:.3g} (about 0) at a point {pt['distance']:.4g} from theta0 where "
                       f"L <= {pt['loss_upper']:.6g} is not proved below L(theta0) >= {float(enc0.L.lo):.6g}: the "
                       f"flow from theta0 need not go there, but no positive mu holds on a region that holds it")
        elif claim_false:
            message = (f"at a point {pt['distance']:.4g} from theta0, L >= {pt['loss_lower']:.6g} and "
                       f"R <= {pt['rayleigh_upper']:.3g}; for this affine model that proves min L >= "
                       f"{pt['min_loss_lower']:.6g} > floor {floor:g}: the loss never reaches the floor")
        elif critical:
            message = (f"R <= {pt['rayleigh_upper']:.3g} (about 0) at a point {pt['distance']:.4g} from theta0 where "
                       f"L >= {pt['loss_lower']:.6g} is above the floor {floor:g} (verified): a near-critical point, "
                       f"no rate to the floor can be proved on this region")
        else:
            message = (f"R <= {pt['rayleigh_upper']:.4g} at a point {pt['distance']:.4g} from theta0 with "
                       f"L >= {pt['loss_lower']:.6g} (verified), below mu = {pt['needed_mu']:.4g} that confinement "
                       f"needs (rho <= {radius:g}): no certificate of this kind exists on this region (the "
                       f"point is no counterexample to the rate itself)")
        failing = FailingRegion(
            kind=("region-too-large" if outside else
                  "critical-point" if (critical or claim_false) else "confinement"), message=message,
            suggestion=(f"certify a floor above the minimum loss (e.g. floor={_nice_up(pt['loss_upper'])}), "
                        f"or shrink the region") if (critical or claim_false) and not outside else
                       f"a smaller region (below {pt['distance']:.3g} from theta0), or a floor" if outside else
                       "shrink the region, start closer to a solution, or certify a floor",
            points=[FailingPoint(pt["distance"], pt["loss_lower"], pt["rayleigh_upper"], "interval-verified")],
            span=_span(checked.claim.span if critical or claim_false else region_choice.span),
            numbers={k: v for k, v in pt.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    elif not math.isfinite(need):
        failing = FailingRegion(
            kind="confinement", message=f"sound mode: {outcome.message}",
            suggestion="a smaller step, a larger region, or a lower horizon (the steps below the floor count)",
            points=[], span=_span(region_choice.span), numbers={"radius": radius, "step": step})
    else:
        failing = FailingRegion(
            kind="budget", message=f"sound mode: {outcome.message}",
            suggestion=_unresolved_hint(outcome, floor),
            points=[], span=_span(checked.method.span),
            numbers={"boxes_evaluated": outcome.boxes_evaluated, "mu_lower": outcome.mu or 0.0,
                     "needed_mu": need})

    # --- the loss-level profile: a proved mu per loss band, when one mu for the whole region fails -----
    profile = None
    left = budget - (outcome.boxes_evaluated if outcome is not None else 0)   # the spec's budget, not more
    if (verdict == "inconclusive" and failing is not None and failing.kind in ("confinement", "budget")
            and floor > 0 and step is None and not auto and outcome is not None and left >= PROFILE_MIN_BOXES):
        with reporter.phase("sound: loss-level profile", total=None):
            profile = profile_route(problem, model, region, floor, L0_up, phi, c, left, reporter, seed,
                                    executor, ceiling, radius)
        if profile["status"] == "certified":
            profile["outcome"].boxes_evaluated += budget - left      # both searches count against boxes=
            profile["outcome"].bnb_seconds += outcome.bnb_seconds
            reason["phi"] = (f"the loss-level profile: {_phi_spec(phi)} band by band, each band with its own proved "
                             f"mu (one mu for the region does not confine the flow)")
            verdict, failing, outcome = "certified", None, profile["outcome"]
            mu_value, rho = profile["mu_min"], profile["rho"]
            if checked.desingularizer.name == "auto":
                # auto chooses from the proved profile (docs/sound.md, "The loss-level profile"); rho above stays the natural
                # phi's: it confines the flow, and the kept rate is composed from the same proved mu_k
                profile["auto"] = auto_from_profile(problem.loss_def, profile["edges"], profile["band_mu"], c,
                                                    L0_up, floor, horizon)
                profile["rate"] = profile["auto"]["rate"]
                reason["phi"] = profile["auto"]["reason"]
                reason["rate_phi"] = profile["rate"].phi
                notes.append(profile["auto"]["reason"])
            rate, bound = _profile_rate_dict(profile["rate"], horizon, profile)
            if profile.get("auto") is not None:
                rate["profile"]["auto"] = auto_dict(profile["auto"], horizon)
            notes.append(f"one mu for the whole region does not confine the flow; the loss-level profile does: "
                         f"{len(profile['bands'])} loss bands, each with its own proved mu (from "
                         f"{profile['mu_min']:.4g} in the lowest band to {profile['mu_max']:.4g}), rho = "
                         f"{rho:.4g} <= {radius:g} (docs/theory.md 10.11)")
        else:
            extra.append(f"loss-level profile: {profile['message']}")
    elif verdict == "inconclusive" and failing is not None and failing.kind == "confinement" and not floor > 0:
        extra.append("a loss-level profile (a proved mu per loss band) needs a floor > 0: R may vanish with L, "
                     "and no band reaching L = 0 then has a positive bound")

    # --- witness (evidence, as in the sampled mode) ---------------------------------------------------
    t2 = time.perf_counter()
    beta0 = problem.hessian_top_eigenvalue(problem.theta0, seed=seed)
    if step is None:
        w_eta = 0.25 / beta0 if beta0 > 0 else 0.1
        with reporter.phase("witness descent", total=WITNESS_STEPS) as advance:
            witness = run_witness(problem, w_eta, horizon, bound, noise, region, WITNESS_STEPS, advance, floor=floor)
    else:
        # the claim's own iteration: gradient descent with the spec's step, L_k against the bound at k
        w_bound = (lambda t: bound(t / step)) if bound is not None else None
        w_steps = int(min(horizon, WITNESS_STEPS))
        with reporter.phase("witness descent", total=w_steps) as advance:
            witness = run_witness(problem, step, horizon * step, w_bound, noise, region, w_steps, advance,
                                  floor=floor, restart=False)
    timing["witness"] = time.perf_counter() - t2
    if verdict == "certified" and (witness.violation is not None or witness.left_region_at is not None):
        if step is not None:      # the descent IS the claim: nothing finer to compare with
            _violation(witness, outcome, checked.spec.path, step)
        extra.append(_recheck(problem, witness, bound, noise, region, floor, beta0, outcome, checked.spec.path))
    if witness.checked_until < horizon * (step or 1.0) and bound is not None:
        extra.append(f"the witness compared bound and loss up to t = {witness.checked_until:.4g}"
                     + (f" (step {witness.steps})" if step is not None else ""))
    evidence = SoundEvidence(kind, radius, floor, horizon, functions, L0_up, float(enc0.L.lo), outcome,
                             mu_value, rho, needed_mu_lower(float(enc0.L.lo), floor, radius, phi, c_search),
                             M_leaves, step=step, smoothness=smooth["beta"] if smooth else None,
                             kernel_bound=smooth["lam"] if smooth else None,
                             phi=phi if phi != problem.loss_def.natural_phi() else None,
                             profile={"edges": profile["edges"], "mu": profile["band_mu"], "rate": profile["rate"],
                                      **({"auto": {k: profile["auto"][k] for k in ("exponent", "alpha", "kept")}}
                                         if profile.get("auto") is not None else {})}
                             if profile is not None and verdict == "certified" else None)
    return result(verdict, verdict in ("certified", "refuted"), mu=mu_value, outcome=outcome, failing=failing,
                  rate=rate, bound=bound, witness=witness,
                  radius=radius, rho=rho, history=history, L0_up=L0_up,
                  extra_notes=extra, evidence=evidence)


def _recheck(problem, witness, bound, noise, region, floor, beta0, outcome, path) -> str:
    """The witness contradicts a proved rate. Gradient descent with step eta decreases L by a factor
    (1 - beta eta / 2) less per unit time than the flow at worst (docs/theory.md, section 4), so the
    disagreement is checked again with an eighth of the step, against the flow bound at the time
    slowed by 2 beta0 eta (a generous allowance). If that descent contradicts the bound too, the
    proof is wrong: SoundnessViolation. Otherwise a note says what the finer descent showed."""
    eta = witness.step / 8
    t_bad = witness.violation["t"] if witness.violation is not None else witness.left_region_at
    slow = max(0.0, 1.0 - 2.0 * beta0 * eta) if beta0 > 0 else 1.0
    fine = run_witness(problem, eta, 1.25 * t_bad + eta, lambda t: bound(t * slow), noise, region,
                       int(math.ceil((1.25 * t_bad + eta) / eta)), floor=floor, restart=False)
    if fine.violation is None and fine.left_region_at is None:
        return (f"the witness descent (step {witness.step:.3g}) disagreed with the proved rate at t = {t_bad:.4g}; "
                f"descent with step {eta:.3g} agrees with it there (finite-step drift, not the flow)")
    _contradiction(fine, outcome, path, "gradient descent from theta0", None, f"; step {eta:.3g}")


PROFILE_FACTORS = (0.5, 0.8)   # band targets: this fraction of the descent's smallest R in the band
PROFILE_MIN_BOXES = 20         # the profile's search runs when at least this much of the box budget is left
PROFILE_FIRST_SHARE = 4        # with a power phi chosen in the spec, the one-mu search gets 1/4 of the boxes


def band_edges(floor: float, L0_up: float) -> list[float]:
    """[floor, 10^(j/2) ..., L0_up]: the half-decades strictly between the floor and L0_up (floor > 0)."""
    lo, hi = math.floor(2 * math.log10(floor)) + 1, math.ceil(2 * math.log10(L0_up)) - 1
    inner = [10.0 ** (j / 2) for j in range(lo, hi + 1)]
    return [floor] + [e for e in inner if floor < e < L0_up] + [L0_up]


def meets(lo: float, hi: float, a: float, b: float) -> bool:
    """Whether a loss enclosure [lo, hi] meets the closed band [a, b]."""
    return lo <= b and hi >= a


def path_upper(phi: Desingularizer, low: float, high: float) -> float:
    """An upper bound on int_low^high sqrt(phi'(u)) du."""
    if phi == LOG:
        return float(up(2.0 * float(up(sqrt_up(high) - sqrt_down(low)))))
    return path_bounds(phi, low, high)[1]


def profile_rho(edges: list[float], Ks: list[float], phi: Desingularizer) -> float:
    """sum over the bands of int_a^b sqrt(phi'(u) / K_band) du, rounded up (a band with K = inf: none of
    the region's points has its losses, the flow spends no path there)."""
    total = 0.0
    for a, b, K in zip(edges[:-1], edges[1:], Ks):
        if K == math.inf:
            continue
        if not K > 0:
            return math.inf
        total = float(up(total + float(up(path_upper(phi, a, b) / sqrt_down(K)))))
    return total


def descent_estimates(problem, edges: list[float], steps: int = 4000) -> list[float | None]:
    """The smallest float R, per band, along gradient descent from theta0 with a step re-tuned to the
    local curvature every 50 steps (an estimate: it only sets the search's targets)."""
    theta = problem.theta0.clone()
    est: list[float | None] = [None] * (len(edges) - 1)
    eta = None
    for k in range(steps):
        if k % 50 == 0:
            try:
                beta = problem.hessian_top_eigenvalue(theta)
            except Exception:   # noqa: BLE001 - a heuristic only
                beta = 0.0
            eta = 0.5 / beta if beta > 0 else (eta or 0.1)
        p = problem.point(theta)
        if not (math.isfinite(p.loss) and math.isfinite(p.rayleigh)) or p.loss < edges[0]:
            break
        for j, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            if a <= p.loss <= b and (est[j] is None or p.rayleigh < est[j]):
                est[j] = p.rayleigh
        theta = theta - eta * p.grad
    known = [(j, e) for j, e in enumerate(est) if e is not None]
    if not known:
        return est
    for j in range(len(est)):          # unvisited bands: the nearest visited one below, scaled by the edge
        if est[j] is None:
            lower = [(i, e) for i, e in known if i < j]
            i, e = (lower[-1] if lower else known[0])
            est[j] = e * min(1.0, edges[j] / edges[i]) if i < j else e * edges[j] / edges[i]
    return est


def profile_route(problem, model, region, floor, L0_up, phi, c, budget, reporter, seed, executor, ceiling,
                  radius) -> dict:
    """The loss-level profile (docs/theory.md 10.11): targets per band from the descent's R, a branch and
    bound in which every box must reach the largest target of the bands its loss enclosure meets, then
    the proved mu of each band (the smallest bound of the proven leaves that meet it), rho summed over
    the bands, and the ProfileRate."""
    edges = band_edges(floor, L0_up)
    est = descent_estimates(problem, edges)
    if any(e is None or not e > 0 for e in est):
        return {"status": "inconclusive", "message": "the descent from theta0 gave no positive R on every band",
                "edges": edges}
    def passes(f: float) -> bool:
        return profile_rho(edges, [float(down(c * float(down(f * e)))) for e in est], phi) <= radius

    first = next((f for f in PROFILE_FACTORS if passes(f)), None)
    if first is None:
        return {"status": "inconclusive", "edges": edges,
                "message": (f"even {PROFILE_FACTORS[-1]:g} of the smallest R seen on each band along the descent "
                            f"gives rho > {radius:g}: no profile certificate on this region")}
    # the descent sees R along one path only; the region's weakest points in a band may lie below
    # first * R there. A second search asks only what confinement needs: the smallest factor that
    # passes (bisection), raised 5 % (every proven leaf >= its bands' targets, so rho <= radius)
    lo, hi = 0.0, first
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if passes(mid) else (mid, hi)
    lowest = min(first, 1.05 * hi)
    factors = [first] + ([lowest] if lowest < 0.9 * first else [])
    bands = list(zip(edges[:-1], edges[1:]))
    spent, seconds = 0, 0.0
    for i, f in enumerate(factors):
        targets = [float(down(f * e)) for e in est]

        def band_target(lo: float, hi: float, targets=targets) -> float:
            need = [t for (a, b), t in zip(bands, targets) if meets(lo, hi, a, b)]
            return max(need) if need else 0.0

        share = budget - spent if i == len(factors) - 1 else (budget - spent) // 2
        outcome = bound_mu(problem, region, floor, None, share, reporter, seed=seed, tighten=False,
                           executor=executor, ceiling=ceiling, band_target=band_target)
        spent, seconds = spent + outcome.boxes_evaluated, seconds + outcome.bnb_seconds
        if outcome.status == "proven":
            break
    outcome.boxes_evaluated, outcome.bnb_seconds = spent, seconds     # both searches count (boxes per second)
    if outcome.status != "proven":
        lows = [box["loss"][0] for box in outcome.failing_boxes if box.get("loss")]
        where = f"; the weakest open boxes reach down to L = {min(lows):.3g}" if lows else ""
        return {"status": "inconclusive", "edges": edges, "outcome": outcome,
                "message": f"the profile's branch and bound did not finish ({outcome.message}){where}"}
    band_mu, points = profile_mu(outcome.tree["leaves"], edges)
    Ks = [math.inf if m == math.inf else float(down(c * m)) for m in band_mu]
    rho = profile_rho(edges, Ks, phi)
    finite = [m for m in band_mu if m != math.inf]
    out = {"edges": edges, "band_mu": band_mu, "points": points, "outcome": outcome, "rho": rho,
           "bands": bands, "mu_min": min(finite), "mu_max": max(finite), "targets": targets}
    if not rho <= radius:
        return {**out, "status": "inconclusive",
                "message": f"the proved profile gives rho = {rho:.4g} > {radius:g}"}
    out["rate"] = profile_rate(edges, band_mu, c, phi, L0_up, floor)
    return {**out, "status": "certified", "message": "certified"}


def profile_mu(leaves, edges: list[float]) -> tuple[list[float], list[int]]:
    """Per band: the smallest bound of the proven leaves whose loss enclosure meets it (inf: none), and
    their number. Dropped leaves lie below the floor (or outside the region) and meet no band."""
    band_mu, points = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        values = [node.bound.value for _, node in leaves
                  if node.status == "proven" and node.loss is not None and meets(node.loss[0], node.loss[1], a, b)]
        band_mu.append(min(values) if values else math.inf)
        points.append(len(values))
    return band_mu, points


def profile_rate(edges, band_mu, c, phi, L0_up, floor) -> ProfileRate:
    """The ProfileRate of the proved mu per band, K_k = c mu_k rounded down; c one float, or one per band
    (a power phi chosen by `auto`: the minimum of phi'(L) G(L) over each band)."""
    cs = list(c) if isinstance(c, (list, tuple)) else [c] * len(band_mu)
    bands = tuple((a, b, float(down(ck * m)) if m != math.inf else math.inf)
                  for a, b, m, ck in zip(edges[:-1], edges[1:], band_mu, cs))
    # a band no point of the region reaches: the flow spends no time in it while confined (K = inf)
    bands = tuple((a, b, K if K != math.inf else float(np.finfo(float).max)) for a, b, K in bands)
    return ProfileRate(phi, bands, L0_up, floor)


def auto_from_profile(loss, edges: list[float], band_mu: list[float], c: float, L0_up: float, floor: float,
                      horizon: float) -> dict:
    """`desingularizer auto` on a proved loss-level profile (docs/sound.md, "The loss-level profile"), from proved numbers only:
    the exponent beta of the proved lower envelope mu_k ~ L^beta over the bands (composition.auto_power, as
    the sampled mode does from its estimate) picks power(alpha), 2 alpha = 1 + beta, when R vanishes as
    L -> 0 on the bands; the natural phi otherwise. The power's rate is composed from the same mu_k with
    K_k = c_k mu_k, c_k = min over [a_k, b_k] of phi'(L) G(L) in arb (power_constant, rounded down). The
    flow is confined by the natural phi's rho (a fact about the flow, whatever phi composes the rate), so
    both rates are theorems; the one with the smaller bound at the horizon is kept (ties: the natural one).
    Replayed as it is computed here (certificate/sound.py). Returns {exponent, alpha (None: natural), kept
    ('power' | 'natural'), rate (the kept ProfileRate), candidate (the power's, or None), reason}."""
    loss = LOSSES[loss] if isinstance(loss, str) else loss
    natural_phi = loss.natural_phi()
    natural_rate = profile_rate(edges, band_mu, c, natural_phi, L0_up, floor)
    proved = [{"low": a, "high": b, "mu": m} for a, b, m in zip(edges[:-1], edges[1:], band_mu)
              if m != math.inf and m > 0]
    beta, alpha = auto_power(loss.name, proved)
    out = {"exponent": beta, "alpha": None, "kept": "natural", "rate": natural_rate, "candidate": None}
    nat = _phi_spec(natural_phi)
    slope = "no exponent (fewer than 3 proved bands)" if beta is None else f"slope {beta:.3g}"
    if alpha is None or not phi_supported(loss, make("power", alpha=alpha)):
        spans = bool(proved) and proved[0]["low"] <= DECADES * proved[-1]["high"]
        why = (f"loss {loss.name} (a power phi follows R ~ L^beta for least squares only)"
               if loss.name != "least_squares" else
               f"the proved bands span {math.log10(proved[-1]['high'] / proved[0]['low']):.2g} decades, "
               f"fewer than the {-math.log10(DECADES):g} that show R vanishing as L -> 0" if proved and not spans else
               "R does not vanish with L on the proved bands")
        out["reason"] = (f"auto from the proved loss-level profile: log mu_k against log L has {slope}; {why}: "
                         f"the natural {nat}, band by band")
        return out
    phi = make("power", alpha=alpha)
    cs = [power_constant(loss, phi, a, b) for a, b in zip(edges[:-1], edges[1:])]
    candidate = profile_rate(edges, band_mu, cs, phi, L0_up, floor)
    out.update(alpha=alpha, candidate=candidate)
    at_nat, at_pow = natural_rate.bound(horizon), candidate.bound(horizon)
    keep = at_pow < at_nat
    if keep:
        out.update(kept="power", rate=candidate)
    spec = f"power(alpha={_fraction(alpha)})"
    out["reason"] = (f"auto from the proved loss-level profile: the proved mu_k fall like L^{beta:.3g} over the "
                     f"lowest bands (R vanishes as L -> 0): {spec}, phi'(u) = u^-{_fraction(2 * alpha)}, "
                     f"K_k = c_k mu_k with c_k = min of phi'(L) G(L) over each band; at t = {horizon:g} its "
                     f"bound is {at_pow:.4g}, the natural {nat}'s {at_nat:.4g}: "
                     + (f"{spec} kept" if keep else
                        f"the natural {nat} kept (with one proved mu per band the natural phi is never worse "
                        f"band by band; {spec} gives the kind of the rate)"))
    return out


def _fraction(x: float) -> str:
    """alpha as a fraction with denominator 24 where it is one (auto's alphas), else %g."""
    n = round(x * 24)
    if abs(n - 24 * x) < 1e-9:
        from fractions import Fraction
        return str(Fraction(n, 24))
    return f"{x:g}"


def auto_dict(choice: dict, horizon: float) -> dict:
    """rate.profile.auto of the report: what `auto` chose from the proved profile and which rate was kept."""
    cand = choice["candidate"]
    return {"exponent": choice["exponent"], "chosen": _phi_spec(cand.phi) if cand is not None else None,
            "alpha": choice["alpha"], "kept": choice["kept"], "reason": choice["reason"],
            "candidate_curve": cand.curve(horizon) if cand is not None else None,
            "candidate_times_to_fraction": cand.times_to_fraction() if cand is not None else None}


def _profile_rate_dict(rate: ProfileRate, horizon: float, profile: dict):
    bands = [{"low": a, "high": b, "points": n, "mu": m if m != math.inf else None,
              "kl_constant": K if m != math.inf else None, "start": start}
             for (a, b, K, start, _), m, n in zip(rate.schedule()[::-1], profile["band_mu"], profile["points"])]
    return {"formula": rate.formula(), "asymptotic": rate.asymptotic(), "kl_constant": rate.K,
            "curve": rate.curve(horizon), "times_to_fraction": rate.times_to_fraction(),
            "horizon": horizon, "time": "gradient-flow time t", "unit": "gradient-flow time t",
            "profile": {"exponent": profile_exponent(profile), "bands": bands, "proved": True,
                        "times_to_fraction": rate.times_to_fraction()},
            "convention": "R = ||grad L||^2 / ||g||_D^2 with the L2(D) inner product (mean over the data)"}, rate.bound


def profile_exponent(profile: dict) -> float | None:
    """The least-squares slope of log mu_band against log(lower edge) over the proved bands (information:
    mu ~ C L^gamma; the rate itself is band by band)."""
    pts = [(math.log(a), math.log(m)) for a, m in zip(profile["edges"][:-1], profile["band_mu"])
           if m != math.inf and m > 0]
    if len(pts) < 3:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def _violation(witness, outcome, path, step) -> None:
    _contradiction(witness, outcome, path, f"gradient descent with the spec's step {step!r}", step, "")


def _contradiction(descent, outcome, path, who: str, step: float | None, extra: str) -> None:
    """A real descent above a proved bound, or out of the proved region: a proof is wrong (exit 4).
    Times are shown as steps of `step` (gradient descent's claim) or as t (the flow's)."""
    rules = ", ".join(sorted((outcome.rules_used or {}).keys())) if outcome else "none"

    def shown(t: float) -> str:
        return f"step {t / step:.0f}" if step is not None else f"t = {t:.4g}"

    what = (f"L = {descent.violation['loss']:.6g} above the proved bound {descent.violation['bound']:.6g} at "
            f"{shown(descent.violation['t'])}" if descent.violation is not None else
            f"it leaves the proved region at {shown(descent.left_region_at)}")
    raise SoundnessViolation(
        f"{path}: {who} contradicts a sound certificate ({what}{extra}), so a "
        f"proof is wrong (rules used: {rules}); this is a bug in certify: please report it with the spec")


def step_facts(model: IntervalModel, region, L0_up: float) -> dict | str:
    """For gradient descent over the region: beta >= sup ||Hess L||, lam >= sup lambda_max(K) (both raised
    by 1e-9 relative, so that a replay on another BLAS build finds its own bounds below them), and
    G >= ||grad L|| at every point of the region with L <= L0 (gradient_bound). A string: why there is none."""
    from ..analyse.sound.smoothness import smoothness_bound

    reg = SoundRegion(region)
    sm = smoothness_bound(model, reg.lo, reg.hi)
    if isinstance(sm, str):
        return sm
    beta = float(up(up(sm.beta) * (1 + 1e-9)))
    lam = float(up(up(sm.lam) * (1 + 1e-9)))
    return {"beta": beta, "lam": lam, "grad_bound": gradient_bound(L0_up, lam, model.loss.name, model.n),
            "numbers": sm.numbers}


def gradient_bound(L0_up: float, lam: float, loss: str = "least_squares", n: int = 1) -> float:
    """G = sqrt(lam q) with q >= ||g||_D^2 wherever L <= L0: ||grad L||^2 = ||J^T g||^2 / n^2 <=
    lambda_max(K) ||g||_D^2, and ||g||_D^2 <= gsq_per_loss L0 (least squares 4 L, logistic L,
    cross-entropy 2 L), or n L0^2 for the exponential loss (every l_i <= n L)."""
    per = INTERVAL_LOSSES[loss].gsq_per_loss
    q = float(up(up(n * L0_up) * L0_up)) if per == math.inf else float(up(per * L0_up))
    return sqrt_up(float(up(q * lam)))


def _rho(L0_up, floor, mu, phi, c, smooth, step, horizon) -> float:
    if smooth is None:
        return rho_upper(L0_up, floor, mu, phi, c)
    return rho_step_upper(L0_up, floor, mu, phi, c, step, smooth["beta"], smooth["grad_bound"], horizon)


def _decisive(point: dict, r0: float, L0_lower: float) -> bool:
    """A refutation that holds for every larger region: a proof that min L exceeds the floor, or a
    near-critical point above the floor in the sublevel set {L <= L(theta0)} (L0_lower <= L(theta0))."""
    return bool(point.get("claim_false")) or (point["rayleigh_upper"] <= ZERO_MU * r0
                                              and point["loss_upper"] <= L0_lower)


def _auto_start(model: IntervalModel, floor: float, L0_up: float, phi: Desingularizer = LOG,
                c: float = 4.0) -> float:
    """A starting radius (heuristic): no radius below rho(R(theta0)) can pass, since mu(r) <= R(theta0)."""
    enc = model.at_point(model.theta0, True)
    gsq = float(np.sum(np.maximum(np.abs(enc.grad.lo), np.abs(enc.grad.hi)) ** 2))
    r_up = gsq / max(float(enc.gsq.lo), 1e-300) * (1 + 1e-9)
    return max(1.01 * rho_upper(L0_up, floor, r_up, phi, c), 1e-8 * (1 + float(np.linalg.norm(model.theta0))))


def _chosen(choice) -> Desingularizer | None:
    try:
        return make(choice.name, **dict(choice.options or {}))
    except (KeyError, TypeError, ValueError):
        return None


def _diverges(phi: Desingularizer) -> bool:
    """int_0 sqrt(phi'(u)) du = inf: power(alpha=1) and lambert (docs/theory.md 3e)."""
    return phi.name == "lambert" or (phi.name == "power" and phi.params.get("alpha") == 1.0)


def _phi_spec(phi: Desingularizer) -> str:
    if phi.name == "power":
        return f"power(alpha={phi.params['alpha']:g})"
    return phi.name


def sound_rate(loss, L0_up: float, mu: float, floor: float, c: float | None = None,
               step: float | None = None, smoothness: float | None = None, phi: Desingularizer | None = None):
    """The proved Rate for a loss of the table (or its name): its natural phi (or phi), and c (default: the
    loss's constant; logistic: sound_constant's); with a step, gradient descent with that smoothness
    (certificates rebuild it with this)."""
    c0, natural_phi = natural(loss)
    return proved_rate(L0_up, mu, floor, c0 if c is None else c, phi or natural_phi, step, smoothness)


def _rate(L0_up: float, mu: float, floor: float, horizon: float, c: float, phi: Desingularizer = LOG,
          step: float | None = None, smoothness: float | None = None):
    rate = proved_rate(L0_up, mu, floor, c, phi, step, smoothness)
    return {"formula": rate.formula(), "asymptotic": rate.asymptotic(), "kl_constant": rate.K,
            "curve": rate.curve(horizon), "times_to_fraction": rate.times_to_fraction(),
            "horizon": horizon, "time": "gradient-flow time t" if step is None else "gradient-descent steps k",
            "unit": "gradient-flow time t" if step is None else "steps k", "step": step, "smoothness": smoothness,
            "smoothness_note": None if step is None else "a proved bound on ||Hess L|| over the region",
            "convention": "R = ||grad L||^2 / ||g||_D^2 with the L2(D) inner product (mean over the data)"}, rate.bound


def _weakest_rule(outcome: SoundOutcome) -> str | None:
    leaves = []

    def walk(node):
        if "children" in node:
            for c in node["children"]:
                walk(c)
        elif node.get("status") not in ("dropped",) and "bound" in node:
            leaves.append(node)
    if outcome.proof and "root" in outcome.proof:
        walk(outcome.proof["root"])
    if not leaves:
        return None
    return min(leaves, key=lambda n: n["bound"]).get("rule")


def _rule_minima(outcome: SoundOutcome) -> dict[str, float]:
    """Each rule's smallest bound over the proof's leaves it bounded (dropped leaves left out): the
    `minimum` of its mu_sources row; mu is the smallest of them."""
    minima: dict[str, float] = {}

    def walk(node):
        if node.get("children"):
            for c in node["children"]:
                walk(c)
        elif node.get("status") != "dropped" and node.get("bound") is not None and node.get("rule"):
            minima[node["rule"]] = min(minima.get(node["rule"], math.inf), float(node["bound"]))
    if outcome.proof and "root" in outcome.proof:
        walk(outcome.proof["root"])
    return minima


def _proof(outcome: SoundOutcome | None):
    if outcome is None:
        return None
    out = {"status": outcome.status, "mu": outcome.mu, "boxes_evaluated": outcome.boxes_evaluated,
           "seconds": outcome.seconds, "rules_used": outcome.rules_used, "facts": outcome.facts,
           "min_rayleigh_seen": outcome.min_rayleigh_seen, "message": outcome.message}
    if outcome.failing_points:
        out["failing_points"] = outcome.failing_points
    if outcome.failing_boxes:
        out["failing_boxes"] = outcome.failing_boxes
    if outcome.proof:
        out["tree"] = outcome.proof
    return out


def _unresolved_hint(outcome: SoundOutcome, floor: float) -> str:
    sub = outcome.facts.get("subspace")
    if sub and floor <= sub.get("min_loss_upper", 0.0):
        return (f"the stored data need not be exactly realizable: min L <= {sub['min_loss_upper']:.3g} may be "
                f"positive; certify a floor above it (e.g. floor={_nice_up(sub['min_loss_upper'] * 1e6)})")
    return "raise boxes=, shrink the region, or certify a floor"


