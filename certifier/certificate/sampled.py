"""Certificates of the sampled method: the lowest points of each search source within the region
and above the floor, and the witness; `check` recomputes L and R (or lambda_min) at each point and
the numbers that follow from them. Re-verifying them re-checks an estimate, it proves nothing."""
from __future__ import annotations

import math
from dataclasses import asdict

from ..analyse.levels import NOISE, ZERO_MU
from ..analyse.records import LOWER_BOUNDS
from ..compile.kernel import lambda_min as kernel_lambda_min
from ..report.load import rate_parameters
from .base import (
    NOT_A_PROOF,
    PER_SOURCE,
    TOLERANCE,
    CertificateError,
    VerifyContext,
    close,
    compile_spec,
    evidence_digest,
    finite,
    header,
    kl_value,
    phi_of,
    point_M,
    recompute_rho,
)


def build_sampled(result, spec_path: str, source: str, allow_python: bool = False, device: str = "cpu") -> dict:
    records = result._records
    if records is None:
        raise CertificateError("the result has no evidence (it was not computed in this run)")
    f = result.failing_region
    if f is not None and f.kind in ("budget", "interrupted"):
        raise CertificateError(f"the result is partial ({f.kind}): there is nothing to certify")
    checked, problem = compile_spec(spec_path, source, allow_python, device)
    theta0 = problem.theta0
    loss = result.loss or {}
    L0, floor = float(loss["initial"]), float(loss.get("floor") or 0.0)
    radius = float(result.region["radius"])
    floor_eff = max(floor, NOISE * L0, getattr(problem, "loss_rounding", 0.0))   # as the pipeline
    M = loss.get("sample_bound")
    M = math.inf if M is None else float(M)
    phi = phi_of(result)

    inside = [i for i in range(len(records.value))
              if records.distance[i] <= radius * (1 + 1e-12)
              and floor_eff <= records.loss[i] <= L0 * (1 + 1e-12)]   # the sublevel set, as Records
    # a kernel lambda_min is kept as evidence but never sets mu or K (it is a lower bound on R)
    eligible = [i for i in inside if records.source[i] not in LOWER_BOUNDS]
    roles: dict[int, list[str]] = {}
    for src in dict.fromkeys(records.source):
        idx = sorted((i for i in inside if records.source[i] == src and i in records.thetas),
                     key=lambda i: records.value[i])[:PER_SOURCE]
        for i in idx:
            roles.setdefault(i, [])
    if eligible:
        mu_arg = min(eligible, key=lambda i: records.value[i])
        if mu_arg in records.thetas:
            roles.setdefault(mu_arg, []).append("mu")
        kls = [(kl_value(problem.loss_def, phi, records.loss[i], records.value[i],
                         point_M(problem, records.sample_max[i])), i) for i in eligible]
        kls = [(k, i) for k, i in kls if k is not None]
        if kls:
            k_arg = min(kls)[1]
            if k_arg in records.thetas:
                roles.setdefault(k_arg, []).append("K")

    evidence = []
    for i in sorted(roles, key=lambda i: (records.source[i], records.value[i], i)):
        delta = (records.thetas[i] - theta0)
        theta = theta0 + delta
        p = problem.point(theta)
        entry = {"kind": "kernel-point" if records.source[i] in LOWER_BOUNDS else "sampled-point",
                 "source": records.source[i], "roles": roles[i],
                 "distance": float(delta.norm()), "loss": p.loss, "rayleigh": finite(p.rayleigh),
                 "value": records.value[i]}
        if problem.loss_def.needs_sample_bound:
            entry["sample_max"] = records.sample_max[i]      # M(theta), as the point's KL constant used it
        if entry["kind"] == "kernel-point":
            entry["lambda_min"] = kernel_lambda_min(problem, theta)
        entry["delta"] = [float(v) for v in delta.detach().cpu().reshape(-1).tolist()]
        evidence.append(entry)
    if result.witness is not None:
        w = asdict(result.witness)
        evidence.append({"kind": "witness", **w})

    rate = result.rate or {}
    try:
        rate_params = rate_parameters(result)
    except ValueError:
        rate_params = None
    return {
        **header(result, spec_path, source, allow_python),
        "numbers": {"L0": L0, "mu": finite(result.mu), "c": loss.get("constant"),
                    "K": finite(rate.get("kl_constant")) if "kl_constant" in rate else None,
                    "floor": floor, "floor_effective": floor_eff,
                    "floor_claimed": loss.get("effective_floor") if loss.get("effective_floor") is not None
                    else floor, "sample_bound": finite(M),
                    "radius": radius, "region": result.region.get("kind"),
                    "rho": finite(result.region.get("path_length_bound")), "horizon": rate.get("horizon")},
        "rate": {"parameters": rate_params, "formula": rate.get("formula"), "curve": rate.get("curve") or []},
        "evidence_count": len(evidence),
        "evidence_digest": evidence_digest(evidence),
        "evidence": evidence,
        "note": NOT_A_PROOF,
    }


def _point(entry: dict, ctx: VerifyContext, name: str):
    import torch

    delta = entry.get("delta")
    problem = ctx.problem
    if not isinstance(delta, list) or len(delta) != problem.m:
        ctx.reject(f"{name}: delta has {len(delta) if isinstance(delta, list) else 'no'} entries, "
                   f"the spec has {problem.m} parameters")
        return None, None
    d = torch.tensor(delta, dtype=problem.theta0.dtype, device=problem.theta0.device)
    theta = problem.theta0 + d
    p = problem.point(theta)
    ctx.checked_points += 1
    if not close(p.loss, entry.get("loss"), ctx.point_tolerance(p.loss)):
        ctx.reject(f"{name}: L = {p.loss!r} recomputed, the certificate says {entry.get('loss')!r}")
    if not close(float(d.norm()), entry.get("distance")):
        ctx.reject(f"{name}: ||theta - theta0|| = {float(d.norm())!r}, the certificate says {entry.get('distance')!r}")
    if "sample_max" in entry and not close(p.sample_max, entry["sample_max"], ctx.point_tolerance(p.loss)):
        ctx.reject(f"{name}: its largest per-sample loss M = {p.sample_max!r} recomputed, the certificate says "
                   f"{entry['sample_max']!r}")
    return theta, p


def _verify_sampled(entry: dict, ctx: VerifyContext) -> None:
    name = f"evidence '{entry.get('source')}' point"
    theta, p = _point(entry, ctx, name)
    if p is None:
        return
    tol = ctx.point_tolerance(p.loss)
    if not close(finite(p.rayleigh), entry.get("rayleigh"), tol, abs_tol=ctx.abs_r):
        ctx.reject(f"{name}: R = {p.rayleigh!r} recomputed, the certificate says {entry.get('rayleigh')!r}")
    if not close(entry.get("value"), entry.get("rayleigh"), tol, abs_tol=ctx.abs_r):
        ctx.reject(f"{name}: its recorded value {entry.get('value')!r} is not R = {entry.get('rayleigh')!r}")


def _verify_kernel(entry: dict, ctx: VerifyContext) -> None:
    name = f"evidence '{entry.get('source')}' point"
    theta, p = _point(entry, ctx, name)
    if p is None:
        return
    lam = kernel_lambda_min(ctx.problem, theta)
    if not close(lam, entry.get("lambda_min"), 1e-7):
        ctx.reject(f"{name}: lambda_min = {lam!r} recomputed, the certificate says {entry.get('lambda_min')!r}")
    if not close(entry.get("value"), entry.get("lambda_min"), 1e-7):
        ctx.reject(f"{name}: its recorded value {entry.get('value')!r} is not lambda_min")


def _verify_witness(entry: dict, ctx: VerifyContext) -> None:
    n = ctx.numbers
    curve = entry.get("curve") or []
    if not close(entry.get("time"), (entry.get("steps") or 0) * (entry.get("step") or 0)):
        ctx.reject("witness: time is not steps * step")
    if curve and (curve[0][0] != 0 or not close(curve[0][1], n.get("L0"))):
        ctx.reject("witness: its curve does not start at (0, L0)")
    if ctx.cert.get("verdict") == "certified":
        if entry.get("violation") is not None:
            ctx.reject("witness: a certified certificate records a violation")
        if entry.get("left_region_at") is not None:
            ctx.reject("witness: a certified certificate records the witness leaving the region")
        if ctx.rate is not None and getattr(ctx.rate, "step", None) is None:
            until = entry.get("checked_until") or 0.0
            for t, loss in curve:
                if t <= until and loss > ctx.rate.bound(t) * (1 + TOLERANCE):
                    ctx.reject(f"witness: L = {loss!r} at t = {t!r} is above the bound {ctx.rate.bound(t)!r}")
                    break
    v = entry.get("violation")
    if ctx.cert.get("failing_kind") == "witness" and v is not None and not v.get("loss", 0) > v.get("bound", math.inf):
        ctx.reject("witness: the recorded violation has its loss below its bound")


# find_radius (compose.confinement) tries first 1.01 max(rho, the descent's reach, 1e-8 (1 + |theta0|)),
# then climbs by at most max(1.05 rho, 1.25 r) <= 1.25 rho: a radius=auto above AUTO_GROWTH times the
# largest of rho, the farthest evidence point and that 1e-8 is not one the search can have chosen
AUTO_GROWTH = 1.25 * 1.01
REFUTED_KINDS = ("critical-point", "witness", "confinement")


def _spec_claims(cert: dict, ctx: VerifyContext) -> None:
    """The numbers the spec fixes (floor, horizon, region, a given radius, the step, a named
    desingularizer) and the effective floor, recomputed as the pipeline does."""
    n, checked = ctx.numbers, ctx.problem.checked
    claim, region = checked.claim.options, checked.region
    floor = float(claim.get("floor", 0.0))
    if n["floor"] != floor:
        ctx.reject(f"numbers: floor {n['floor']!r}, the spec's floor is {floor!r}")
    horizon = float(claim.get("horizon", 1e4))
    if n["horizon"] != horizon:
        ctx.reject(f"numbers: horizon {n['horizon']!r}, the spec's horizon is {horizon!r}")
    if n["region"] != region.name:
        ctx.reject(f"numbers: region '{n['region']}', the spec's region is '{region.name}'")
    given = region.options.get("radius") if region.name == "ball" else region.options.get("halfwidth")
    ctx.state["auto"] = given == "auto"
    if given != "auto" and n["radius"] != float(given):
        ctx.reject(f"numbers: radius {n['radius']!r}, the spec's is {float(given)!r}")
    floor_eff = max(floor, NOISE * n["L0"], float(getattr(ctx.problem, "loss_rounding", 0.0) or 0.0))
    if "floor_effective" in n and not close(n["floor_effective"], floor_eff):
        ctx.reject(f"numbers: floor_effective {n['floor_effective']!r}, recomputed {floor_eff!r}")
    ctx.state["floor_eff"] = floor_eff
    loss = ctx.problem.loss_def
    if not loss.needs_sample_bound and n.get("sample_bound") is not None:
        ctx.reject(f"numbers: sample_bound {n['sample_bound']!r}, but the loss {checked.loss.name} uses none")
    rate = ctx.rate
    if rate is None:
        return
    step = claim.get("step")
    if (rate.step is None) != (step is None) or (step is not None and rate.step != float(step)):
        ctx.reject(f"rate: its step {rate.step!r} is not the spec's {step!r}")
    d = checked.desingularizer
    if d.name != "auto" and (rate.phi.name != d.name or any(
            not close(rate.phi.params.get(k), float(v)) for k, v in d.options.items())):
        ctx.reject(f"rate: its desingularizer {rate.phi.name} {rate.phi.params} is not the spec's {d.name} "
                   f"{dict(d.options)}")
    natural = rate.phi.name == loss.natural and rate.phi.params == loss.natural_params
    c = loss.constant() if natural and not loss.needs_sample_bound else None
    if "c" in n and not close(n["c"], c):
        ctx.reject(f"numbers: c = {n['c']!r}, the loss constant of {checked.loss.name} with this "
                   f"desingularizer is {c!r}")


def _verdict_claims(cert: dict, ctx: VerifyContext, points: list, witness: dict | None) -> None:
    """The verdict and failing kind against the evidence; a floor at or above L0 is vacuous."""
    n, verdict, kind = ctx.numbers, cert["verdict"], cert["failing_kind"]
    params = cert["rate"]["parameters"]
    L0, floor, radius = n["L0"], n["floor"], n["radius"]
    if cert["sound"]:
        ctx.reject("a sampled certificate is an estimate: its sound must be false")
    if verdict != "certified":
        if params is not None and params["kind"] == "rate":
            ctx.reject(f"a {verdict} certificate claims no rate, this one has one")
        if verdict == "inconclusive" and kind is None:
            ctx.reject("an inconclusive certificate names its failing kind")
        if verdict == "refuted" and kind not in REFUTED_KINDS:
            ctx.reject(f"a refuted certificate's failing kind is one of {', '.join(REFUTED_KINDS)}, not {kind!r}")
        elif verdict == "refuted" and kind != "critical-point" and witness is not None:
            left = witness.get("left_region_at") is not None
            if kind == "confinement" and not left:
                ctx.reject("a confinement refutation needs the witness leaving the region")
            if kind == "witness" and witness.get("violation") is None and not left:
                ctx.reject("a witness refutation needs the witness's violation of the bound or its leaving the region")
        return
    if kind is not None:
        ctx.reject(f"a certified certificate has no failing kind ({kind!r})")
    if L0 <= floor:
        if not (params is not None and params["kind"] == "constant" and close(params["value"], L0)):
            ctx.reject("L0 <= floor: the bound of a certified certificate is the constant L0")
        ctx.state["vacuous"] = (f"the spec's floor {floor!r} is at or above L0 = {L0!r}: the bound "
                                "L(t) <= max(..., floor) holds from t = 0 and says nothing about convergence")
        return
    rate, floor_eff = ctx.rate, ctx.state["floor_eff"]
    claimed = n.get("floor_claimed", floor)
    # the rate is claimed down to max(floor_eff, the lowest loss sampled in the region), and every
    # evidence point inside the region was sampled there
    inside = [e for e in points if e["distance"] <= radius * (1 + 1e-12) and e["loss"] <= L0 * (1 + 1e-12)]
    low = max(floor_eff, min((e["loss"] for e in inside if e["loss"] >= floor_eff), default=math.inf))
    if claimed is None or not claimed < L0:
        ctx.reject(f"rate: claimed down to {claimed!r}, at or above L0 = {L0!r}: a vacuous claim "
                   f"(the spec's floor is {floor!r})")
    elif not (floor_eff * (1 - TOLERANCE) <= claimed <= low * (1 + ctx.point_tolerance(low))):
        ctx.reject(f"rate: claimed down to {claimed!r}; the evidence gives a floor between {floor_eff!r} "
                   f"and {low!r}")
    if rate is not None and hasattr(rate, "K"):
        p0 = ctx.state.get("p0")
        k0 = None if p0 is None else kl_value(ctx.problem.loss_def, rate.phi, L0, p0.rayleigh,
                                              point_M(ctx.problem, p0.sample_max))
        if k0 is not None and math.isfinite(k0) and not rate.K > ZERO_MU * k0:
            ctx.reject(f"K = {rate.K!r} is about 0 (at most {ZERO_MU:g} K(theta0) = {ZERO_MU * k0!r}): no rate follows")
        step, beta = getattr(rate, "step", None), getattr(rate, "smoothness", None)
        if step is not None and not (beta is not None and step <= 1 / beta):
            ctx.reject(f"rate: its step {step!r} exceeds 1/beta (beta = {beta!r})")
    if witness is None:
        ctx.reject("a certified sampled certificate needs its witness")
    if ctx.state.get("auto"):
        reach = max([e["distance"] for e in inside] + [1e-8 * (1 + float(ctx.problem.theta0.norm()))])
        limit = AUTO_GROWTH * max(n["rho"] if n["rho"] is not None else 0.0, reach) * (1 + TOLERANCE)
        if not radius <= limit:
            ctx.reject(f"radius {radius!r} (radius=auto) is larger than the search can have chosen: at most "
                       f"{AUTO_GROWTH:g} times the largest of rho = {n['rho']!r} and the farthest evidence point "
                       f"({reach!r}), {limit!r}")


def check_numbers(cert: dict, ctx: VerifyContext) -> None:
    n = ctx.numbers
    evidence = cert["evidence"]
    points = [e for e in evidence if e["kind"] in ("sampled-point", "kernel-point")]
    witnesses = [e for e in evidence if e["kind"] == "witness"]
    if len(witnesses) > 1:
        ctx.reject(f"{len(witnesses)} witness entries; a sampled certificate has one")
    _spec_claims(cert, ctx)
    _verdict_claims(cert, ctx, points, witnesses[0] if len(witnesses) == 1 else None)
    floor_eff = ctx.state["floor_eff"]
    # only sampled Rayleigh quotients bound mu and K; a kernel point's lambda_min is a lower bound
    # on R, which the engine reports but never takes as mu
    inside = [e for e in points if e["kind"] == "sampled-point"
              and e["distance"] <= n["radius"] * (1 + 1e-12)
              and floor_eff <= e["loss"] <= n["L0"] * (1 + 1e-12)]
    M = n.get("sample_bound")
    if M is not None:
        over = [e for e in points if "sample_max" in e and e["sample_max"] > M * (1 + ctx.point_tolerance(e["loss"]))]
        if over:
            ctx.reject(f"numbers: sample_bound {M!r} is below the largest per-sample loss {over[0]['sample_max']!r} "
                       "of an evidence point")
    mu = n.get("mu")
    if mu is not None:
        marked = [e for e in points if "mu" in (e.get("roles") or [])]
        if not marked:
            ctx.reject("mu: no evidence point is marked as the one that gave mu")
        elif not close(marked[0].get("value"), mu, abs_tol=ctx.abs_r):
            ctx.reject(f"mu = {mu!r} is not the value {marked[0].get('value')!r} at the point that gave it")
        low = min((e["value"] for e in inside), default=math.inf)
        if low < mu * (1 - TOLERANCE) - ctx.abs_r:
            ctx.reject(f"mu = {mu!r} is larger than the value {low!r} at an evidence point inside the region")
    rate = ctx.rate
    if rate is not None:
        if not close(getattr(rate, "initial", None), n["L0"]):
            ctx.reject("rate: its L0 is not the recomputed L0")
        # the rate is claimed down to the spec's floor, or to the higher effective floor the
        # sampled points reached (never below the spec's floor)
        claimed = n.get("floor_claimed", n["floor"])
        if not (claimed is not None and claimed >= n["floor"] and close(getattr(rate, "floor", None), claimed)):
            ctx.reject("rate: its floor is neither the spec's floor nor an effective floor above it")
        if hasattr(rate, "K") and n.get("K") is not None and not close(rate.K, n["K"]):
            ctx.reject(f"rate: K = {rate.K!r} is not the certificate's K = {n['K']!r}")
        if hasattr(rate, "K"):
            marked = [e for e in points if "K" in (e.get("roles") or [])]
            M = n.get("sample_bound")
            M = math.inf if M is None else M

            def M_at(e):     # the point's own M (a certificate without it: the largest one, M above)
                return point_M(ctx.problem, e["sample_max"]) if "sample_max" in e else M
            if marked:
                k = kl_value(ctx.problem.loss_def, ctx.phi, marked[0]["loss"], marked[0]["value"], M_at(marked[0]))
                if k is not None and not close(k, rate.K):
                    ctx.reject(f"K = {rate.K!r} is not the value {k!r} at the point that gave it")
            for e in inside:
                k = kl_value(ctx.problem.loss_def, ctx.phi, e["loss"], e["value"], M_at(e))
                if k is not None and k < rate.K * (1 - TOLERANCE):
                    ctx.reject(f"K = {rate.K!r} is larger than the value {k!r} at an evidence point")
                    break
        elif hasattr(rate, "mu") and not close(rate.mu, mu):
            ctx.reject("rate: its mu is not the certificate's mu")
        formula = cert["rate"].get("formula")
        if formula is not None and rate.formula() != formula:
            ctx.reject(f"rate: the formula {formula!r} is not the rebuilt {rate.formula()!r}")
        for point in cert["rate"].get("curve") or []:
            t, b = point
            if not close(rate.bound(t), b):
                ctx.reject(f"rate: bound({t!r}) = {rate.bound(t)!r}, the certificate's curve says {b!r}")
                break
        rho = recompute_rho(rate, n["L0"], n["floor"])
        if rho is not None:
            if not close(rho, n.get("rho")):
                ctx.reject(f"rho = {n.get('rho')!r}, recomputed from the rate: {rho!r}")
            if cert["verdict"] == "certified" and not rho <= n["radius"]:
                ctx.reject(f"rho = {rho!r} exceeds the radius {n['radius']!r}")
    if cert.get("failing_kind") == "critical-point":
        r0 = ctx.r0 if ctx.r0 is not None else math.inf
        zero = [e for e in inside if e.get("rayleigh") is not None
                and e["rayleigh"] <= ZERO_MU * r0]
        if not zero:
            ctx.reject("a critical-point refutation needs an evidence point inside the region, above the "
                       f"floor, with R about 0 (at most {ZERO_MU:g} R(theta0))")
    if cert["verdict"] == "certified":
        if n["L0"] > n["floor"] and rate is None:
            ctx.reject("a certified certificate has no rate")
        if n["L0"] > n["floor"] and not (mu is not None and mu > 0):
            ctx.reject("a certified certificate needs mu > 0")
        if n.get("rho") is None and n["L0"] > n["floor"]:
            ctx.reject("a certified certificate needs a finite rho")
        elif n.get("rho") is not None and not n["rho"] <= n["radius"]:
            ctx.reject(f"rho = {n['rho']!r} exceeds the radius {n['radius']!r}")


VERIFIERS = {"sampled-point": _verify_sampled, "kernel-point": _verify_kernel, "witness": _verify_witness}
