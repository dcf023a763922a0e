"""`certify check CERT.json`: re-verify a certificate written by `certify --emit`."""
from __future__ import annotations

import sys

from ..pipeline import environment_problem
from . import verify
from .base import NOT_A_PROOF, CertificateError


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
