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
verified by the table VERIFIERS, keyed by kind, merged from each method's module (sampled.py,
sound.py). Re-verifying a sampled certificate re-checks its numbers; it does not turn the
estimate into a proof: a point the search never visited can still have a smaller R.

A `method interval` result (the sound mode) has its own builder and final check, listed by
method name (BUILDERS, FINAL_CHECKS) from certifier/certificate/sound.py: its evidence is the
proof's split tree and leaves, and `check` replays the proof without search.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from ..diagnostics import SpecError
from ..report.json import _encode, clean
from ..report.load import _make_phi, rate_from_parameters
from . import sampled, sound
from .base import (
    FORMAT,
    NOT_A_PROOF,
    R_ROUNDING,
    CertificateError,
    Report,
    VerifyContext,
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


def verify(cert_path: str, device: str = "cpu") -> Report:
    """Re-verify a certificate. Raises CertificateError when the file is not a certificate."""

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
        files = loaded(str(spec_path), source, allow_python)
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
        checked, problem = compile_spec(str(spec_path), source, allow_python, device)
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
    ctx = VerifyContext(cert, problem, numbers, rate, phi, r0=p0.rayleigh)
    for i, entry in enumerate(evidence):
        kind = entry.get("kind") if isinstance(entry, dict) else None
        verifier = VERIFIERS.get(kind)
        if verifier is None:
            ctx.reject(f"evidence {i}: unknown kind {kind!r}")
            continue
        verifier(entry, ctx)
    method = cert.get("method") if isinstance(cert.get("method"), dict) else {}
    FINAL_CHECKS.get(method.get("name"), sampled.check_numbers)(cert, ctx)
    problems += ctx.problems
    report.points = ctx.checked_points
    report.summary = ctx.state.get("summary")
    report.counts = dict(ctx.state.get("counts") or {})
    report.note = ctx.state.get("note", NOT_A_PROOF)
    report.ok = not problems
    report.seconds = time.perf_counter() - t0
    return report


__all__ = ["BUILDERS", "FINAL_CHECKS", "FORMAT", "NOT_A_PROOF", "R_ROUNDING", "VERIFIERS", "CertificateError", "Report",
           "VerifyContext", "build", "emit", "evidence_digest", "verify"]
