"""The `certify` command (also `python -m certifier`).

    certify SPEC... [--format text|json|jsonl|sarif|junit|github] [--fail-on inconclusive|refuted]
                    [--budget SECONDS] [--no-cache] [--cache-dir DIR] [--emit CERT.json]
                    [--allow-python] [--quiet] [--max-params N] [--device cpu|cuda] [--debug]
                    [--workers N] [--scheduler ADDRESS] [--threads N]
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

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

from rich.console import Console

from .arguments import EXIT_USAGE, STARTED, build_parser, err, expand_specs
from .diagnostics import Diagnostic
from .diagnostics import render_text as render_diagnostic
from .explain import known, lookup
from .report.github import render_github
from .report.json import _dumps as json_dumps
from .report.json import outcome_dict, outcomes_json, outcomes_jsonl
from .report.junit import render_junit
from .report.outcome import Outcome, run_exit_code
from .report.sarif import render_sarif
from .report.summary import render_summary, summary_plain
from .report.text import render_plain, render_text

EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


PLAIN_WIDTH = 100


def print_report(result, source: str | None) -> None:
    """The text report on stdout: coloured, at the terminal's width, on a terminal; otherwise plain
    text, 100 columns wide, without trailing blanks (stable when piped or captured)."""
    if _is_tty(sys.stdout):
        render_text(result, Console(file=sys.stdout, highlight=False), source=source)
    else:
        sys.stdout.write(render_plain(result, PLAIN_WIDTH, source=source))
    sys.stdout.flush()


def print_summary(outcomes, fail_on: str) -> None:
    if _is_tty(sys.stdout):
        render_summary(outcomes, Console(file=sys.stdout, highlight=False), fail_on)
    else:
        sys.stdout.write(summary_plain(outcomes, PLAIN_WIDTH, fail_on))
    sys.stdout.flush()


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


def _source_for(diag_path: str, spec_path: str, source: str | None) -> str | None:
    """The spec text, when a diagnostic points into the spec (and not into a data file it names)."""
    if diag_path in (spec_path, "<spec>", "<string>"):
        return source
    try:
        return source if os.path.samefile(diag_path, spec_path) else None
    except OSError:
        return None


# --- output: one renderer per format, all with one signature ----------------------------------------

@dataclass(frozen=True)
class Renderer:
    """How a format prints: `each(outcome, outcomes, multi)` as each spec completes (streaming
    formats), `end(outcomes, multi, fail_on)` once all have run. Both write to stdout."""

    each: Callable[[Outcome, list, bool], None] | None = None
    end: Callable[[list, bool, str], None] | None = None


def _text_each(outcome: Outcome, outcomes: list, multi: bool) -> None:
    if outcome.result is not None:
        if multi and len(outcomes) > 1:
            _write_out("")
        print_report(outcome.result, outcome.source)
    elif outcome.internal is None and outcome.source is not None:
        blocks = [render_diagnostic(d, _source_for(d.path, outcome.spec, outcome.source))
                  for d in outcome.diagnostics]
        err("\n\n".join(blocks))


def _text_end(outcomes: list, multi: bool, fail_on: str) -> None:
    if multi:
        print_summary(outcomes, fail_on)


def _json_end(outcomes: list, multi: bool, fail_on: str) -> None:
    if multi:
        _write_out(outcomes_json(outcomes))
    elif outcomes:
        _write_out(json_dumps(outcome_dict(outcomes[0])))


def _github_end(outcomes: list, multi: bool, fail_on: str) -> None:
    text = render_github(outcomes, fail_on)
    if text:
        _write_out(text)


RENDERERS: dict[str, Renderer] = {
    "text": Renderer(each=_text_each, end=_text_end),
    "json": Renderer(end=_json_end),
    "jsonl": Renderer(each=lambda outcome, outcomes, multi: _write_out(outcomes_jsonl([outcome]))),
    "sarif": Renderer(end=lambda outcomes, multi, fail_on: _write_out(render_sarif(outcomes))),
    "junit": Renderer(end=lambda outcomes, multi, fail_on: _write_out(render_junit(outcomes, fail_on))),
    "github": Renderer(end=_github_end),
}


class _Printer:
    """Prints each outcome as it completes (text, jsonl) and everything else at the end."""

    def __init__(self, args, multi: bool):
        self.args = args
        self.multi = multi
        self.outcomes = []
        self.renderer = RENDERERS[args.format]

    def add(self, outcome) -> None:
        self.outcomes.append(outcome)
        if self.renderer.each is not None:
            self.renderer.each(outcome, self.outcomes, self.multi)

    def finish(self) -> None:
        if self.renderer.end is not None:
            self.renderer.end(self.outcomes, self.multi, self.args.fail_on)


def _explain(ident: str) -> int:
    e = lookup(ident)
    if e is None:
        err(f"certify: error: --explain: unknown code or kind '{ident}'; known: {', '.join(known())}")
        return EXIT_USAGE
    sys.stdout.write(e.render())
    sys.stdout.flush()
    return 0


def _run(args, parser, started: float) -> int:
    if args.explain is not None:
        return _explain(args.explain)
    if not args.specs:
        parser.print_usage(sys.stderr)
        err("certify: error: give at least one SPEC (a file, a directory or a glob)")
        return EXIT_USAGE
    # the analysis (and torch) loads only for a run, so that --help, --version and --explain answer at once
    from .pipeline import environment_problem
    from .runs import Interrupted, cache_for, run_one

    problem = environment_problem(args.device, args.scheduler)
    if problem is not None:
        err(f"certify: error: {problem}")
        return EXIT_USAGE
    specs, multi = expand_specs(args.specs)
    if args.emit is not None and (multi or len(specs) != 1):
        err("certify: error: --emit writes the certificate of one spec; give exactly one SPEC file")
        return EXIT_USAGE

    cache = cache_for(args)
    printer = _Printer(args, multi)
    try:
        for i, (path, problem) in enumerate(specs):
            if problem is not None:
                err(f"certify: error: {problem}")
                printer.add(Outcome(path, diagnostics=[Diagnostic("E201", problem, path=path)]))
                continue
            printer.add(run_one(path, args, cache, started=started if i == 0 else None))
    except Interrupted as stop:
        err("certify: interrupted")
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


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM (a CI job's timeout, `kill`) is handled as Ctrl-C: the partial report, exit 130."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _silence_stdout() -> None:
    """After a broken pipe (`certify x.rq | head`), send further output (and the flush at exit) nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    # the budget of the first spec counts from the process's start when this is the command itself
    started = STARTED if argv is None else time.monotonic()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "check":
        _safe_streams()
        from .certificate.command import main_check

        return main_check(argv[1:])
    if argv and argv[0] == "study":     # certify study SPEC... --plot FILE (certifier/study.py)
        _safe_streams()
        from .study import main_study

        return main_study(argv[1:])
    parser = build_parser(tuple(RENDERERS))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:          # usage errors (2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    _safe_streams()
    try:
        with terminate_as_interrupt():
            return _run(args, parser, started)
    except KeyboardInterrupt:
        err("certify: interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        err(f"certify: internal error: {type(exc).__name__}: {exc}".rstrip().rstrip(":"))
        err("please report this; rerun with --debug for the traceback")
        return EXIT_INTERNAL
