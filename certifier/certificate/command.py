"""`certify check CERT.json`: re-verify a certificate written by `certify --emit`. The certificate
may come from anyone (a pull request): nothing in it is trusted, and no Python code of its spec is
imported unless the user passes --allow-python."""
from __future__ import annotations

import sys

from ..diagnostics import SpecError
from ..diagnostics import render_text as render_diagnostic
from ..language.torch_modules import EXIT_HINT
from ..pipeline import environment_problem
from ..progress import interrupt_exit_code, terminate_as_interrupt
from . import verify
from .base import NOT_A_PROOF, CertificateError, check_dict


def _json(args, code: int, report=None, error: str | None = None) -> int:
    """--format json: the check's object on stdout (the text messages still go to stderr)."""
    if getattr(args, "format", "text") == "json":
        from ..report.json import _dumps

        sys.stdout.write(_dumps(check_dict(args.certificate, code, report, error)) + "\n")
    return code


def _source(path: str | None) -> str | None:
    """The spec's text, for a diagnostic's source line (None when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", errors="replace")
    except (OSError, TypeError):
        return None


def build_parser():
    """The options of `certify check` (also read by `certify --completion`)."""
    import argparse

    p = argparse.ArgumentParser(prog="certify check",
                                description="Re-verify a certificate written by certify --emit, "
                                            "without searching. " + NOT_A_PROOF + ".",
                                epilog="exit codes: 0 valid, 1 rejected, 2 unreadable or malformed certificate "
                                       "or usage error, 4 internal error")
    p.add_argument("certificate", metavar="CERT")
    p.add_argument("--allow-python", action="store_true",
                   help="import the Python module of a spec's model torch(\"pkg.mod:Name\"), which runs its code "
                        "(refused without this flag)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="json: one object (certifier/schemas/check.schema.json) on stdout; exit codes unchanged")
    p.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    return p


def main_check(argv: list[str]) -> int:
    """`certify check CERT.json [--allow-python] [--device cpu|cuda] [--debug]`: 0 valid, 1 rejected,
    2 unreadable/malformed certificate or usage, 4 internal error."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    problem = environment_problem(args.device)
    if problem is not None:
        sys.stderr.write(f"certify check: error: {problem}\n")
        return _json(args, 2, error=problem)
    try:
        with terminate_as_interrupt():      # SIGTERM as Ctrl-C: a message and exit 143, no traceback
            report = verify(args.certificate, args.device, allow_python=args.allow_python)
    except CertificateError as exc:
        sys.stderr.write(f"certify check: error: {exc}\n")
        return _json(args, 2, error=str(exc))
    except SpecError as exc:          # the spec's own code stopped the check (E302): no verdict on the certificate
        sys.stderr.write("\n\n".join(render_diagnostic(d, _source(d.path)) for d in exc.diagnostics) + "\n")
        return _json(args, 2, error="; ".join(f"{d.code}: {d.message}" for d in exc.diagnostics))
    except SystemExit as exc:         # sys.exit() in the model's Python code while it was replayed
        message = f"the spec's Python model called sys.exit({exc.code!r}) while the certificate was checked"
        sys.stderr.write(f"certify check: error[E302]: {message}\n  = hint: {EXIT_HINT}\n")
        return _json(args, 2, error=f"E302: {message}")
    except KeyboardInterrupt as exc:
        sys.stderr.write("certify check: interrupted\n")
        return interrupt_exit_code(exc)
    except Exception as exc:          # a bug in certify, not in the certificate (see certify's exit 4)
        if args.debug:
            raise
        sys.stderr.write(f"certify check: internal error: {type(exc).__name__}: {exc}\n".replace(": \n", "\n"))
        sys.stderr.write("please report this; rerun with --debug for the traceback\n")
        return _json(args, 4, error=f"internal error: {type(exc).__name__}: {exc}")
    if args.format == "json":
        return _json(args, 0 if report.ok else 1, report)
    if report.ok:
        summary = report.summary or f"{report.points} evidence points recomputed"
        sys.stdout.write(f"certificate valid: {report.spec}: {report.verdict} "
                         f"({summary}, {report.seconds:.2f} s)\n")
        if report.vacuous:
            sys.stdout.write(f"VACUOUS: {report.vacuous}\n")
        sys.stdout.write(f"note: {report.note}\n")
        return 0
    sys.stdout.write(f"certificate REJECTED: {report.spec}\n")
    for problem in report.problems:
        sys.stdout.write(f"  - {problem}\n")
    return 1
