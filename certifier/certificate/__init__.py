"""Certificates: `certify SPEC --emit CERT.json` writes one, `certify check CERT.json` re-verifies
it without searching (docs/output.md, "Certificates").

A certificate holds the certify version, the spec's path and the sha256 of its text and of every
file it loads, the verdict, the method, the numbers (L0, μ, c, K, floor, radius, ρ, the rate's
parameters and its recorded curve) and the evidence: a list of entries, each with a `kind`,
together with their count and the sha256 of their canonical JSON (so a removed or edited entry
is noticed). For the sampled method the evidence is the lowest points of each source within the
region and above the floor (θ stored as its difference from θ0, with L and R there; the point
that gave μ and the one that gave K are marked by their `roles`) and the witness summary.

A certificate may come from anyone: `check` first reads it as untrusted input (schema.py: a
regular file of at most 64 MiB, JSON nested at most 32 deep, every field of the type certify
writes, finite numbers, known names; exit 2 otherwise), imports no Python code of the spec unless
the user passes --allow-python, and re-derives every claim from the spec and the evidence (the
floor, horizon, region and a given radius from the spec, a radius=auto from rho and the evidence,
the verdict and failing kind from the evidence; a floor at or above L0 is reported as vacuous).

`check` re-parses the spec, compares the hashes, recomputes L0 and L, R (or the kernel's
λ_min) at every evidence point (1e-9 relative), recomputes ρ and checks ρ ≤ r, rebuilds the rate
and compares its curve, and checks that the verdict follows from these numbers. Evidence is
verified by the table VERIFIERS, keyed by kind, merged from each method's module (sampled.py,
sound.py). Re-verifying a sampled certificate re-checks its numbers; it does not turn the
estimate into a proof: a point the search never visited can still have a smaller R.

A `method interval` result (the sound mode) has its own builder and final check, listed by
method name (BUILDERS, FINAL_CHECKS) from certifier/certificate/sound.py: its evidence is the
proof's split tree and leaves, and `check` replays the proof without search.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..diagnostics import SpecError
from ..parse import parse
from ..report.json import _encode, clean
from ..report.load import _make_phi, rate_from_parameters
from . import sampled, schema, sound
from .base import (
    FORMAT,
    NOT_A_PROOF,
    R_ROUNDING,
    CertificateError,
    Report,
    VerifyContext,
    claims_of,
    close,
    compile_spec,
    evidence_digest,
    loaded,
    sha256_text,
)

Verifier = Callable[[dict, VerifyContext], None]
# evidence kind -> its verifier; method name -> how a result becomes a certificate, and the check
# of its numbers after every evidence entry was verified (default: the sampled method's)
VERIFIERS: dict[str, Verifier] = {**sampled.VERIFIERS, **sound.VERIFIERS}
BUILDERS: dict[str, Callable[..., dict]] = {"sampled": sampled.build_sampled, "interval": sound.build_sound}
FINAL_CHECKS: dict[str, Callable[[dict, VerifyContext], None]] = {"sampled": sampled.check_numbers,
                                                                  "interval": sound.check_sound}


def build(result, spec_path: str, source: str, allow_python: bool = False, device: str = "cpu") -> dict:
    builder = BUILDERS.get((result.method or {}).get("name"), sampled.build_sampled)
    return builder(result, spec_path, source, allow_python, device)


def emit(result, spec_path: str, source: str, out_path: str, allow_python: bool = False,
         device: str = "cpu") -> dict:

    cert = clean(build(result, spec_path, source, allow_python, device))
    cert["evidence_digest"] = evidence_digest(cert["evidence"])   # of the JSON as written
    Path(out_path).write_text(_encode(cert, 0) + "\n", encoding="utf-8")
    return cert


def _resolve_spec(cert_path: str, recorded: str) -> Path | None:
    candidates = [Path(recorded)]
    if not Path(recorded).is_absolute():
        candidates.append(Path(cert_path).resolve().parent / recorded)
    for c in candidates:
        if c.is_file():
            return c
    return None


def python_target(spec_path: str, source: str) -> str | None:
    """The `model torch("mod:Net")` target of the spec, found by parsing only (nothing imported)."""
    try:
        spec = parse(source, spec_path)
    except SpecError:
        return None            # compile_spec reports it
    return getattr(spec.model, "target", None)


def refuse_python(target: str) -> CertificateError:
    module = target.split(":")[0]
    return CertificateError(f"the certified spec's model torch(\"{target}\") imports the Python module "
                            f"'{module}', which runs its code; certify check does that only with --allow-python "
                            f"(rerun with --allow-python if you trust '{module}')")


# exceptions a verifier may meet on numbers it was handed (an overflow, a singular kernel, torch
# refusing a tensor): the certificate is rejected with the reason, never a traceback
_NUMERIC = (ArithmeticError, ValueError, TypeError, KeyError, IndexError, RuntimeError)


def _guarded(what: str, call, ctx: VerifyContext) -> None:
    try:
        call()
    except _NUMERIC as exc:
        ctx.reject(f"{what}: cannot be checked ({type(exc).__name__}: {str(exc)[:200]})")


def verify(cert_path: str, device: str = "cpu", allow_python: bool = False) -> Report:
    """Re-verify a certificate. Raises CertificateError when the file is not a certificate (or not
    a well-formed one), and when it needs Python code that `allow_python` does not allow."""

    t0 = time.perf_counter()
    cert = schema.load(cert_path)                 # structure and types, before any use
    spec_info, numbers, evidence = cert["spec"], cert["numbers"], cert["evidence"]
    report = Report(False, [], spec=spec_info["path"], verdict=cert["verdict"], claims=claims_of(cert))
    problems = report.problems
    if cert["evidence_count"] != len(evidence):
        problems.append(f"evidence: {len(evidence)} entries, the certificate says {cert['evidence_count']} "
                        "(an entry was removed or added)")
    if cert["evidence_digest"] != evidence_digest(evidence):
        problems.append("evidence: its sha256 digest does not match (an entry was changed, removed or added)")
    spec_path = _resolve_spec(cert_path, spec_info["path"])
    if spec_path is None:
        problems.append(f"spec: '{spec_info['path']}' not found")
        return report
    source = schema.read_regular(str(spec_path), "spec").decode("utf-8", errors="replace")
    if sha256_text(source) != spec_info["sha256"]:
        problems.append(f"spec: '{spec_path}' is not the certified spec (its sha256 differs)")
        return report
    target = python_target(str(spec_path), source)
    if target is not None and not allow_python:
        raise refuse_python(target)
    # code runs only when both the user (--allow-python) and the certificate's run allowed it
    python = allow_python and cert["allow_python"]
    if target is not None and not python:
        problems.append(f"spec: its model torch(\"{target}\") is Python code, but the certificate was written "
                        "without --allow-python (certify could not have run it)")
        return report
    try:
        files = loaded(str(spec_path), source, python)
    except OSError as exc:
        problems.append(f"files: cannot read a file the spec loads: {exc}")
        return report
    recorded = {f["name"]: f["sha256"] for f in cert["files"]}
    current = {f["name"]: f["sha256"] for f in files}
    for name in sorted(set(recorded) | set(current)):
        if recorded.get(name) != current.get(name):
            what = "is missing" if name not in current else ("is new" if name not in recorded else "changed")
            problems.append(f"files: '{name}' {what} since the certificate was written (sha256 differs)")
    if problems:
        return report
    try:
        checked, problem = compile_spec(str(spec_path), source, python, device)
    except SpecError as exc:
        if any(d.code == "E302" for d in exc.diagnostics):   # the model's own sys.exit(): nothing was checked
            raise                                            # (certify check: exit 2, not a rejection)
        problems.append("spec: " + "; ".join(d.message for d in exc.diagnostics))
        return report
    method = cert["method"]["name"]
    if method != checked.method.name:
        problems.append(f"method: the certificate's method is '{method}', the spec's is '{checked.method.name}'")
        return report
    p0 = problem.point(problem.theta0)
    if not close(p0.loss, numbers["L0"]):
        problems.append(f"L0 = {p0.loss!r} recomputed, the certificate says {numbers['L0']!r}")
    try:
        rate = rate_from_parameters(cert["rate"]["parameters"])
    except Exception as exc:
        problems.append(f"rate: cannot rebuild it from its parameters ({type(exc).__name__}: {exc})")
        rate = None
    phi = getattr(rate, "phi", None)
    if phi is None:
        phi = _make_phi({"name": "log", "params": {}})
    ctx = VerifyContext(cert, problem, numbers, rate, phi, r0=p0.rayleigh)
    ctx.state["p0"] = p0
    for i, entry in enumerate(evidence):
        verifier = VERIFIERS.get(entry["kind"])
        if verifier is None:
            ctx.reject(f"evidence {i}: unknown kind {entry['kind']!r}")
            continue
        _guarded(f"evidence {i} ({entry['kind']})", lambda: verifier(entry, ctx), ctx)
    _guarded("the certificate's numbers", lambda: FINAL_CHECKS[method](cert, ctx), ctx)
    problems += ctx.problems
    report.points = ctx.checked_points
    report.summary = ctx.state.get("summary")
    report.counts = dict(ctx.state.get("counts") or {})
    report.note = ctx.state.get("note", NOT_A_PROOF)
    report.vacuous = ctx.state.get("vacuous")
    report.claims = claims_of(cert, ctx)
    report.ok = not problems
    report.seconds = time.perf_counter() - t0
    return report


__all__ = ["BUILDERS", "FINAL_CHECKS", "FORMAT", "NOT_A_PROOF", "R_ROUNDING", "VERIFIERS", "CertificateError", "Report",
           "VerifyContext", "build", "emit", "evidence_digest", "python_target", "verify"]
