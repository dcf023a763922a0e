"""Verdict rules of the sampled mode, in one place (docs/theory.md, section 8).

Before the witness: the region must give a positive KL constant (else a near-critical point
refutes, or a vanishing kernel bound leaves it inconclusive), the step must satisfy
eta <= 1/beta, and the path-length bound must fit in the region. After: the witness descent
must stay below the bound and inside the region."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..analyse.records import Records
from ..result import FailingPoint, FailingRegion, Witness


@dataclass
class Findings:
    L0: float
    R0: float
    lowest_sampled: float   # the smallest loss at any point the search evaluated
    sampled_target: float   # the search must reach this loss for the claim to be supported
    K: float
    K0: float
    mu: float
    rho: float
    radius: float
    found: bool
    auto: bool
    floor: float
    floor_eff: float
    history: list
    records: Records
    zero: float
    step: float | None
    smoothness: float | None
    claim_span: object
    region_span: object
    method_span: object
    vanishing: float | None = None   # floor 0: the bands' KL constants fall like L^vanishing toward 0
    floor_claim: float | None = None  # the level a rate is claimed down to: the floor, or the lowest
                                      # loss sampled in the region if that is higher


def span_dict(span):
    if span is None:
        return None
    return {"line": span.line, "column": span.column, "end_line": span.end_line, "end_column": span.end_column}


def failing_points(records: Records, radius: float, floor: float, count: int,
                   on_path: bool = False) -> list[FailingPoint]:
    return [FailingPoint(records.distance[i], records.loss[i], records.value[i],
                         "descent from theta0" if i < records.path and records.source[i] == "trajectory"
                         else records.source[i])
            for i in records.lowest(radius, floor, count, on_path)]


def nice_down(value: float) -> str:
    """A round number a little below value, for suggestions."""
    if value <= 0:
        return "0"
    exp = math.floor(math.log10(value))
    mant = math.floor(value * 0.9 / 10**exp * 10) / 10
    return f"{mant * 10**exp:.3g}" if mant > 0 else f"{value * 0.5:.3g}"


def nice_up(value: float) -> str:
    """A round number a little above value, for suggestions."""
    if value <= 0:
        return "0.01"
    exp = math.floor(math.log10(value))
    mant = math.ceil(value * 1.1 / 10**exp * 10) / 10
    return f"{mant * 10**exp:.3g}"


def judge(f: Findings, witness: Witness | None = None, verdict: str = "certified",
          failing: FailingRegion | None = None) -> tuple[str, FailingRegion | None, list[str]]:
    if witness is None:
        return _before(f)
    return _after(f, witness, verdict, failing)


def _before(f: Findings):
    notes = [f"sampled estimate: mu is the smallest R found at {f.records.count()} points; it is not a proof"]
    kernel, k_arg = f.records.minimum(f.radius, f.floor_eff, "tangent-kernel")
    if k_arg is not None and kernel < 0.99 * f.mu:
        # a lower bound on R in every direction; R along the residual is what the flow sees
        notes.append(f"the tangent kernel's lambda_min, a lower bound on R in every direction, is {kernel:.3g} "
                     f"(at L = {f.records.loss[k_arg]:.3g}), below mu = {f.mu:.3g}: the slow directions of the "
                     f"kernel exist but the sampled residuals did not stay in them; it is reported, not used "
                     f"for mu (the asymptotic rate if the residual ends there)")
    region_span = span_dict(f.region_span)
    claim_span = span_dict(f.claim_span)
    if f.L0 <= f.floor:
        notes.append("the initial loss is already at or below the floor")
        return "certified", None, notes
    min_loss = f.records.lowest_loss(math.inf)
    on_path = failing_points(f.records, math.inf, f.floor_eff, 5, on_path=True)   # the flow's own path
    path_min = on_path[0].rayleigh if on_path else math.inf
    if not (path_min > f.zero * f.R0):
        # a counterexample the flow meets, whatever the desingularizer: the descent from theta0 itself
        # reached a near-critical point above the floor (a power desingularizer can still give K > 0
        # there, since phi' grows without bound as L -> 0)
        pt = on_path
        return "refuted", FailingRegion(
            kind="critical-point",
            message=(f"R = {pt[0].rayleigh:.3g} (about 0) at a point {pt[0].distance:.3g} from theta0 that the "
                     f"descent from theta0 reached, where L = {pt[0].loss:.4g} is above the floor {f.floor:g}: "
                     f"gradient flow can stall there, so no rate to the floor holds"),
            suggestion=(f"the loss may not reach {f.floor:g}: certify a floor above the smallest loss seen "
                        f"(e.g. certify rate(floor={nice_up(min_loss)})), or widen the model"),
            points=pt, span=claim_span or region_span,
            numbers={"mu": path_min, "smallest_loss_seen": min_loss}), notes
    if not (f.K > f.zero * f.K0):
        if not (f.mu > f.zero * f.R0):
            # a near-critical point of the sublevel set that the descent from theta0 did not reach:
            # a reason the region is too large for one constant, not a counterexample to the rate
            pt = failing_points(f.records, f.radius, f.floor_eff, 5)
            return "inconclusive", FailingRegion(
                kind="region-too-large",
                message=(f"R = {pt[0].rayleigh:.3g} (about 0) at a point {pt[0].distance:.3g} from theta0 found by "
                         f"the {pt[0].source} search, with L = {pt[0].loss:.4g} <= L(theta0) above the floor "
                         f"{f.floor:g}; the descent from theta0 did not go there (its smallest R was "
                         f"{path_min:.3g}), so the point refutes no rate from theta0, but it leaves no positive "
                         f"mu on a region that holds it"),
                suggestion=(f"a smaller region: radius below {nice_down(pt[0].distance)} "
                            f"(e.g. region ball(center=init, radius={nice_down(pt[0].distance)})), or a floor"),
                points=pt, span=region_span or claim_span,
                numbers={"mu": f.mu, "smallest_R_on_descent": path_min, "distance": pt[0].distance,
                         "smallest_loss_seen": min_loss}), notes
        pt = failing_points(f.records, f.radius, f.floor_eff, 3)
        if f.vanishing is not None:
            return "inconclusive", FailingRegion(
                kind="no-kl-constant",
                message=(f"the KL constant vanishes as L -> 0: on the lowest loss bands min R phi'(L) G(L) "
                         f"falls like L^{f.vanishing:.3g} (down to {f.lowest_sampled:.3g}), so no K > 0 holds "
                         f"down to the floor 0 (R = {pt[0].rayleigh:.3g} at L = {pt[0].loss:.3g}, "
                         f"{pt[0].distance:.3g} from theta0): the desingularizer does not fit the loss"),
                suggestion=("use desingularizer auto (a power desingularizer when R falls like a power of L), "
                            f"or certify a floor (e.g. certify rate(floor={nice_up(f.lowest_sampled)}))"),
                points=pt, span=claim_span or region_span,
                numbers={"mu": f.mu, "kl_constant": f.K, "exponent": f.vanishing}), notes
        return "inconclusive", FailingRegion(
            kind="no-kl-constant",
            message=(f"mu = {f.mu:.3g} is positive but the KL constant K = {f.K:.3g} of the loss and "
                     f"desingularizer vanishes on the region (for cross-entropy-type losses: per-sample "
                     f"losses grow too large, or the desingularizer does not fit the loss)"),
            suggestion="shrink the region, certify a floor, or use desingularizer auto",
            points=pt, span=region_span, numbers={"mu": f.mu, "kl_constant": f.K}), notes
    if f.lowest_sampled > f.sampled_target:
        return _unsampled(f, claim_span, notes)
    if f.step is not None and f.smoothness is not None and f.step > 1 / f.smoothness:
        # a refusal, not a disproof: descent may still converge for 1/beta < eta < 2/beta
        return "inconclusive", FailingRegion(
            kind="step-size",
            message=(f"the step eta = {f.step:g} exceeds 1/beta = {1 / f.smoothness:.4g} (beta = {f.smoothness:.4g}, "
                     f"the largest Hessian eigenvalue found on the region): the certificate needs "
                     f"eta <= 1/beta"),
            suggestion=f"use certify rate(step=...) with a step at most {1 / f.smoothness:.3g}, or leave it out "
                       f"for gradient flow",
            points=[], span=claim_span, numbers={"step": f.step, "smoothness": f.smoothness}), notes
    if not f.found:
        if not f.auto:
            # rho > r alone does not show that the flow leaves: only the witness leaving refutes
            return "inconclusive", FailingRegion(
                kind="confinement",
                message=(f"the path-length bound rho = {f.rho:.4g} exceeds the region's radius r = {f.radius:.4g}: "
                         f"the estimate cannot show that the flow stays in the region"),
                suggestion="use radius=auto, a radius of at least rho, or a floor",
                points=failing_points(f.records, f.radius, f.floor_eff, 3), span=region_span,
                numbers={"path_length_bound": f.rho, "radius": f.radius, "mu": f.mu, "kl_constant": f.K}), notes
        return "inconclusive", FailingRegion(
            kind="no-radius",
            message=(f"no radius found with rho(r) <= r after {len(f.history)} tries "
                     f"(last: r = {f.radius:.4g}, mu(r) = {f.mu:.4g}, rho = {f.rho:.4g})"),
            suggestion="certify a floor > 0, start closer to a solution, or widen the model",
            points=failing_points(f.records, f.radius, f.floor_eff, 3), span=region_span,
            numbers={"path_length_bound": f.rho, "radius": f.radius, "mu": f.mu, "kl_constant": f.K}), notes
    if f.floor_claim is not None and f.floor_claim > f.floor:
        notes.append(f"the rate is claimed down to {f.floor_claim:.3g} (the effective floor: the lowest loss "
                     f"the search reached in the region, or the rounding-noise level), not to the floor "
                     f"{f.floor:g}: nothing was sampled below it")
    return "certified", None, notes


def _after(f: Findings, witness: Witness, verdict: str, failing):
    notes = []
    unit = "k" if f.step is not None else "t"
    if verdict == "certified" and witness.violation is not None:
        v = witness.violation
        at = v["t"] / witness.step if f.step is not None else v["t"]
        return "refuted", FailingRegion(
            kind="witness",
            message=(f"gradient descent from theta0 has L = {v['loss']:.6g} at {unit} = {at:.4g}, "
                     f"above the bound {v['bound']:.6g}: the estimated rate is too optimistic"),
            suggestion="raise samples=, shrink the region, or certify a floor",
            points=[], span=span_dict(f.method_span), numbers=dict(v)), notes
    leaves = witness.left_region_at is not None
    if leaves and (verdict == "certified" or (failing is not None and failing.kind == "confinement")):
        confinement = verdict != "certified"
        rho = (f" (the path-length bound rho = {f.rho:.4g} exceeds r = {f.radius:.4g} as well)"
               if confinement else "")
        return "refuted", FailingRegion(
            kind="confinement" if confinement else "witness",
            message=(f"gradient descent from theta0 leaves the region (r = {f.radius:.4g}) at "
                     f"{unit} = {_at(witness, witness.left_region_at, f.step):.4g} with the loss still above the "
                     f"floor{rho}: the flow is not confined to the region"),
            suggestion="enlarge the region or use radius=auto", points=[], span=span_dict(f.region_span),
            numbers={**(failing.numbers if failing is not None else {}), "t": witness.left_region_at,
                     "max_distance": witness.max_distance, "radius": f.radius}), notes
    if verdict == "certified":
        notes.append(witness_coverage(witness, f.step))
    return verdict, failing, notes


def _at(witness: Witness, t: float, step) -> float:
    return t / witness.step if step is not None else t


def witness_coverage(witness: Witness, step=None) -> str:
    """What the witness's comparison covered, in words (for the notes of a certified result)."""
    unit = "k" if step is not None else "t"
    if witness.settled_at is not None:
        return (f"the witness descent reached the floor at {unit} = {_at(witness, witness.settled_at, step):.4g} "
                f"and its loss never rose: the bound held along it at every time")
    if witness.horizon is not None and witness.time >= witness.horizon * (1 - 1e-12):
        return (f"the witness compared bound and loss up to the horizon {unit} = "
                f"{_at(witness, witness.horizon, step):.4g}")
    if witness.checked_until < witness.time:
        return (f"the witness compared bound and loss up to {unit} = "
                f"{_at(witness, witness.checked_until, step):.4g}; after that the bound is below the "
                f"rounding-noise level")
    horizon = f" of the horizon {_at(witness, witness.horizon, step):.4g}" if witness.horizon else ""
    return (f"the witness compared bound and loss up to {unit} = {_at(witness, witness.checked_until, step):.4g}"
            f"{horizon} only (its budget of {witness.steps} steps): the bound is unchecked beyond")


def _unsampled(f: Findings, claim_span, notes):
    """The search never reached the levels the claim is about: the estimate cannot speak for them."""
    return "inconclusive", FailingRegion(
        kind="unsampled-levels",
        message=(f"the search reached losses only down to {f.lowest_sampled:.4g}: R was never sampled "
                 f"between that level and the floor {f.floor:g}, so no rate to the floor is estimated"),
        suggestion=(f"certify rate(floor={nice_up(f.lowest_sampled)}) or higher, or raise samples= "
                    f"(gradient descent may be slow or stall above the floor)"),
        points=[], span=claim_span, numbers={"lowest_sampled_loss": f.lowest_sampled,
                                             "floor": f.floor}), notes
