"""`method sampled`: the sampled engine's run of one spec, from a checked spec to its Evidence.

The descent from theta0, then the region (the radius fixed point for radius=auto), the verdict
before the witness (compose/verdicts.py), the witness descent and the verdict after it. Every
number is an estimate (docs/theory.md sections 5-8)."""
from __future__ import annotations

import math
import time

import torch

from ..analyse.levels import DESCENT_STEPS, NOISE, WITNESS_MAX_STEPS, WITNESS_STEPS, ZERO_MU
from ..analyse.records import Records, theta_keep
from ..analyse.regions import Ball, Box
from ..analyse.sampled import SOURCE_TEXT, Budget, initial_trajectory, search_executor, search_region, total_evaluations
from ..analyse.threads import choose as choose_threads
from ..analyse.trajectory import SearchContext
from ..analyse.witness import run_witness, step_count
from ..compile.problem import Problem
from ..result import MuSource
from .build import Evidence, finite
from .composition import choose, kl_constant, loss_profile, piecewise_time, vanishing_exponent
from .confinement import find_radius, path_length_bound
from .rate import FRACTIONS, Rate
from .verdicts import Findings, judge

SMOOTHNESS_POINTS = 8  # points of U where the Hessian's top eigenvalue is measured (step mode)
SAMPLED_DOWN_TO = 1e-12  # a rate to floor 0 needs sampled points with L <= this * L0


def certify_sampled(checked, options):
    t_start = time.perf_counter()
    # a named phase: building the model and timing its evaluation (the thread count) come first
    with options.reporter.phase("compiling the model", total=None):
        problem = Problem(checked, options.device)
        _, thread_note = choose_threads(problem, options.threads)
    # --workers N: used when the measured estimate says they pay for their start (a note says which)
    executor = search_executor(checked, problem, options.workers, options.scheduler, options.device,
                               torch.get_num_threads())
    try:
        return problem, _sampled_evidence(checked, options, problem, executor, t_start, thread_note)
    finally:
        executor.close()


def _sampled_evidence(checked, options, problem: Problem, executor, t_start: float,
                      thread_note: str | None = None) -> Evidence:
    reporter = options.reporter
    loss = problem.loss_def
    claim, method, region_choice = checked.claim.options, checked.method.options, checked.region
    floor = float(claim.get("floor", 0.0))
    horizon = float(claim.get("horizon", 1e4))
    step = claim.get("step")
    samples, seed = int(method.get("samples", 4096)), int(method.get("seed", 0))

    # a named phase, so that --budget running out here says where (a wide network's Hessian)
    with reporter.phase("theta0: loss, kernel and step size", total=None):
        p0 = problem.point(problem.theta0)
        problem.initial_loss_check(p0)   # E206: L, grad L and R at theta0 finite at this scale
        beta0 = problem.hessian_top_eigenvalue(problem.theta0, seed=seed)
    L0, R0 = p0.loss, p0.rayleigh
    noise = max(NOISE * L0, getattr(problem, "loss_rounding", 0.0))   # a closed form's own level
    floor_eff = max(floor, noise)
    gen = torch.Generator().manual_seed(seed)
    eta = 0.5 / beta0 if beta0 > 0 else 1.0
    budget = Budget(samples)
    records = Records(ceiling=L0, keep=theta_keep(problem.m))   # the flow never climbs above L(theta0)
    timing = {}
    # what is known if --budget or Ctrl-C stops the run early (the CLI reports it as partial)
    reporter.partial = lambda: {
        "loss": {"name": loss.name, "initial": L0, "floor": floor},
        "smallest_R_so_far": min((v for v, s in zip(records.value, records.source)
                                  if s != "tangent-kernel"), default=None),
        "points": records.count(),
        "problem": {"parameters": problem.m, "samples": problem.n, "outputs": problem.k}}

    # --- search: the descent from theta0, then the region (radius fixed point) -------------
    # The descent from theta0 runs until it reaches the floor (or the noise level), up to the
    # witness's budget: the estimate only speaks for loss levels that were sampled.
    with reporter.phase("descent from theta0", total=WITNESS_STEPS) as advance:
        ctx = SearchContext(gen=gen, eta=eta, noise=noise, advance=advance, floor=floor, executor=executor)
        initial_trajectory(problem, records, WITNESS_STEPS, ctx, extend_to=DESCENT_STEPS)
    timing["initial_trajectory"] = time.perf_counter() - t_start

    comp = choose(loss, checked.desingularizer.name, dict(checked.desingularizer.options),
                  records, math.inf, floor_eff)
    phi = comp.phi
    K0 = R0 * phi.dphi(L0) * loss.floor_g(L0, p0.sample_max) if L0 > 0 else 0.0
    center = problem.theta0
    auto = region_choice.name == "ball" and region_choice.options.get("radius") == "auto"
    make_region = (lambda r: Ball(center, r)) if region_choice.name == "ball" else (lambda r: Box(center, r))
    smoothness = {}

    def search(radius: float) -> float:
        region = make_region(radius)
        with reporter.phase(f"searching {region.kind} r={radius:.3g}",
                            total=total_evaluations(problem, budget)) as adv:
            ctx.advance = adv
            search_region(problem, region, records, budget, ctx, floor_eff)
        if step is not None:
            smoothness[radius] = _smoothness(problem, records, region, floor_eff, seed)
        return kl_constant(records, radius, floor_eff, loss, phi, to_zero=floor == 0)[0]

    def rho_of(K: float, radius: float | None = None) -> float:
        if not K > ZERO_MU * K0:
            return math.inf
        if step is None:
            return path_length_bound(phi, K, L0, floor)
        b = smoothness.get(radius, beta0)
        if step > 1 / b:
            return math.inf
        return path_length_bound(phi, K, L0, floor, step, b, last_step=step * math.sqrt(4 * b * L0))

    t1 = time.perf_counter()
    # if the descent from theta0 never reached the levels the claim is about, growing the region
    # cannot support it: search once, for a critical point to report
    reached = records.lowest_loss(math.inf) <= max(floor, SAMPLED_DOWN_TO * L0)
    if auto:
        k_path = kl_constant(records, math.inf, floor_eff, loss, phi, to_zero=floor == 0)[0]
        start = 1.01 * max(rho_of(k_path) if math.isfinite(rho_of(k_path)) else 0.0,
                           max(records.distance, default=0.0), 1e-8 * (1 + float(center.norm())))
        radius, K, rho, history, found = find_radius(search, lambda k: rho_of(k, None), start,
                                                     iterations=10 if reached else 1)
    else:
        radius = float(region_choice.options.get("radius") or region_choice.options.get("halfwidth"))
        K = search(radius)
        history, found = [(radius, K, math.inf)], False
    rho = rho_of(K, radius)
    found = rho <= radius
    history[-1] = (radius, K, rho)
    timing["search"] = time.perf_counter() - t1
    region = make_region(radius)
    K, k_arg, M = kl_constant(records, radius, floor_eff, loss, phi, to_zero=floor == 0)
    mu, mu_arg = records.minimum(radius, floor_eff)
    vanishing = vanishing_exponent(loss_profile(records, radius, floor_eff, loss, phi)) if floor == 0 else None
    beta_u = smoothness.get(radius)
    # The estimate speaks only for the levels that were sampled: the rate is claimed down to the
    # lowest loss the search reached in the region (never to a level below every sampled point).
    floor_claim = max(floor_eff, records.lowest_loss(radius))

    # --- verdict before the witness --------------------------------------------------------
    findings = Findings(L0=L0, R0=R0, K=K, K0=K0, mu=mu, rho=rho, radius=radius, found=found, auto=auto,
                        lowest_sampled=records.lowest_loss(math.inf),
                        sampled_target=max(floor, SAMPLED_DOWN_TO * L0),
                        floor=floor, floor_eff=floor_eff, floor_claim=floor_claim, history=history, records=records,
                        zero=ZERO_MU, step=step, smoothness=beta_u,
                        claim_span=checked.claim.span, region_span=region_choice.span,
                        method_span=checked.method.span, vanishing=vanishing)
    verdict, failing, notes = judge(findings)
    rate = None
    if verdict == "certified" and L0 > floor:
        rate = Rate(phi, K, L0, floor_claim, step, beta_u)
    bound = rate.bound if rate is not None else ((lambda t: L0) if L0 <= floor else None)

    # --- witness ------------------------------------------------------------------------------
    t2 = time.perf_counter()
    w_eta = step if step is not None else (0.25 / beta0 if beta0 > 0 else 0.1)
    w_horizon = horizon * (w_eta if step is not None else 1.0)   # with a step, the horizon counts steps
    w_bound = (lambda t: bound(t / w_eta)) if (step is not None and bound is not None) else bound
    # a bound is checked up to the claim's horizon, or until the descent reaches the floor; with no
    # bound to check (a refuted or inconclusive claim) the witness is only shown: keep it short
    w_steps = WITNESS_MAX_STEPS if bound is not None else \
        WITNESS_STEPS if failing is not None and failing.kind == "confinement" else WITNESS_STEPS // 10
    with reporter.phase("witness descent", total=step_count(w_horizon, w_eta, w_steps)) as advance:
        witness = run_witness(problem, w_eta, w_horizon, w_bound, noise, region, w_steps, advance,
                              floor=floor_claim if rate is not None else floor, restart=step is None)
    timing["witness"] = time.perf_counter() - t2
    verdict, failing, more = judge(findings, witness=witness, verdict=verdict, failing=failing)
    notes += more
    if thread_note:
        notes.append(thread_note)
    if getattr(executor, "note", None) and executor.note():
        notes.append(executor.note())
    if verdict != "certified":
        rate = None
        bound = None if L0 > floor else bound

    timing["total"] = time.perf_counter() - t_start
    sources = []
    for name in ("trajectory", "adversarial", "random", "tangent-kernel"):
        count = records.count(name)
        if count:
            value, _ = records.minimum(radius, floor_eff, name)
            sources.append(MuSource(name, SOURCE_TEXT[name], value if math.isfinite(value) else None, count))
    # c is a constant only for the natural phi of a loss whose fact needs no per-point bound M
    natural = phi.name == loss.natural and phi.params == loss.natural_params
    c = loss.constant() if natural and not loss.needs_sample_bound else None
    profile = _profile(records, radius, floor_eff, loss, phi, L0, rate.floor, comp.exponent, rate) \
        if rate else {"exponent": comp.exponent, "bands": comp.profile, "times_to_fraction": {}}
    if rate is not None:
        notes += _fast_then_slow(profile, rate)
    return Evidence(
        verdict=verdict, sound=False,
        method={"name": "sampled", "samples": samples, "seed": seed, "evaluations": records.count(),
                "step": eta, "smoothness_at_theta0": beta0},
        loss={"initial": L0, "constant": c, "floor": floor,
              "effective_floor": rate.floor if rate else None,
              "inequality": loss.inequality, "minimum_seen": min(records.lowest_loss(math.inf), L0),
              "sample_bound": M if loss.needs_sample_bound else None},
        phi=phi, phi_reason=comp.reason,
        mu=mu, mu_source=records.source[mu_arg] if mu_arg is not None else None, mu_sources=sources,
        radius=radius, rho=rho,
        radius_search=[{"radius": r, "mu": finite(k), "path_length_bound": finite(p)} for r, k, p in history],
        rate={"formula": rate.formula() if rate else None,
              "asymptotic": rate.asymptotic() if rate else None,
              "kl_constant": finite(K),
              "curve": rate.curve(horizon) if rate else [],
              "times_to_fraction": rate.times_to_fraction() if rate else {},
              "horizon": horizon, "unit": "steps k" if step is not None else "gradient-flow time t",
              "step": step, "smoothness": beta_u,
              "profile": profile,
              "convention": "R = ||grad L||^2 / ||g||_D^2 with the L2(D) inner product " + (
                  "(mean over the data)" if problem.population is None else
                  "(expectation over x ~ N(0, I); L and grad L in closed form, not Monte Carlo)")},
        witness=witness, failing=failing,
        timing=timing, notes=notes, bound=bound, records=records)


def _profile(records, radius, floor_eff, loss, phi, L0, floor, exponent, rate) -> dict:
    """The loss-level profile of the region and the piecewise rate it gives (an estimate): the
    time (or, with a step, the number of steps) to each fraction of L0, band by band; never
    longer than the single-K rate's."""
    bands = loss_profile(records, radius, floor_eff, loss, phi)
    times = {}
    for f in FRACTIONS:
        level = f * L0
        key = f"{f:.0e}".replace("e-0", "e-")
        t = piecewise_time(bands, phi, L0, level) if level >= floor else None
        if t is not None and rate.step is not None:   # in steps, as the rate's own times
            t = float(math.ceil(t / (rate.speed / rate.K)))
        times[key] = t
    return {"exponent": exponent, "bands": bands, "times_to_fraction": times}


def _fast_then_slow(profile: dict, rate: Rate) -> list[str]:
    """A note when one K over all levels hides a fast start: R is small only on the lowest bands,
    so the single-K bound is slow everywhere while band by band the loss falls fast to a level
    and slowly below it (issue 16: certify the profile rather than call a tiny rate a failure)."""
    piece, single = profile.get("times_to_fraction") or {}, rate.times_to_fraction()
    t_piece, t_single = piece.get("1e-2"), single.get("1e-2")
    if not (t_piece and t_single and t_single > 100 * t_piece):
        return []
    slow = [b for b in profile.get("bands") or [] if 0 < b.get("kl_constant", 0) <= 10 * rate.K]
    if not slow:
        return []
    level = max(b["high"] for b in slow)
    unit = "k" if rate.step is not None else "t"
    deep = ", ".join(f"{k}·L0 by {unit} = {v:.4g}" for k, v in piece.items() if v is not None and k != "1e-2")
    return [f"a profile, fast then slow (an estimate): band by band the loss reaches 1e-2·L0 by {unit} = "
            f"{t_piece:.4g} ({deep}), where the single-K bound needs {unit} = {t_single:.4g}: R is that small "
            f"only below L ≈ {level:.3g} (the loss-level profile's lowest bands), which sets K = {rate.K:.4g}"]


def _smoothness(problem: Problem, records: Records, region, floor: float, seed: int) -> float:
    """Largest Hessian eigenvalue (power iteration) at theta0, the lowest points found and random
    points of the region: an estimate of the smoothness beta on U."""
    low = [records.thetas[i] for i in records.lowest(region.inner_radius, floor, SMOOTHNESS_POINTS // 2)
           if i in records.thetas]
    gen = torch.Generator().manual_seed(seed + 1)
    points = [region.center] + low + list(region.sample(gen, SMOOTHNESS_POINTS // 2))
    return max(problem.hessian_top_eigenvalue(p, seed=seed) for p in points)
