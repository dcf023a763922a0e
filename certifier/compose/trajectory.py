"""`method interval(route=trajectory)`: the sound run by a validated tube around the numerical flow
from theta0, then the ball rule around the tube's end (analyse/sound/tube.py; docs/theory.md 10.12).

certify_trajectory returns (verdict, sound, keyword arguments of compose/sound.py's result(), a
violation message or None: the caller raises SoundnessViolation with it).
`certified` (sound) when the terminal ball closes: L(t) <= the tube's bound for t <= T and
L_T exp(-4 mu (t - T)) after, a theorem for every gradient-flow solution from theta0 (least squares).
Otherwise `inconclusive`, with the loss bound proved up to the tube's end in the failing numbers."""
from __future__ import annotations

import time

from ..analyse.levels import NOISE, WITNESS_STEPS
from ..analyse.sound import tube as tube_mod
from ..analyse.sound.ball import BallModel
from ..analyse.sound.evidence import SoundEvidence
from ..analyse.witness import run_witness
from ..diagnostics import Diagnostic, SpecError
from ..progress import BudgetExceeded
from ..result import FailingRegion


class TubeEvidence(SoundEvidence):
    """SoundEvidence with the tube (for certificates)."""

    tube = None


def _span(span):
    if span is None:
        return None
    return {"line": span.line, "column": span.column, "end_line": span.end_line, "end_column": span.end_column}


def certify_trajectory(problem, model, checked, floor, horizon, L0_up, enc0, functions, reporter, seed):
    if not model.least_squares:
        raise SpecError([Diagnostic("E106", f"the loss '{problem.loss_def.name}' with route=trajectory: not supported "
                                    "in the sound mode (method interval)", checked.loss.span,
                                    "use loss least_squares with route=trajectory", checked.spec.path)])
    bm = BallModel(model)
    if bm.too_large:
        raise SpecError([Diagnostic("E205", f"{bm.unsupported}: the trajectory route bounds the model with the ball "
                                    "rule's tables, which would form it", checked.method.span,
                                    "use method sampled(...) for this model, or a narrower network (two-layer "
                                    "networks take a structured table of any width: docs/theory.md 10.7)",
                                    checked.spec.path)])
    if bm.unsupported is not None:
        raise SpecError([Diagnostic("E107", f"{bm.unsupported} with route=trajectory: not supported in the sound "
                                    "mode (method interval)", checked.method.span,
                                    "use a model with a Lipschitz Jacobian (tanh, sigmoid, ...)", checked.spec.path)])
    t0 = time.perf_counter()
    local_tol = float(checked.method.options.get("tolerance") or tube_mod.LOCAL_TOL)
    given = checked.method.options.get("segments")
    budget = tube_mod.segment_budget(local_tol, int(given) if given is not None else None)
    # the tube so far, copied when a segment is proved (the tube's own fields change inside the next
    # segment, where the deadline's alarm may fall): what a --budget stop reports
    proved: list = []

    def segment_done(tube) -> None:
        proved[:] = [len(tube.segments), tube.end_time, tube.end_loss, tube.end_e]
        advance()              # may raise BudgetExceeded (the deadline) between segments

    try:
        with reporter.phase("trajectory tube (segments)", total=budget) as advance:
            tube = tube_mod.route(model, floor=floor, local_tol=local_tol, segments=budget, progress=segment_done)
    except BudgetExceeded as exc:
        if proved and exc.detail is None:
            n, T, L, e = proved
            # L falls along the flow, so the bound at the tube's end holds from there on
            exc.detail = (f"the tube had proved L(t) <= {L:.6g} for every t >= {T:.6g} ({n} of at most "
                          f"{budget} segments, tube radius {e:.3g}); no rate is claimed")
        exc.suggestion = "raise --budget (a tube of many segments takes long: docs/sound.md), or shrink the problem"
        raise
    seconds = time.perf_counter() - t0
    term = tube.terminal
    reached_floor = tube.end_loss <= floor
    certified = term is not None or reached_floor
    bound = tube_mod.bound_function(tube) if certified else None
    T = tube.end_time
    segs = tube.segments
    numbers = {"segments": len(segs), "tube_end_time": T, "tube_radius_end": tube.end_e,
               "loss_upper_at_end": tube.end_loss, "tube_radius_max": max([s.e_out for s in segs] or [0.0])}
    notes = [f"trajectory route: {len(segs)} segments of the tangent-model flow from theta0 up to T = {T:.6g}, "
             f"the true flow proved within {tube.end_e:.3g} of them (row space of J within {tube.end_row:.3g}; "
             f"Gronwall with ell >= -lambda_min(Hess L) and the row-space contraction); "
             f"L(t) <= {tube.end_loss:.6g} at T (docs/theory.md 10.12); {seconds:.1f} s"]
    rate, failing, mu, radius, rho = None, None, None, None, None
    if certified:
        if term is not None:
            mu, radius = term.mu, term.radius
            rho = tube_mod.terminal_needed(term.e, term.loss_upper, term.mu)
            formula = (f"L(t) <= the tube's bound for t <= {T!r} (a step function, {len(segs)} segments); "
                       f"L(t) <= {tube.end_loss!r} * exp(-4 * {term.mu!r} * (t - {T!r})) for t >= {T!r}")
            notes.append(f"terminal ball: the ball rule proves R >= mu = {term.mu:.6g} on the ball of radius "
                         f"{term.radius:.6g} around the tube's end, which holds the tube's cross-section "
                         f"(radius {term.e:.3g}) and the path sqrt(L_T / mu) from every point of it (rho = {rho:.6g})")
        else:
            formula = f"L(t) <= the tube's bound for t <= {T!r}; L(t) <= {tube.end_loss!r} <= floor after"
        rate = {"formula": formula, "asymptotic": f"exp(-4 * {mu!r} * t) from t = {T!r} on" if mu else None,
                "kl_constant": float(4 * mu) if mu else None,
                "curve": tube_mod.curve_points(tube_mod.numbers_of(tube), horizon), "times_to_fraction": {},
                "horizon": horizon, "time": "gradient-flow time t",
                "convention": "R = ||grad L||^2 / ||g||_D^2 with the L2(D) inner product (mean over the data)",
                "tube": {"segments": len(segs), "end_time": T, "radius_end": tube.end_e,
                         "loss_upper_end": tube.end_loss,
                         "checkpoints": [{"t": s.t, "loss_upper": s.loss_upper, "tube_radius": s.e_in}
                                         for s in segs[:: max(1, len(segs) // 20)]]}}
    else:
        failing = FailingRegion(
            kind="budget", message=(f"the tube proves L(t) <= {tube.end_loss:.6g} at t = {T:.6g} (radius "
                                    f"{tube.end_e:.3g}), but the ball rule around its end does not close: "
                                    f"{tube.message}"),
            suggestion=(f"more tube segments (method interval(..., segments=N) above the {len(segs)} of this "
                        "run, which it used up), " if tube.budget_spent else "")
            + "a wider network, fewer or better separated points, or a floor",
            points=[], span=_span(checked.method.span), numbers=numbers)
    beta0 = problem.hessian_top_eigenvalue(problem.theta0, seed=seed)
    w_eta = 0.25 / beta0 if beta0 > 0 else 0.1
    with reporter.phase("witness descent", total=WITNESS_STEPS) as advance:
        witness = run_witness(problem, w_eta, horizon, bound, NOISE * float(enc0.L.hi), None, WITNESS_STEPS,
                              advance, floor=floor)
    violation = None
    if certified and witness.violation is not None:
        # the descent lemma: descent with step eta is the flow up to O(eta); a finer descent must agree
        fine = run_witness(problem, w_eta / 8, 1.25 * witness.violation["t"], bound, NOISE * float(enc0.L.hi),
                           None, int(10 * WITNESS_STEPS), floor=floor)
        if fine.violation is not None:     # compose/sound.py raises SoundnessViolation (exit 4)
            violation = (f"{checked.spec.path}: gradient descent from theta0 (step {w_eta / 8:.3g}) contradicts the "
                         f"trajectory certificate at t = {fine.violation['t']:.4g}: a proof is wrong (a bug in "
                         "certify: please report it with the spec)")
    ev = TubeEvidence("trajectory", radius, floor, horizon, functions, L0_up, float(enc0.L.lo), None, mu, rho)
    ev.tube = tube
    return ("certified" if certified else "inconclusive", bool(certified),
            # no region: the terminal ball is centred at the tube's end, not at theta0 (in the notes and the
            # certificate), and the witness is not confined to a ball around theta0
            {"mu": mu, "rate": rate, "bound": bound, "witness": witness, "failing": failing, "radius": None,
             "rho": None, "extra_notes": notes, "evidence": ev}, violation)
