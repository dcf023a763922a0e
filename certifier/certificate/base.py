"""What every certificate shares: its format, the helpers that recompute its numbers, the header
and the context the verifiers of its evidence share (certifier/certificate/__init__.py)."""
from __future__ import annotations

import hashlib
import inspect
import json
import math
from dataclasses import dataclass, field

from .. import check as check_stage
from ..analyse.threads import choose as choose_threads
from ..cache import loaded_files, sha256_file
from ..compile.problem import Problem, problem_device
from ..compose.confinement import path_length_bound
from ..parse import parse
from ..report.json import SCHEMA_VERSION
from ..report.load import _make_phi
from ..version import __version__

FORMAT = "certify-certificate/1"
TOLERANCE = 1e-9
# the relative rounding level of L and R at loss L is about R_ROUNDING sqrt(L0 / L)
# (VerifyContext.point_tolerance): 64 unit roundoffs; 7e-15 at L = L0 (TOLERANCE applies), 7e-7 at the
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


def finite(x):
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def compile_spec(spec_path: str, source: str, allow_python: bool, device: str):
    """parse -> check -> Problem, with the pipeline's thread rule (so numbers match the run)."""


    spec = parse(source, spec_path)
    kwargs = {"allow_python": True} if allow_python else {}
    checked = check_stage.check(spec, **kwargs)
    problem = Problem(checked, problem_device(checked, device))
    choose_threads(problem)
    return checked, problem


def loaded(spec_path: str, source: str, allow_python: bool) -> list[dict]:
    files = loaded_files(spec_path, source, allow_python) or []
    return [{"name": name, "sha256": sha256_file(path)} for name, path in files]


def point_M(problem, sample_max: float) -> float:
    """M in G(L, M) at a point: its largest per-sample loss where the loss needs one, else inf."""
    return float(sample_max) if problem.loss_def.needs_sample_bound else math.inf


def phi_of(result):
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
    """ρ for the rebuilt rate, by compose.confinement.path_length_bound; with a step, as
    compose.sampled does it with the rate's smoothness β (inf when η > 1/β)."""

    params = list(inspect.signature(path_length_bound).parameters)
    step = getattr(rate, "step", None)
    if step is not None:
        beta = getattr(rate, "smoothness", None)
        if beta is None or not beta > 0:
            return None
        if step > 1 / beta:
            return math.inf
        return path_length_bound(rate.phi, rate.K, L0, floor, step, beta, last_step=step * math.sqrt(4 * beta * L0))
    if "K" in params:
        return path_length_bound(rate.phi, rate.K, L0, floor)
    return path_length_bound(rate.phi, rate.constant, rate.mu, L0, floor)


def header(result, spec_path: str, source: str, allow_python: bool) -> dict:
    """The fields every certificate starts with, whatever its method."""
    f = result.failing_region
    return {
        "format": FORMAT,
        # the version of certifier/schemas/certificate.schema.json (FORMAT is what check accepts)
        "schema_version": SCHEMA_VERSION,
        "certify_version": __version__,
        "spec": {"path": spec_path, "sha256": sha256_text(source)},
        "files": loaded(spec_path, source, allow_python),
        "allow_python": bool(allow_python),
        "verdict": result.verdict,
        "sound": bool(result.sound),
        "failing_kind": f.kind if f is not None else None,
        "method": result.method,
    }


@dataclass
class VerifyContext:
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
    vacuous: str | None = None     # why a valid certificate's claim says nothing (floor >= L0)
    claims: dict = field(default_factory=dict)   # what the check re-derived (claims_of)


# the numbers of a certificate that `certify check` re-derives from the spec and the evidence
CLAIMED_NUMBERS = ("L0", "L0_upper", "mu", "K", "c", "floor", "floor_effective", "floor_claimed", "radius",
                   "region", "rho", "horizon")


def claims_of(cert: dict, ctx: VerifyContext | None = None) -> dict:
    """The claims a check speaks about, for `certify check --format json`: the certificate's verdict,
    failing kind, method, numbers and rate formula, with L0 and floor_effective replaced by their
    recomputed values once the spec was compiled (ctx). A valid check means every other number
    agreed with its recomputation (docs/output.md, "Claims re-derived by certify check")."""
    numbers = cert.get("numbers") or {}
    out = {"verdict": cert.get("verdict"), "sound": cert.get("sound"), "failing_kind": cert.get("failing_kind"),
           "method": (cert.get("method") or {}).get("name"),
           "numbers": {k: numbers[k] for k in CLAIMED_NUMBERS if k in numbers},
           "rate": (cert.get("rate") or {}).get("formula")}
    if ctx is not None:
        p0 = ctx.state.get("p0")
        if p0 is not None:
            out["numbers"]["L0"] = finite(p0.loss)
        if "floor_eff" in ctx.state:
            out["numbers"]["floor_effective"] = ctx.state["floor_eff"]
    return out


def check_dict(cert_path: str, exit_code: int, report: Report | None = None, error: str | None = None) -> dict:
    """The object of `certify check --format json` (certifier/schemas/check.schema.json): `check` is
    valid (exit 0), invalid (1) or error (2: unreadable or malformed; 4: internal error)."""
    check = {0: "valid", 1: "invalid"}.get(exit_code, "error")
    out = {"schema_version": SCHEMA_VERSION, "certificate": str(cert_path), "check": check,
           "exit_code": exit_code, "spec": None, "verdict": None, "claims": None, "messages": [],
           "evidence_points": None, "summary": None, "counts": {}, "seconds": None, "note": None, "vacuous": None}
    if error is not None:
        out["messages"] = [error]
    if report is not None:
        out.update(spec=report.spec, verdict=report.verdict, claims=report.claims or None,
                   messages=list(report.problems), evidence_points=report.points, summary=report.summary,
                   counts=dict(report.counts), seconds=round(report.seconds, 3), note=report.note,
                   vacuous=report.vacuous)
    return out
