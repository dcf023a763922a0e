"""The `certify` command (also `python -m certifier`).

    certify SPEC... [--format text|json|jsonl|sarif|junit|github] [--report full|failures|none]
                    [-q | -v] [-o FILE] [--color auto|always|never] [--fail-on inconclusive|refuted]
                    [--budget SECONDS] [--no-cache] [--cache-dir DIR] [--emit CERT.json]
                    [--allow-python] [--max-params N] [--max-memory SIZE] [--device cpu|cuda]
                    [--debug] [--workers N] [--scheduler ADDRESS] [--threads N] [--isolated]
    certify check CERT.json          re-verify a certificate written by --emit
    certify study SPEC... --plot F   gradient descent beyond the witness, loss curves and bounds (F.png, F.svg)
    certify --explain CODE|KIND      what a diagnostic code or a failing-region kind means
    certify --completion bash|zsh|fish   a shell completion script

A SPEC is a file, a directory (every *.rq below it, sorted; hidden folders skipped), a glob or -
(stdin). Defaults come from configuration files (certifier/config.py); flags override them.
Exit codes: 0 certified, 1 refuted, 2 spec or usage error, 3 inconclusive, 4 internal error,
130 interrupted; over several specs the worst, 4 > 2 > 1 > 3 > 0 (docs/output.md).
`main(argv)` returns the exit code (it never calls sys.exit), so it can be run in-process; the
console script and __main__ pass it to sys.exit.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from rich.console import Console

from .arguments import EXIT_USAGE, STARTED, build_parser, completion_script, err, expand_specs
from .config import ConfigError, load_config
from .diagnostics import Diagnostic
from .diagnostics import render_text as render_diagnostic
from .explain import known, lookup
from .progress import Terminated
from .report.github import render_github
from .report.json import _dumps as json_dumps
from .report.json import outcome_dict, outcomes_json, outcomes_jsonl
from .report.junit import render_junit
from .report.outcome import Outcome, run_exit_code
from .report.sarif import render_sarif
from .report.summary import failed, render_lines, render_summary, row
from .report.text import render_text

EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


PLAIN_WIDTH = 100
STDIN = "<stdin>"


def use_color(choice: str | None, stream) -> bool:
    """--color (or the config's color): always and never win; auto follows NO_COLOR, then
    FORCE_COLOR (https://no-color.org, https://force-color.org), then whether `stream` is a terminal."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return _is_tty(stream)


def draw(stream, color: bool, paint: Callable[[Console], None]) -> None:
    """Run `paint` on a console over `stream`: coloured at the terminal's width (100 columns off a
    terminal) with `color`; otherwise plain text without trailing blanks (stable when piped)."""
    width = None if _is_tty(stream) else PLAIN_WIDTH
    if color:
        # explicit settings: rich would otherwise read NO_COLOR / FORCE_COLOR / TERM on its own
        paint(Console(file=stream, force_terminal=True, no_color=False, highlight=False, width=width,
                      color_system="auto" if _is_tty(stream) else "standard"))
    else:
        console = Console(file=io.StringIO(), width=width or Console(file=stream).width, color_system=None,
                          force_terminal=False, no_color=True, highlight=False, emoji=False, record=True)
        paint(console)
        stream.write("\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n")
    stream.flush()


def print_report(result, source: str | None, color: bool | None = None) -> None:
    """The text report on stdout (see `draw`)."""
    color = use_color(None, sys.stdout) if color is None else color
    draw(sys.stdout, color, lambda console: render_text(result, console, source=source))


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

@dataclass
class View:
    """What a run prints besides the format: the specs' outcomes so far, whether the command names
    several specs, --fail-on, which text reports (full | failures | none), colour, --quiet."""

    multi: bool
    fail_on: str = "inconclusive"
    report: str = "full"
    color: bool = False
    quiet: bool = False
    outcomes: list = field(default_factory=list)
    printed: bool = False          # something is on stdout already (a blank line goes before the next)


@dataclass(frozen=True)
class Renderer:
    """How a format prints: `each(outcome, view)` as each spec completes (streaming formats),
    `end(view)` once all have run. Both write to stdout."""

    each: Callable[[Outcome, View], None] | None = None
    end: Callable[[View], None] | None = None


def _wants_report(outcome: Outcome, view: View) -> bool:
    return view.report == "full" or (view.report == "failures" and failed(outcome, view.fail_on))


def _text_each(outcome: Outcome, view: View) -> None:
    if outcome.result is not None:
        if _wants_report(outcome, view):
            if view.printed:
                _write_out("")
            print_report(outcome.result, outcome.source, view.color)
            view.printed = True
    elif outcome.internal is None and outcome.source is not None:
        blocks = [render_diagnostic(d, _source_for(d.path, outcome.spec, outcome.source))
                  for d in outcome.diagnostics]
        err("\n\n".join(blocks))


def _text_end(view: View) -> None:
    outcomes = view.outcomes
    if view.quiet:                     # -q: the specs that did not pass, one line each, nothing else
        if any(failed(o, view.fail_on) for o in outcomes):
            draw(sys.stdout, view.color, lambda c: render_lines(outcomes, c, view.fail_on, only_failures=True))
        return
    if view.multi:
        if view.printed:
            _write_out("")
        draw(sys.stdout, view.color, lambda c: render_summary(outcomes, c, view.fail_on))
    elif outcomes and outcomes[0].result is not None:
        # the verdict again, last, so that it is on screen when the run ends
        if view.printed:
            _write_out("")
        draw(sys.stdout, view.color, lambda c: render_lines(outcomes, c, view.fail_on))


def _json_end(view: View) -> None:
    if view.multi:
        _write_out(outcomes_json(view.outcomes))
    elif view.outcomes:
        _write_out(json_dumps(outcome_dict(view.outcomes[0])))


def _github_end(view: View) -> None:
    text = render_github(view.outcomes, view.fail_on)
    if text:
        _write_out(text)


RENDERERS: dict[str, Renderer] = {
    "text": Renderer(each=_text_each, end=_text_end),
    "json": Renderer(end=_json_end),
    "jsonl": Renderer(each=lambda outcome, view: _write_out(outcomes_jsonl([outcome]))),
    "sarif": Renderer(end=lambda view: _write_out(render_sarif(view.outcomes))),
    "junit": Renderer(end=lambda view: _write_out(render_junit(view.outcomes, view.fail_on))),
    "github": Renderer(end=_github_end),
}


def report_mode(args, config_report: str | None, multi: bool) -> str:
    """--report, else -v (full) / -q (none), else the config's report, else full for one spec and
    failures for several."""
    if args.report is not None:
        return args.report
    if args.verbose:
        return "full"
    if args.quiet:
        return "none"
    return config_report or ("failures" if multi else "full")


class _Printer:
    """Prints each outcome as it completes (text, jsonl) and everything else at the end; on a
    terminal, one line per finished spec of several on stderr (progress, not the report)."""

    def __init__(self, args, view: View, total: int):
        self.view = view
        self.renderer = RENDERERS[args.format]
        self.total = total
        self.progress = view.multi and not args.quiet and _is_tty(sys.stderr)

    @property
    def outcomes(self) -> list:
        return self.view.outcomes

    def add(self, outcome) -> None:
        self.view.outcomes.append(outcome)
        if self.progress:
            cells = row(outcome, self.view.fail_on)
            err(f"[{len(self.outcomes)}/{self.total}] {cells[0]}  {cells[1]}  {cells[4]}")
        if self.renderer.each is not None:
            self.renderer.each(outcome, self.view)

    def finish(self) -> None:
        if self.renderer.end is not None:
            self.renderer.end(self.view)


def _explain(ident: str) -> int:
    e = lookup(ident)
    if e is None:
        err(f"certify: error: --explain: unknown code or kind '{ident}'; known: {', '.join(known())}")
        return EXIT_USAGE
    sys.stdout.write(e.render())
    sys.stdout.flush()
    return 0


def _run(args, parser, started: float, config_report: str | None = None) -> int:
    if args.explain is not None:
        return _explain(args.explain)
    if not args.specs:
        parser.print_usage(sys.stderr)
        err("certify: error: give at least one SPEC (a file, a directory, a glob or - for stdin)")
        return EXIT_USAGE
    if args.output_file is not None:
        folder = os.path.dirname(os.path.abspath(args.output_file))
        if not os.path.isdir(folder):
            err(f"certify: error: --output-file: no directory '{folder}'")
            return EXIT_USAGE
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer):
                return _run_specs(args, started, config_report, use_color(args.color, buffer))
        finally:
            _write_atomically(args.output_file, buffer.getvalue())
    return _run_specs(args, started, config_report, use_color(args.color, sys.stdout))


def _write_atomically(path: str, text: str) -> None:
    """A reader never sees half a report: a temporary file beside `path`, then one rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".certify-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _run_specs(args, started: float, config_report: str | None, color: bool) -> int:
    # the analysis (and torch) loads only for a run that misses the cache (runs.py), so that --help,
    # --version, --explain and a cache hit answer at once
    from .runs import Interrupted, cache_for, run_one

    if args.device != "cpu" or args.scheduler:    # the only settings it can refuse
        from .pipeline import environment_problem

        problem = environment_problem(args.device, args.scheduler)
        if problem is not None:
            err(f"certify: error: {problem}")
            return EXIT_USAGE
    specs, multi = expand_specs(args.specs)
    if args.emit is not None and (multi or len(specs) != 1):
        err("certify: error: --emit writes the certificate of one spec; give exactly one SPEC file")
        return EXIT_USAGE

    cache = cache_for(args)
    view = View(multi=multi, fail_on=args.fail_on, report=report_mode(args, config_report, multi),
                color=color, quiet=args.quiet)
    printer = _Printer(args, view, len(specs))
    stdin_read = False
    try:
        for i, (path, problem) in enumerate(specs):
            if problem is not None:
                err(f"certify: error: {problem}")
                printer.add(Outcome(path, diagnostics=[Diagnostic("E201", problem, path=path)]))
                continue
            first = started if i == 0 else None
            if path == "-":
                if stdin_read:             # stdin holds one spec
                    continue
                stdin_read = True
                # "<stdin>": relative data paths resolve against the working directory (check/files.py);
                # no cache, whose key hashes the spec's own file
                printer.add(run_one(STDIN, args, None, started=first, text=_read_stdin()))
                continue
            printer.add(run_one(path, args, cache, started=first))
    except Interrupted as stop:
        err("certify: interrupted")
        try:
            printer.add(stop.outcome)
            printer.finish()
        except (BrokenPipeError, KeyboardInterrupt):
            _silence_stdout()
        return getattr(stop, "exit_code", EXIT_INTERRUPTED)    # 130 for Ctrl-C, 143 for SIGTERM
    except BrokenPipeError:            # the reader went away (`certify x.rq | head`): keep the verdict
        _silence_stdout()
        return run_exit_code(printer.outcomes, args.fail_on)
    try:
        printer.finish()
    except BrokenPipeError:
        _silence_stdout()
    return run_exit_code(printer.outcomes, args.fail_on)


def _read_stdin() -> str:
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
    return data.decode("utf-8", errors="replace")


@contextlib.contextmanager
def terminate_as_interrupt():
    """SIGTERM (a CI job's timeout, `kill`) is handled as Ctrl-C: the partial report, but exit 143."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated               # a KeyboardInterrupt that exits 143 (progress.py)

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


def _subcommand_parsers(shell: str) -> dict:
    """The parsers of `certify check` and `certify study`, for a completion script of their options
    (fish lists the subcommands by name only). Importing them imports torch: 2 s, once, when the
    script is written."""
    if shell == "fish":
        return {}
    from .certificate.command import build_parser as check_parser
    from .study import build_parser as study_parser

    return {"check": check_parser(), "study": study_parser()}


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
    if args.completion is not None:
        sys.stdout.write(completion_script(parser, args.completion, _subcommand_parsers(args.completion)))
        sys.stdout.flush()
        return 0
    config_report = None
    if not args.isolated and args.explain is None:
        try:
            config = load_config()
        except ConfigError as exc:
            err(f"certify: error: {exc}")
            return EXIT_USAGE
        values = dict(config.values)
        config_report = values.pop("report", None)
        if os.environ.get("CERTIFY_CACHE_DIR"):     # the environment beats a file, the flag beats both
            values.pop("cache_dir", None)
        parser.set_defaults(**values)
        args = parser.parse_args(argv)  # again: flags override the files' defaults
    args.no_cache = not args.cache
    _safe_streams()
    try:
        with terminate_as_interrupt():
            return _run(args, parser, started, config_report)
    except KeyboardInterrupt as exc:
        err("certify: interrupted")
        return getattr(exc, "exit_code", EXIT_INTERRUPTED)
    except Exception as exc:
        if args.debug:
            raise
        err(f"certify: internal error: {type(exc).__name__}: {exc}".rstrip().rstrip(":"))
        err("please report this; rerun with --debug for the traceback")
        return EXIT_INTERNAL
