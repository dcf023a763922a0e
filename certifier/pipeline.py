"""parse -> check -> compile -> analyse -> compose -> report: the whole run of one spec."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .analyse.records import Records
from .analyse.regions import Ball, Box
from .analyse.sampled import SOURCE_TEXT, Budget, initial_trajectory, search_region, total_evaluations
from .analyse.sources import Context
from .analyse.witness import run_witness
from . import check as _check_stage
from .compile.problem import Problem
from .compose.confinement import find_radius, path_length_bound
from .compose.losses import desingularizer_for
from .compose.rate import Rate
from .diagnostics import Diagnostic, SpecError
from .parse import parse
from .progress import NullReporter
from .report.result import FailingPoint, FailingRegion, MuSource, Result

NOISE = 1e-16          # losses below NOISE * L0 are rounding noise (docs/theory.md, section 6)
ZERO_MU = 1e-9         # mu below ZERO_MU * R(theta0) is read as "no positive mu"
WITNESS_STEPS = 20000  # budget of the witness descent


@dataclass
class RunOptions:
    max_params: int = 10**8          # refuse larger problems before allocating (E205)
    reporter: object = field(default_factory=NullReporter)  # progress on stderr
    device: str = "cpu"
    threads: int | None = None       # torch intra-op threads; None: 1 for small problems
    deadline: float | None = None    # time.monotonic() value: past it, reporter.advance() raises progress.BudgetExceeded
    allow_python: bool = False       # model torch("pkg.mod:Net") imports Python code only when True (E301)


def run_text(source: str, path: str = "<string>", options: RunOptions | None = None) -> Result:
    options = options or RunOptions()
    spec = parse(source, path)
    checked = _check_stage.check(spec, max_params=options.max_params, allow_python=options.allow_python)
    return analyse(checked, options)


def run_file(path: str, options: RunOptions | None = None) -> Result:
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError([Diagnostic("E003", "the spec file is not valid UTF-8 text", None,
                                    "certify reads .rq spec files written in UTF-8", path)])
    return run_text(text, path, options)


def _span_dict(span):
    if span is None:
        return None
    return {"line": span.line, "column": span.column, "end_line": span.end_line, "end_column": span.end_column}


def analyse(checked, options: RunOptions) -> Result:
    if checked.method.name == "interval":      # the sound mode: see _analyse_sound at the end
        return _analyse_sound(checked, options)
    t_start = time.perf_counter()
    reporter = options.reporter
    torch.manual_seed(0)
    problem = Problem(checked, options.device)
    # Small products gain nothing from intra-op threads and lose much to oversubscription.
    torch.set_num_threads(options.threads or (1 if problem.m * problem.n * problem.k < 4_000_000 else
                                              torch.get_num_threads()))
    loss_def = problem.loss_def
    phi = desingularizer_for(loss_def, checked.desingularizer.name)
    c = loss_def.constant
    claim, method, region_choice = checked.claim.options, checked.method.options, checked.region
    floor = float(claim.get("floor", 0.0))
    horizon = float(claim.get("horizon", 1e4))
    samples = int(method.get("samples", 4096))
    seed = int(method.get("seed", 0))

    p0 = problem.point(problem.theta0)
    L0, R0 = p0.loss, p0.rayleigh
    noise = NOISE * L0
    floor_eff = max(floor, noise)
    gen = torch.Generator().manual_seed(seed)
    beta = problem.hessian_top_eigenvalue(problem.theta0, seed=seed)
    eta = 0.5 / beta if beta > 0 else 1.0
    budget = Budget(samples)
    records = Records()
    timing = {}

    # --- search -----------------------------------------------------------------------
    with reporter.phase("descent from theta0", total=budget.samples // 4) as advance:
        ctx = Context(gen=gen, eta=eta, noise=noise, advance=advance, floor=floor)
        initial_trajectory(problem, records, max(200, budget.samples // 4), ctx)
    timing["initial_trajectory"] = time.perf_counter() - t_start

    center = problem.theta0
    auto = region_choice.name == "ball" and region_choice.options.get("radius") == "auto"

    def rho_of(mu: float) -> float:
        return path_length_bound(phi, c, mu, L0, floor) if mu > ZERO_MU * R0 else math.inf

    def mu_of(radius: float) -> float:
        region = Ball(center, radius) if region_choice.name == "ball" else Box(center, radius)
        with reporter.phase(f"searching {region.kind} r={radius:.3g}",
                            total=total_evaluations(problem, budget)) as advance:
            ctx.advance = advance
            search_region(problem, region, records, budget, ctx, floor_eff)
        return records.minimum(radius, floor_eff)[0]

    t1 = time.perf_counter()
    if auto:
        path_mu, _ = records.minimum(math.inf, floor_eff)
        start = 1.01 * max(rho_of(path_mu) if math.isfinite(rho_of(path_mu)) else 0.0,
                    max(records.distance) if records.distance else 0.0, 1e-8 * (1 + float(center.norm())))
        radius, mu, rho, history, found = find_radius(mu_of, rho_of, start)
    else:
        radius = float(region_choice.options.get("radius") or region_choice.options.get("halfwidth"))
        mu = mu_of(radius)
        rho = rho_of(mu)
        history, found = [(radius, mu, rho)], rho <= radius
    timing["search"] = time.perf_counter() - t1
    region = Ball(center, radius) if region_choice.name == "ball" else Box(center, radius)
    mu_value, arg = records.minimum(radius, floor_eff)
    mu_source = records.source[arg] if arg is not None else None

    # --- verdict ------------------------------------------------------------------------
    failing = None
    verdict = "certified"
    notes = [f"sampled estimate: mu is the smallest R (or kernel lambda_min) found at "
             f"{records.count()} points; it is not a proof"]
    region_span = _span_dict(region_choice.span)
    if L0 <= floor:
        mu_value, rho = math.inf, 0.0
        notes.append("the initial loss is already at or below the floor")
    elif not (mu_value > ZERO_MU * R0):
        exact_min, _ = records.minimum(radius, floor_eff, exact=True)
        min_loss = min(records.loss) if records.loss else L0
        if not (exact_min > ZERO_MU * R0):
            # R itself (not a lower bound on it) is about 0 at a point above the floor
            verdict = "refuted"
            pt = _failing_points(records, radius, floor_eff, 5, exact=True)
            failing = FailingRegion(
                kind="critical-point",
                message=(f"R = {pt[0].rayleigh:.3g} (about 0) at a point {pt[0].distance:.3g} from theta0 where "
                         f"L = {pt[0].loss:.4g} is above the floor {floor:g}: gradient flow can stall there, "
                         f"so no rate to the floor holds on this region"),
                suggestion=(f"the loss may not reach {floor:g}: certify a floor above the smallest loss seen "
                            f"(e.g. certify rate(floor={_nice_up(min_loss)})), shrink the region, or widen the model"),
                points=pt, span=_span_dict(checked.claim.span) or region_span,
                numbers={"mu": exact_min, "smallest_loss_seen": min_loss})
        else:
            # only the kernel's lower bound vanished: R may still be positive there
            verdict = "inconclusive"
            pt = _failing_points(records, radius, floor_eff, 3)
            failing = FailingRegion(
                kind="singular-kernel",
                message=(f"the tangent kernel is nearly singular (lambda_min = {mu_value:.3g}) at a point "
                         f"{pt[0].distance:.3g} from theta0, and R itself was at least {exact_min:.3g}: "
                         f"no positive mu can be estimated"),
                suggestion="shrink the region, certify a floor, or widen the model",
                points=pt, span=region_span, numbers={"mu": mu_value, "smallest_exact_R": exact_min})
    elif not found:
        verdict = "refuted" if not auto else "inconclusive"
        failing = FailingRegion(
            kind="confinement" if not auto else "no-radius",
            message=(f"the path-length bound rho = {rho:.4g} exceeds the region's radius r = {radius:.4g}: "
                     f"the flow may leave the region before the rate applies") if not auto else
                    (f"no radius found with rho(r) <= r after {len(history)} tries "
                     f"(last: r = {radius:.4g}, mu(r) = {mu_value:.4g}, rho = {rho:.4g})"),
            suggestion=("use radius=auto, a radius of at least rho, or a floor" if not auto else
                        "certify a floor > 0, start closer to a solution, or widen the model"),
            points=_failing_points(records, radius, floor_eff, 3), span=region_span,
            numbers={"path_length_bound": rho, "radius": radius, "mu": mu_value})

    rate = Rate(phi, c, mu_value, L0, floor) if verdict == "certified" and mu_value > 0 else None
    bound = (rate.bound if rate is not None else None)
    if L0 <= floor:
        bound = lambda t: L0  # noqa: E731

    # --- witness -----------------------------------------------------------------------
    t2 = time.perf_counter()
    with reporter.phase("witness descent", total=WITNESS_STEPS) as advance:
        witness = run_witness(problem, 0.25 / beta if beta > 0 else 0.1, horizon, bound, noise,
                              region, WITNESS_STEPS, advance, floor=floor)
    timing["witness"] = time.perf_counter() - t2
    if verdict == "certified" and witness.violation is not None:
        verdict = "refuted"
        v = witness.violation
        failing = FailingRegion(
            kind="witness", message=(f"gradient descent from theta0 has L = {v['loss']:.6g} at t = {v['t']:.4g}, "
                                     f"above the bound {v['bound']:.6g}: the estimated mu is too optimistic"),
            suggestion="raise samples=, shrink the region, or certify a floor",
            points=[], span=_span_dict(checked.method.span), numbers=dict(v))
    elif verdict == "certified" and witness.left_region_at is not None:
        verdict = "refuted"
        failing = FailingRegion(
            kind="witness", message=f"gradient descent from theta0 leaves the region at t = {witness.left_region_at:.4g}",
            suggestion="enlarge the region or use radius=auto", points=[], span=region_span,
            numbers={"t": witness.left_region_at, "max_distance": witness.max_distance, "radius": radius})
    if witness.checked_until < horizon and bound is not None:
        notes.append(f"the witness compared bound and loss up to t = {witness.checked_until:.4g} "
                     f"(the bound is below the rounding-noise level {noise:.2g} after that, or the step budget ended)")

    timing["total"] = time.perf_counter() - t_start
    sources = []
    for name in ("trajectory", "adversarial", "random", "tangent-kernel"):
        count = records.count(name)
        if count:
            value, _ = records.minimum(radius, floor_eff, name)
            sources.append(MuSource(name, SOURCE_TEXT[name], value if math.isfinite(value) else None, count))
    return Result(
        spec=checked.spec.path, title=checked.spec.title or Path(checked.spec.path).stem,
        verdict=verdict, sound=False,
        method={"name": "sampled", "samples": samples, "seed": seed, "evaluations": records.count(),
                "step": eta, "smoothness_at_theta0": beta},
        loss={"name": loss_def.name, "initial": L0, "constant": c, "floor": floor,
              "inequality": loss_def.inequality, "minimum_seen": min(records.loss) if records.loss else L0},
        desingularizer={"name": phi.name, "requested": checked.desingularizer.name, "params": phi.params,
                        "phi": phi.phi_text},
        mu=mu_value if math.isfinite(mu_value) else None, mu_source=mu_source, mu_sources=sources,
        region={"kind": region_choice.name, "center": "init", "radius": radius, "radius_auto": auto,
                "halfwidth": radius if region_choice.name == "box" else None,
                "path_length_bound": rho if math.isfinite(rho) else None, "dimension": problem.m,
                "radius_search": [{"radius": r, "mu": m_, "path_length_bound": p if math.isfinite(p) else None}
                                  for r, m_, p in history]},
        rate={"formula": rate.formula() if rate else None,
              "curve": rate.curve(horizon) if rate else [],
              "times_to_fraction": rate.times_to_fraction() if rate else {},
              "horizon": horizon, "time": "gradient-flow time t",
              "convention": "R = ||grad L||^2 / ||g||_D^2 with the L2(D) inner product (mean over the data)"},
        witness=witness, failing_region=failing, diagnostics=[],
        problem={"parameters": problem.m, "samples": problem.n, "outputs": problem.k},
        timing=timing, notes=notes, _bound=bound, _records=records)


def _failing_points(records: Records, radius: float, floor: float, count: int,
                    exact: bool = False) -> list[FailingPoint]:
    return [FailingPoint(records.distance[i], records.loss[i], records.value[i], records.source[i])
            for i in records.lowest(radius, floor, count, exact)]


def _nice_up(value: float) -> str:
    """A round number a little above value, for suggestions."""
    if value <= 0:
        return "0.01"
    exp = math.floor(math.log10(value))
    mant = math.ceil(value * 1.1 / 10**exp * 10) / 10
    return f"{mant * 10**exp:.3g}"


# --- method interval: the sound mode ------------------------------------------------------------
def _analyse_sound(checked, options: RunOptions) -> Result:
    """`method interval(boxes=, seed=)`: a Result with sound=True whose `certified` verdict is a
    theorem (certifier/analyse/sound/verdict.py; docs/theory.md section 10). The proof is
    certifier.analyse.sound.engine.bound_mu; rho and the rate use outward rounding."""
    from .analyse.sound.verdict import analyse_sound
    return analyse_sound(checked, options)
