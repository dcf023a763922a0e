"""The `certify` command (also `python -m certifier`).

    certify SPEC [--format text|json] [--quiet] [--max-params N] [--device cpu|cuda] [--debug] [--version]

Exit codes: 0 certified, 1 refuted, 2 spec or usage error, 3 inconclusive, 4 internal error,
130 interrupted. `main(argv)` returns the exit code (it never calls sys.exit), so it can be run
in-process; the console script and __main__ pass it to sys.exit.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import __version__

EXIT_USAGE = 2
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="certify",
        description="Certify a gradient-flow convergence rate L(θt) ≤ L0·exp(−4μt) for the model, "
                    "data, loss and region described by a .rq spec.",
        epilog="exit codes: 0 certified, 1 refuted, 2 spec or usage error, 3 inconclusive, "
               "4 internal error, 130 interrupted. In this version μ is a sampled estimate: "
               "results are labelled ESTIMATE (not a proof).",
    )
    p.add_argument("spec", metavar="SPEC", help="the .rq spec file")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="report format on stdout (default: text)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display on stderr")
    p.add_argument("--max-params", type=_positive_int, default=None, metavar="N",
                   help="refuse problems with more than N parameters (default: 10^8)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where to evaluate the model (default: cpu)")
    p.add_argument("--debug", action="store_true", help="show the traceback of internal errors")
    p.add_argument("--version", action="version", version=f"certify {__version__}")
    return p


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


PLAIN_WIDTH = 100


def print_report(result, source: str | None) -> None:
    """The text report on stdout: coloured, at the terminal's width, on a terminal; otherwise plain
    text, 100 columns wide, without trailing blanks (stable when piped or captured)."""
    from .report.text import render_plain, render_text

    if _is_tty(sys.stdout):
        from rich.console import Console

        render_text(result, Console(file=sys.stdout, highlight=False), source=source)
    else:
        sys.stdout.write(render_plain(result, PLAIN_WIDTH, source=source))
    sys.stdout.flush()


def _err(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _write_out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _safe_streams() -> None:
    """Never die on a character the terminal's encoding lacks (μ, ρ, ✓ ...): replace it instead."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="replace")
        except (AttributeError, ValueError, OSError):
            pass


def _read_source(path: str) -> str:
    with open(path, "rb") as fh:
        data = fh.read()
    return data.decode("utf-8", errors="replace")


def _source_for(diag_path: str, spec_path: str, source: str) -> str | None:
    """The spec text, when a diagnostic points into the spec (and not into a data file it names)."""
    if diag_path in (spec_path, "<spec>", "<string>"):
        return source
    try:
        return source if os.path.samefile(diag_path, spec_path) else None
    except OSError:
        return None


def _report_spec_error(exc, args, source: str) -> None:
    from .diagnostics import render_text as render_diagnostic

    if args.format == "json":
        from .report.json import error_json

        _write_out(error_json(args.spec, exc.diagnostics))
        return
    blocks = [render_diagnostic(d, _source_for(d.path, args.spec, source)) for d in exc.diagnostics]
    _err("\n\n".join(blocks))


def _run(args) -> int:
    from .diagnostics import Diagnostic, SpecError

    try:
        source = _read_source(args.spec)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        _err(f"certify: error: cannot read '{args.spec}': {reason}")
        if args.format == "json":
            from .report.json import error_json

            code = "E201" if isinstance(exc, FileNotFoundError) else "E202"
            _write_out(error_json(args.spec, [Diagnostic(code, f"cannot read '{args.spec}': {reason}",
                                                         path=args.spec)]))
        return EXIT_USAGE

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            _err("certify: error: --device cuda: no CUDA device is available (use --device cpu)")
            return EXIT_USAGE

    from . import pipeline
    from .progress import make_reporter

    options = pipeline.RunOptions(reporter=make_reporter(not args.quiet), device=args.device)
    if args.max_params is not None:
        options.max_params = args.max_params
    try:
        result = pipeline.run_file(args.spec, options)
    except SpecError as exc:
        _report_spec_error(exc, args, source)
        return EXIT_USAGE

    try:
        if args.format == "json":
            from .report.json import to_json

            _write_out(to_json(result))
        else:
            print_report(result, source)
    except BrokenPipeError:            # the reader went away (`certify x.rq | head`): keep the verdict
        _silence_stdout()
    return result.exit_code


def _silence_stdout() -> None:
    """After a broken pipe (`certify x.rq | head`), send further output (and the flush at exit) nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:          # usage errors (2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    _safe_streams()
    try:
        return _run(args)
    except KeyboardInterrupt:
        _err("certify: interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        _err(f"certify: internal error: {type(exc).__name__}: {exc}".rstrip().rstrip(":"))
        _err("please report this; rerun with --debug for the traceback")
        return EXIT_INTERNAL
