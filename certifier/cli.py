"""The `certify` command (also `python -m certifier`).

    certify SPEC... [--format text|json|jsonl|sarif|junit|github] [--fail-on inconclusive|refuted]
                    [--budget SECONDS] [--no-cache] [--cache-dir DIR] [--emit CERT.json]
                    [--allow-python] [--quiet] [--max-params N] [--device cpu|cuda] [--debug]
                    [--workers N] [--scheduler ADDRESS]
    certify check CERT.json          re-verify a certificate written by --emit
    certify study SPEC... --plot F   gradient descent beyond the witness, loss curves and bounds (F.png, F.svg)
    certify --explain CODE|KIND      what a diagnostic code or a failing-region kind means

A SPEC is a file, a directory (every *.rq below it, sorted; hidden folders skipped) or a glob.
Exit codes: 0 certified, 1 refuted, 2 spec or usage error, 3 inconclusive, 4 internal error,
130 interrupted; over several specs the worst, 4 > 2 > 1 > 3 > 0 (docs/output.md).
`main(argv)` returns the exit code (it never calls sys.exit), so it can be run in-process; the
console script and __main__ pass it to sys.exit.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

from . import __version__

EXIT_USAGE = 2
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130

FORMATS = ("text", "json", "jsonl", "sarif", "junit", "github")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="certify",
        description="Certify a gradient-flow convergence rate L(θt) ≤ L0·exp(−4μt) for the model, "
                    "data, loss and region described by .rq specs. `certify check CERT.json` "
                    "re-verifies a certificate written by --emit.",
        epilog="exit codes: 0 certified, 1 refuted, 2 spec or usage error, 3 inconclusive, "
               "4 internal error, 130 interrupted; with several specs, the worst: "
               "4 > 2 > 1 > 3 > 0. In this version μ is a sampled estimate: "
               "results are labelled ESTIMATE (not a proof).",
    )
    p.add_argument("specs", metavar="SPEC", nargs="*",
                   help="spec files, directories (every *.rq below, sorted) or globs")
    p.add_argument("--format", choices=FORMATS, default="text",
                   help="report format on stdout (default: text)")
    p.add_argument("--fail-on", choices=("inconclusive", "refuted"), default="inconclusive",
                   help="inconclusive (default): refuted exits 1 and inconclusive 3; refuted: "
                        "inconclusive results exit 0")
    p.add_argument("--budget", type=_positive_float, default=None, metavar="SECONDS",
                   help="time per spec; when it runs out the verdict is inconclusive")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write .certify_cache/")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="where the cache lives (default: $CERTIFY_CACHE_DIR or ./.certify_cache)")
    p.add_argument("--emit", default=None, metavar="CERT",
                   help="write the certificate of the (single) spec to CERT (JSON); see `certify check`")
    p.add_argument("--allow-python", action="store_true",
                   help="allow model torch(\"package.module:Name\") to import Python code")
    p.add_argument("--explain", default=None, metavar="ID",
                   help="explain a diagnostic code (E103) or a failing-region kind (critical-point)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display on stderr")
    p.add_argument("--max-params", type=_positive_int, default=None, metavar="N",
                   help="refuse problems with more than N parameters (default: 10^8)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where to evaluate the model (default: cpu)")
    p.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                   help="evaluate the sampled engine's batches and the sound mode's boxes in N local processes "
                        "(same numbers as one)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="evaluate them on a dask.distributed scheduler, e.g. tcp://host:8786 "
                        "(pip install 'dask[distributed]')")
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


def print_summary(outcomes, fail_on: str) -> None:
    from .report.summary import render_summary, summary_plain

    if _is_tty(sys.stdout):
        from rich.console import Console

        render_summary(outcomes, Console(file=sys.stdout, highlight=False), fail_on)
    else:
        sys.stdout.write(summary_plain(outcomes, PLAIN_WIDTH, fail_on))
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


def _source_for(diag_path: str, spec_path: str, source: str | None) -> str | None:
    """The spec text, when a diagnostic points into the spec (and not into a data file it names)."""
    if diag_path in (spec_path, "<spec>", "<string>"):
        return source
    try:
        return source if os.path.samefile(diag_path, spec_path) else None
    except OSError:
        return None


# --- which specs ------------------------------------------------------------------------------------

_GLOB = set("*?[")


def _hidden(path: Path, root: Path) -> bool:
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = path.parts
    return any(part.startswith(".") and part not in (".", "..") for part in parts[:-1])


def expand_specs(arguments: list[str]) -> tuple[list[tuple[str, str | None]], bool]:
    """[(path, problem)] in order (problem: why nothing was found for an argument), and whether
    the command names several specs (a directory, a glob or more than one argument): then json
    prints an array and text a summary table."""
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    multi = len(arguments) > 1

    def add(path: str) -> None:
        key = os.path.normcase(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            out.append((path, None))

    for arg in arguments:
        if os.path.isdir(arg):
            multi = True
            root = Path(arg)
            found = sorted(str(p) for p in root.rglob("*.rq") if p.is_file() and not _hidden(p, root))
            if not found:
                out.append((arg, f"no .rq spec under '{arg}'"))
            for path in found:
                add(path)
        elif _GLOB & set(arg) and not os.path.exists(arg):
            multi = True
            found = sorted(p for p in glob.glob(arg, recursive=True) if os.path.isfile(p))
            if not found:
                out.append((arg, f"no spec matches '{arg}'"))
            for path in found:
                add(path)
        else:
            add(arg)
    return out, multi


# --- one spec ---------------------------------------------------------------------------------------

class _Interrupted(Exception):
    def __init__(self, outcome):
        self.outcome = outcome


def _partial(reporter) -> dict | None:
    """What the pipeline knew when it stopped (it sets reporter.partial), or None."""
    try:
        return reporter.partial()
    except Exception:   # no callback yet (stopped before the loss was computed) or a broken state
        return None


def partial_result(path: str, source: str | None, kind: str, message: str, suggestion: str,
                   seconds: float, reporter=None, partial: dict | None = None):
    """An inconclusive Result for a run that stopped early (budget, Ctrl-C) before the engine
    could build one: the title, the phase that was running and the phases that completed."""
    from .diagnostics import SpecError
    from .parse import parse
    from .report.outcome import statement_span
    from .report.result import FailingRegion, Result

    title = Path(path).stem
    if source is not None:
        try:
            title = parse(source, path).title or title
        except SpecError:
            pass
    span = statement_span(source, "method") or statement_span(source, "model")
    notes = ["partial result: the analysis stopped before any verdict; nothing is certified"]
    completed = list(getattr(reporter, "completed", []) or [])
    if completed:
        notes.append("phases completed: " + ", ".join(completed))
    partial = partial or {}
    if partial.get("smallest_R_so_far") is not None:
        notes.append(f"the smallest R found before stopping was {partial['smallest_R_so_far']:.4g} at "
                     f"{partial['points']} points (sampled: an upper estimate of inf R, not a bound)")
    return Result(
        spec=path, title=title, verdict="inconclusive", sound=False, method={}, loss=partial.get("loss", {}),
        desingularizer={}, mu=None, mu_source=None, mu_sources=[], region={}, rate={}, witness=None,
        failing_region=FailingRegion(
            kind=kind, message=message, suggestion=suggestion, points=[],
            span=None if span is None else {"line": span.line, "column": span.column,
                                            "end_line": span.end_line, "end_column": span.end_column},
            numbers={"seconds": seconds}),
        diagnostics=[], problem=partial.get("problem", {}), timing={"total": seconds}, notes=notes)


def _cache_options(args) -> dict:
    return {"device": args.device, "threads": None, "max_params": args.max_params,
            "allow_python": bool(args.allow_python), "spec_path": None}


def run_one(path: str, args, cache) -> "Outcome":
    from . import pipeline
    from .diagnostics import Diagnostic, SpecError
    from .progress import BudgetExceeded, make_reporter, with_deadline
    from .report.outcome import Outcome

    t0 = time.perf_counter()
    try:
        source = _read_source(path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        _err(f"certify: error: cannot read '{path}': {reason}")
        code = "E201" if isinstance(exc, FileNotFoundError) else "E202"
        return Outcome(path, diagnostics=[Diagnostic(code, f"cannot read '{path}': {reason}", path=path)],
                       seconds=time.perf_counter() - t0)

    material = None
    if cache is not None:
        from .cache import key_material

        options = _cache_options(args)
        options["spec_path"] = path
        material = key_material(path, source, options)
        if material is not None and args.emit is None:
            hit = cache.load(material)
            if hit is not None:
                hit.notes = list(hit.notes) + ["read from the cache (.certify_cache/); run with --no-cache to recompute"]
                return Outcome(path, result=hit, source=source, seconds=time.perf_counter() - t0, cached=True)

    deadline = time.monotonic() + args.budget if args.budget is not None else None
    reporter = with_deadline(make_reporter(not args.quiet), deadline, args.budget)
    options = pipeline.RunOptions(reporter=reporter, device=args.device)
    # fields the pipeline may not have yet are set only when it has them
    for name, value in (("deadline", deadline), ("allow_python", bool(args.allow_python)),
                        ("workers", args.workers), ("scheduler", args.scheduler)):
        if hasattr(options, name):
            setattr(options, name, value)
    if args.max_params is not None:
        options.max_params = args.max_params
    try:
        result = pipeline.run_file(path, options)
    except SpecError as exc:
        return Outcome(path, diagnostics=exc.diagnostics, source=source, seconds=time.perf_counter() - t0)
    except BudgetExceeded as exc:
        seconds = time.perf_counter() - t0
        where = f" during '{exc.phase}'" if exc.phase else ""
        result = partial_result(path, source, "budget",
                                f"the budget of {args.budget:g} s ran out{where}",
                                "raise --budget, lower samples= in the method statement, or shrink the problem",
                                seconds, reporter, _partial(reporter))
        return Outcome(path, result=result, source=source, seconds=seconds)
    except KeyboardInterrupt:
        seconds = time.perf_counter() - t0
        phase = reporter.stopped_in or reporter.current
        where = f" during '{phase}'" if phase else ""
        result = partial_result(path, source, "interrupted", f"interrupted{where} after {seconds:.3g} s",
                                "run certify again and let it finish (or give it a --budget)", seconds, reporter,
                                _partial(reporter))
        raise _Interrupted(Outcome(path, result=result, source=source, seconds=seconds)) from None
    except Exception as exc:
        if args.debug:
            raise
        message = f"{type(exc).__name__}: {exc}".rstrip().rstrip(":")
        _err(f"certify: internal error: {message}")
        _err("please report this; rerun with --debug for the traceback")
        return Outcome(path, source=source, seconds=time.perf_counter() - t0, internal=message)
    outcome = Outcome(path, result=result, source=source, seconds=time.perf_counter() - t0)
    if cache is not None and material is not None:
        cache.store(material, result)
    if args.emit is not None:
        _emit(result, path, source, args)
    return outcome


def _emit(result, path: str, source: str, args) -> None:
    from .certificate import CertificateError, emit

    try:
        emit(result, path, source, args.emit, allow_python=bool(args.allow_python), device=args.device)
    except CertificateError as exc:
        _err(f"certify: error: --emit: {exc}")


# --- output -----------------------------------------------------------------------------------------

class _Printer:
    """Prints each outcome as it completes (text, jsonl) and everything else at the end."""

    def __init__(self, args, multi: bool):
        self.args = args
        self.multi = multi
        self.outcomes = []

    def add(self, outcome) -> None:
        self.outcomes.append(outcome)
        fmt = self.args.format
        if fmt == "text":
            if outcome.result is not None:
                if self.multi and len(self.outcomes) > 1:
                    _write_out("")
                print_report(outcome.result, outcome.source)
            elif outcome.internal is None and outcome.source is not None:
                from .diagnostics import render_text as render_diagnostic

                blocks = [render_diagnostic(d, _source_for(d.path, outcome.spec, outcome.source))
                          for d in outcome.diagnostics]
                _err("\n\n".join(blocks))
        elif fmt == "jsonl":
            from .report.json import outcomes_jsonl

            _write_out(outcomes_jsonl([outcome]))

    def finish(self) -> None:
        fmt, outcomes = self.args.format, self.outcomes
        if fmt == "text":
            if self.multi:
                print_summary(outcomes, self.args.fail_on)
        elif fmt == "json":
            from .report.json import outcome_dict, outcomes_json, _dumps

            if self.multi:
                _write_out(outcomes_json(outcomes))
            elif outcomes:
                _write_out(_dumps(outcome_dict(outcomes[0])))
        elif fmt == "sarif":
            from .report.sarif import render_sarif

            _write_out(render_sarif(outcomes))
        elif fmt == "junit":
            from .report.junit import render_junit

            _write_out(render_junit(outcomes, self.args.fail_on))
        elif fmt == "github":
            from .report.github import render_github

            text = render_github(outcomes, self.args.fail_on)
            if text:
                _write_out(text)


def _explain(ident: str) -> int:
    from .explain import known, lookup

    e = lookup(ident)
    if e is None:
        _err(f"certify: error: --explain: unknown code or kind '{ident}'; known: {', '.join(known())}")
        return EXIT_USAGE
    sys.stdout.write(e.render())
    sys.stdout.flush()
    return 0


def _cache_for(args):
    if args.no_cache:
        return None
    from .cache import CACHE_DIR, Cache

    return Cache(args.cache_dir or os.environ.get("CERTIFY_CACHE_DIR") or CACHE_DIR)


def environment_problem(device: str = "cpu", scheduler: str | None = None) -> str | None:
    """Why --device or --scheduler cannot be used on this machine (a usage error, exit 2), or None.
    The scheduler is reached once here, before any spec runs."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "--device cuda: no CUDA device is available (use --device cpu)"
    if scheduler:
        from .analyse.parallel import connect

        try:
            connect(scheduler).close()
        except RuntimeError as exc:
            return str(exc)
    return None


def _run(args, parser) -> int:
    from .report.outcome import Outcome, run_exit_code
    from .diagnostics import Diagnostic

    if args.explain is not None:
        return _explain(args.explain)
    if not args.specs:
        parser.print_usage(sys.stderr)
        _err("certify: error: give at least one SPEC (a file, a directory or a glob)")
        return EXIT_USAGE
    problem = environment_problem(args.device, args.scheduler)
    if problem is not None:
        _err(f"certify: error: {problem}")
        return EXIT_USAGE
    specs, multi = expand_specs(args.specs)
    if args.emit is not None and (multi or len(specs) != 1):
        _err("certify: error: --emit writes the certificate of one spec; give exactly one SPEC file")
        return EXIT_USAGE

    cache = _cache_for(args)
    printer = _Printer(args, multi)
    try:
        for path, problem in specs:
            if problem is not None:
                _err(f"certify: error: {problem}")
                printer.add(Outcome(path, diagnostics=[Diagnostic("E201", problem, path=path)]))
                continue
            printer.add(run_one(path, args, cache))
    except _Interrupted as stop:
        _err("certify: interrupted")
        try:
            printer.add(stop.outcome)
            printer.finish()
        except (BrokenPipeError, KeyboardInterrupt):
            _silence_stdout()
        return EXIT_INTERRUPTED
    except BrokenPipeError:            # the reader went away (`certify x.rq | head`): keep the verdict
        _silence_stdout()
        return run_exit_code(printer.outcomes, args.fail_on)
    try:
        printer.finish()
    except BrokenPipeError:
        _silence_stdout()
    return run_exit_code(printer.outcomes, args.fail_on)


def _silence_stdout() -> None:
    """After a broken pipe (`certify x.rq | head`), send further output (and the flush at exit) nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "check":
        _safe_streams()
        from .certificate import main_check

        return main_check(argv[1:])
    if argv and argv[0] == "study":     # certify study SPEC... --plot FILE (certifier/study.py)
        _safe_streams()
        from .study import main_study

        return main_study(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:          # usage errors (2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    _safe_streams()
    try:
        return _run(args, parser)
    except KeyboardInterrupt:
        _err("certify: interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        _err(f"certify: internal error: {type(exc).__name__}: {exc}".rstrip().rstrip(":"))
        _err("please report this; rerun with --debug for the traceback")
        return EXIT_INTERNAL
