"""Certificates: `certify SPEC --emit CERT.json` writes one, `certify check CERT.json` re-verifies
it without searching (docs/output.md, "Certificates").

A certificate holds the certify version, the spec's path and the sha256 of its text and of every
file it loads, the verdict, the method, the numbers (L0, μ, c, K, floor, radius, ρ, the rate's
parameters and its recorded curve) and the evidence: a list of entries, each with a `kind`,
together with their count and the sha256 of their canonical JSON (so a removed or edited entry
is noticed). For the sampled method the evidence is the lowest points of each source within the
region and above the floor (θ stored as its difference from θ0, with L and R there; the point
that gave μ and the one that gave K are marked by their `roles`) and the witness summary.

`check` re-parses the spec, compares the hashes, recomputes L0 and L, R (or the kernel's
λ_min) at every evidence point (1e-9 relative), recomputes ρ and checks ρ ≤ r, rebuilds the rate
and compares its curve, and checks that the verdict follows from these numbers. Evidence is
verified by the table VERIFIERS, keyed by kind, to which other methods add their kinds
(`register_verifier`). Re-verifying a sampled certificate re-checks its numbers; it does not
turn the estimate into a proof: a point the search never visited can still have a smaller R.

A `method interval` result (the sound mode) has its own builder and final check, registered by
method name (BUILDERS, FINAL_CHECKS) from certifier/analyse/sound/replay.py: its evidence is the
proof's split tree and leaves, and `check` replays the proof without search.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from . import __version__

FORMAT = "certify-certificate/1"
TOLERANCE = 1e-9
# the relative rounding level of L and R at loss L is about R_ROUNDING sqrt(L0 / L)
# (Context.point_tolerance): 64 unit roundoffs; 7e-15 at L = L0 (TOLERANCE applies), 7e-7 at the
# noise level L = 1e-16 L0. Measured: the engine's two-layer fast path and Problem.point differ by
# 1.0e-9 at L = 1.0e-16 L0 on specs/two_layer_tanh.rq, 1e-16 at L = L0.
R_ROUNDING = 64 * 2.0 ** -53
# a population's closed form: 0.1 loss_rounding / L, ten times its measured rounding; its numpy and
# autograd forms were measured 1.6e-5 apart at L = 6.8e-12 on specs/single_neuron_n3_log.rq, where
# this allows 3.5e-4
CLOSED_FORM_SLACK = 0.1
PER_SOURCE = 3                 # lowest points kept per source
NOT_A_PROOF = ("re-verifying a sampled certificate re-checks its numbers at the recorded points; "
               "it is not a proof that mu bounds R on the whole region")


class CertificateError(Exception):
    """A certificate cannot be written (no evidence) or read (not a certificate)."""


# --- helpers ----------------------------------------------------------------------------------------

def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def evidence_digest(evidence: list) -> str:
    return hashlib.sha256(json.dumps(evidence, sort_keys=True, separators=(",", ":"),
                                     allow_nan=False).encode("utf-8")).hexdigest()


def close(a, b, tol: float = TOLERANCE, abs_tol: float = 0.0) -> bool:
    """Equal to `tol` relative, or within `abs_tol` (R near 0 is rounding noise: its scale is
    R(theta0), so R values are compared with abs_tol = 1e-12 R(theta0))."""
    if a is None or b is None:
        return a is None and b is None
    a, b = float(a), float(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= max(tol * max(abs(a), abs(b), 1e-300), abs_tol)


def _finite(x):
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _compile(spec_path: str, source: str, allow_python: bool, device: str):
    """parse -> check -> Problem, with the pipeline's thread rule (so numbers match the run)."""
    import torch

    from . import check as check_stage
    from .compile.problem import Problem, problem_device
    from .parse import parse

    spec = parse(source, spec_path)
    kwargs = {"allow_python": True} if allow_python else {}
    checked = check_stage.check(spec, **kwargs)
    problem = Problem(checked, problem_device(checked, device))
    torch.set_num_threads(1 if problem.m * problem.n * problem.k < 4_000_000 else torch.get_num_threads())
    return checked, problem


def _loaded(spec_path: str, source: str, allow_python: bool) -> list[dict]:
    from .cache import loaded_files, sha256_file

    files = loaded_files(spec_path, source, allow_python) or []
    return [{"name": name, "sha256": sha256_file(path)} for name, path in files]


def point_M(problem, sample_max: float) -> float:
    """M in G(L, M) at a point: its largest per-sample loss where the loss needs one, else inf."""
    return float(sample_max) if problem.loss_def.needs_sample_bound else math.inf


def _phi_of(result):
    from .report.load import _make_phi

    d = result.desingularizer or {}
    return _make_phi({"name": d.get("name", "log"), "params": d.get("params") or {}})


def kl_value(loss, phi, L: float, value: float, M: float) -> float | None:
    """The KL constant a point gives: R phi'(L) G(L, M) (compose.composition), M the point's own
    largest per-sample loss for losses that need it; None when the loss table has no G."""
    floor_g = getattr(loss, "floor_g", None)
    if floor_g is None:
        return None
    return value * phi.dphi(L) * floor_g(L, M)


def recompute_rho(rate, L0: float, floor: float) -> float | None:
    """ρ for the rebuilt rate, by compose.confinement.path_length_bound (gradient flow only)."""
    from .compose.confinement import path_length_bound

    params = list(inspect.signature(path_length_bound).parameters)
    if getattr(rate, "step", None) is not None:
        return None
    if "K" in params:
        return path_length_bound(rate.phi, rate.K, L0, floor)
    return path_length_bound(rate.phi, rate.constant, rate.mu, L0, floor)


# --- emit -------------------------------------------------------------------------------------------

def build(result, spec_path: str, source: str, allow_python: bool = False, device: str = "cpu") -> dict:
    from .analyse.records import LOWER_BOUNDS
    from .pipeline import NOISE
    from .report.load import rate_parameters

    builder = BUILDERS.get((result.method or {}).get("name"))
    if builder is not None:
        return builder(result, spec_path, source, allow_python, device)
    records = result._records
    if records is None:
        raise CertificateError("the result has no evidence (it was not computed in this run)")
    f = result.failing_region
    if f is not None and f.kind in ("budget", "interrupted"):
        raise CertificateError(f"the result is partial ({f.kind}): there is nothing to certify")
    checked, problem = _compile(spec_path, source, allow_python, device)
    theta0 = problem.theta0
    loss = result.loss or {}
    L0, floor = float(loss["initial"]), float(loss.get("floor") or 0.0)
    radius = float(result.region["radius"])
    floor_eff = max(floor, NOISE * L0, getattr(problem, "loss_rounding", 0.0))   # as the pipeline
    M = loss.get("sample_bound")
    M = math.inf if M is None else float(M)
    phi = _phi_of(result)

    eligible = [i for i in range(len(records.value))
                if records.distance[i] <= radius * (1 + 1e-12)
                and floor_eff <= records.loss[i] <= L0 * (1 + 1e-12)]   # the sublevel set, as Records
    roles: dict[int, list[str]] = {}
    for src in dict.fromkeys(records.source):
        idx = sorted((i for i in eligible if records.source[i] == src and i in records.thetas),
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
                 "distance": float(delta.norm()), "loss": p.loss, "rayleigh": _finite(p.rayleigh),
                 "value": records.value[i]}
        if problem.loss_def.needs_sample_bound:
            entry["sample_max"] = records.sample_max[i]      # M(theta), as the point's KL constant used it
        if entry["kind"] == "kernel-point":
            entry["lambda_min"] = problem.kernel_lambda_min(theta)
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
        "numbers": {"L0": L0, "mu": _finite(result.mu), "c": loss.get("constant"),
                    "K": _finite(rate.get("kl_constant")) if "kl_constant" in rate else None,
                    "floor": floor, "floor_effective": floor_eff,
                    "floor_claimed": loss.get("effective_floor") if loss.get("effective_floor") is not None
                    else floor, "sample_bound": _finite(M),
                    "radius": radius, "region": result.region.get("kind"),
                    "rho": _finite(result.region.get("path_length_bound")), "horizon": rate.get("horizon")},
        "rate": {"parameters": rate_params, "formula": rate.get("formula"), "curve": rate.get("curve") or []},
        "evidence_count": len(evidence),
        "evidence_digest": evidence_digest(evidence),
        "evidence": evidence,
        "note": NOT_A_PROOF,
    }


def emit(result, spec_path: str, source: str, out_path: str, allow_python: bool = False,
         device: str = "cpu") -> dict:
    from .report.json import _encode, clean

    cert = clean(build(result, spec_path, source, allow_python, device))
    cert["evidence_digest"] = evidence_digest(cert["evidence"])   # of the JSON as written
    Path(out_path).write_text(_encode(cert, 0) + "\n", encoding="utf-8")
    return cert


# --- verify -----------------------------------------------------------------------------------------

@dataclass
class Context:
    cert: dict
    problem: object
    numbers: dict
    rate: object | None            # the rebuilt compose.rate.Rate, when the certificate has one
    phi: object | None
    problems: list[str] = field(default_factory=list)
    checked_points: int = 0
    r0: float | None = None        # R(theta0), recomputed
    state: dict = field(default_factory=dict)   # verifiers' shared state (e.g. the sound replay's model)

    @property
    def abs_r(self) -> float:
        """Absolute tolerance for R values: 1e-12 R(theta0) (rounding noise near critical points)."""
        return 1e-12 * self.r0 if self.r0 is not None and math.isfinite(self.r0) else 0.0

    def point_tolerance(self, loss) -> float:
        """Relative tolerance for L and R at a point of loss L: TOLERANCE, or their rounding level
        there when that is larger, R_ROUNDING sqrt(L0 / L). Near the noise level both are computed
        from residuals that have lost digits: rounding errors of about u |F| ~ u sqrt(L0) in the
        outputs are relative errors u sqrt(L0 / L) in the residuals, and L and R, quadratic in them,
        inherit about twice that. A population loss in closed form sums terms that cancel near a
        fit: its absolute rounding error, about loss_rounding / 100 (Problem.loss_rounding, the level
        the pipeline treats as noise), allowed ten times over: CLOSED_FORM_SLACK loss_rounding / L
        (docs/output.md, "Certificates")."""
        try:
            L = float(loss)
            ratio = float(self.numbers["L0"]) / L
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return TOLERANCE
        if not (ratio > 0 and math.isfinite(ratio)):
            return TOLERANCE
        # a closed form (population) has its own absolute rounding level: loss_rounding is 100 times
        # its measured error (compile/population.py), so 10 times that error, relative at L
        closed = CLOSED_FORM_SLACK * float(getattr(self.problem, "loss_rounding", 0.0) or 0.0) / L
        return max(TOLERANCE, R_ROUNDING * math.sqrt(ratio), closed)

    def reject(self, message: str) -> None:
        self.problems.append(message)


Verifier = Callable[[dict, Context], None]
VERIFIERS: dict[str, Verifier] = {}
# by method name: how a result becomes a certificate, and the check of its numbers after every
# evidence entry was verified (default: the sampled method's, _check_numbers)
BUILDERS: dict[str, Callable[..., dict]] = {}
FINAL_CHECKS: dict[str, Callable[[dict, Context], None]] = {}


def register_verifier(kind: str):
    """Add the verifier of an evidence kind (sound methods add theirs, e.g. leaf boxes)."""
    def wrap(fn: Verifier) -> Verifier:
        VERIFIERS[kind] = fn
        return fn
    return wrap


def register_builder(method: str):
    """Add the certificate builder of a method (result, spec_path, source, allow_python, device) -> dict."""
    def wrap(fn):
        BUILDERS[method] = fn
        return fn
    return wrap


def register_final_check(method: str):
    """Add the check of a method's numbers, run after the evidence verifiers (replaces _check_numbers)."""
    def wrap(fn):
        FINAL_CHECKS[method] = fn
        return fn
    return wrap


def _point(entry: dict, ctx: Context, name: str):
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


@register_verifier("sampled-point")
def _verify_sampled(entry: dict, ctx: Context) -> None:
    name = f"evidence '{entry.get('source')}' point"
    theta, p = _point(entry, ctx, name)
    if p is None:
        return
    tol = ctx.point_tolerance(p.loss)
    if not close(_finite(p.rayleigh), entry.get("rayleigh"), tol, abs_tol=ctx.abs_r):
        ctx.reject(f"{name}: R = {p.rayleigh!r} recomputed, the certificate says {entry.get('rayleigh')!r}")
    if not close(entry.get("value"), entry.get("rayleigh"), tol, abs_tol=ctx.abs_r):
        ctx.reject(f"{name}: its recorded value {entry.get('value')!r} is not R = {entry.get('rayleigh')!r}")


@register_verifier("kernel-point")
def _verify_kernel(entry: dict, ctx: Context) -> None:
    name = f"evidence '{entry.get('source')}' point"
    theta, p = _point(entry, ctx, name)
    if p is None:
        return
    lam = ctx.problem.kernel_lambda_min(theta)
    if not close(lam, entry.get("lambda_min"), 1e-7):
        ctx.reject(f"{name}: lambda_min = {lam!r} recomputed, the certificate says {entry.get('lambda_min')!r}")
    if not close(entry.get("value"), entry.get("lambda_min"), 1e-7):
        ctx.reject(f"{name}: its recorded value {entry.get('value')!r} is not lambda_min")


@register_verifier("witness")
def _verify_witness(entry: dict, ctx: Context) -> None:
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


def _check_numbers(cert: dict, ctx: Context) -> None:
    from .compose.rate import Rate  # noqa: F401  (the rate module must be importable)

    n = ctx.numbers
    evidence = cert["evidence"]
    points = [e for e in evidence if e.get("kind") in ("sampled-point", "kernel-point")]
    inside = [e for e in points if e.get("distance", math.inf) <= n["radius"] * (1 + 1e-12)
              and n.get("floor_effective", n["floor"]) <= e.get("loss", -1) <= n["L0"] * (1 + 1e-12)]
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
        from .pipeline import ZERO_MU

        r0 = ctx.r0 if ctx.r0 is not None else math.inf
        zero = [e for e in inside if e.get("kind") == "sampled-point" and e.get("rayleigh") is not None
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


@dataclass
class Report:
    ok: bool
    problems: list[str]
    spec: str | None = None
    verdict: str | None = None
    points: int = 0
    seconds: float = 0.0
    summary: str | None = None     # what was re-verified (default: the count of evidence points)
    counts: dict = field(default_factory=dict)   # work done by the check (e.g. rule evaluations)
    note: str = NOT_A_PROOF        # what a valid certificate means


def _resolve_spec(cert_path: str, recorded: str) -> Path | None:
    candidates = [Path(recorded)]
    if not Path(recorded).is_absolute():
        candidates.append(Path(cert_path).resolve().parent / recorded)
    for c in candidates:
        if c.is_file():
            return c
    return None


def verify(cert_path: str, device: str = "cpu") -> Report:
    """Re-verify a certificate. Raises CertificateError when the file is not a certificate."""
    from .diagnostics import SpecError
    from .report.load import _make_phi, rate_from_parameters

    t0 = time.perf_counter()
    try:
        cert = json.loads(Path(cert_path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CertificateError(f"cannot read '{cert_path}': {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CertificateError(f"'{cert_path}' is not JSON: {exc}") from None
    if not isinstance(cert, dict) or cert.get("format") != FORMAT:
        raise CertificateError(f"'{cert_path}' is not a certify certificate ({FORMAT})")
    report = Report(False, [], verdict=cert.get("verdict"))
    try:
        spec_info, numbers, evidence = cert["spec"], cert["numbers"], cert["evidence"]
        report.spec = spec_info["path"]
        for key in ("L0", "floor", "radius"):
            float(numbers[key])
        if not isinstance(evidence, list) or not isinstance(cert["rate"], dict):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        report.problems.append("the certificate lacks required fields (spec, numbers, rate, evidence)")
        return report
    problems = report.problems
    if cert.get("evidence_count") != len(evidence):
        problems.append(f"evidence: {len(evidence)} entries, the certificate says {cert.get('evidence_count')} "
                        "(an entry was removed or added)")
    if cert.get("evidence_digest") != evidence_digest(evidence):
        problems.append("evidence: its sha256 digest does not match (an entry was changed, removed or added)")
    spec_path = _resolve_spec(cert_path, spec_info["path"])
    if spec_path is None:
        problems.append(f"spec: '{spec_info['path']}' not found")
        return report
    source = spec_path.read_bytes().decode("utf-8", errors="replace")
    if sha256_text(source) != spec_info.get("sha256"):
        problems.append(f"spec: '{spec_path}' is not the certified spec (its sha256 differs)")
        return report
    allow_python = bool(cert.get("allow_python"))
    try:
        files = _loaded(str(spec_path), source, allow_python)
    except OSError as exc:
        problems.append(f"files: cannot read a file the spec loads: {exc}")
        return report
    recorded = {f["name"]: f["sha256"] for f in cert.get("files") or []}
    current = {f["name"]: f["sha256"] for f in files}
    for name in sorted(set(recorded) | set(current)):
        if recorded.get(name) != current.get(name):
            what = "is missing" if name not in current else ("is new" if name not in recorded else "changed")
            problems.append(f"files: '{name}' {what} since the certificate was written (sha256 differs)")
    if problems:
        return report
    try:
        checked, problem = _compile(str(spec_path), source, allow_python, device)
    except SpecError as exc:
        problems.append("spec: " + "; ".join(d.message for d in exc.diagnostics))
        return report
    p0 = problem.point(problem.theta0)
    if not close(p0.loss, numbers["L0"]):
        problems.append(f"L0 = {p0.loss!r} recomputed, the certificate says {numbers['L0']!r}")
    try:
        rate = rate_from_parameters((cert["rate"] or {}).get("parameters"))
    except Exception as exc:
        problems.append(f"rate: cannot rebuild it from its parameters ({type(exc).__name__}: {exc})")
        rate = None
    phi = getattr(rate, "phi", None)
    if phi is None:
        try:
            phi = _make_phi({"name": "log", "params": {}})
        except Exception:
            phi = None
    ctx = Context(cert, problem, numbers, rate, phi, r0=p0.rayleigh)
    for i, entry in enumerate(evidence):
        kind = entry.get("kind") if isinstance(entry, dict) else None
        verifier = VERIFIERS.get(kind)
        if verifier is None:
            ctx.reject(f"evidence {i}: unknown kind {kind!r}")
            continue
        verifier(entry, ctx)
    method = cert.get("method") if isinstance(cert.get("method"), dict) else {}
    FINAL_CHECKS.get(method.get("name"), _check_numbers)(cert, ctx)
    problems += ctx.problems
    report.points = ctx.checked_points
    report.summary = ctx.state.get("summary")
    report.counts = dict(ctx.state.get("counts") or {})
    report.note = ctx.state.get("note", NOT_A_PROOF)
    report.ok = not problems
    report.seconds = time.perf_counter() - t0
    return report


def main_check(argv: list[str]) -> int:
    """`certify check CERT.json [--device cpu|cuda]`: 0 valid, 1 rejected, 2 unreadable/usage."""
    import argparse

    p = argparse.ArgumentParser(prog="certify check",
                                description="Re-verify a certificate written by certify --emit, "
                                            "without searching. " + NOT_A_PROOF + ".",
                                epilog="exit codes: 0 valid, 1 rejected, 2 unreadable certificate or usage error")
    p.add_argument("certificate", metavar="CERT")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    from .cli import environment_problem

    problem = environment_problem(args.device)
    if problem is not None:
        sys.stderr.write(f"certify check: error: {problem}\n")
        return 2
    try:
        report = verify(args.certificate, args.device)
    except CertificateError as exc:
        sys.stderr.write(f"certify check: error: {exc}\n")
        return 2
    if report.ok:
        summary = report.summary or f"{report.points} evidence points recomputed"
        sys.stdout.write(f"certificate valid: {report.spec}: {report.verdict} "
                         f"({summary}, {report.seconds:.2f} s)\n"
                         f"note: {report.note}\n")
        return 0
    sys.stdout.write(f"certificate REJECTED: {report.spec}\n")
    for problem in report.problems:
        sys.stdout.write(f"  - {problem}\n")
    return 1


# evidence kinds of other methods register themselves on import (the sound mode: sound-proof,
# sound-leaf, sound-refutation)
from .analyse.sound import replay as _sound_replay  # noqa: E402,F401


def header(result, spec_path: str, source: str, allow_python: bool) -> dict:
    """The fields every certificate starts with, whatever its method."""
    f = result.failing_region
    return {
        "format": FORMAT,
        "certify_version": __version__,
        "spec": {"path": spec_path, "sha256": sha256_text(source)},
        "files": _loaded(spec_path, source, allow_python),
        "allow_python": bool(allow_python),
        "verdict": result.verdict,
        "sound": bool(result.sound),
        "failing_kind": f.kind if f is not None else None,
        "method": result.method,
    }
