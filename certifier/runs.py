"""One spec's run from the command line, shared by `certify` and `certify study`: the cache, the
budget, progress, partial results and --emit (the commands are certifier/cli.py and study.py,
their options certifier/arguments.py).

A cache hit is answered without the pipeline: it (and torch, numpy) is imported on a miss only
(docs/performance.md, "A cache hit")."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from .arguments import err
from .cache import CACHE_DIR, Cache, key_material, loaded_as_keyed, record_loads
from .diagnostics import Diagnostic, SpecError
from .parse import parse
from .progress import BudgetExceeded, active, alarm, interrupt_exit_code, make_reporter, with_deadline
from .report.outcome import Outcome, statement_span
from .result import FailingRegion, Result


def read_source(path: str) -> str:
    with open(path, "rb") as fh:
        data = fh.read()
    return data.decode("utf-8", errors="replace")


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped a run: `outcome` holds the partial report of the spec that was
    running, `exit_code` the process's code (130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, outcome, exit_code: int = 130):
        self.outcome = outcome
        self.exit_code = exit_code


def _where(phase: str | None, reporter) -> str:
    """Where a run stopped, for its message: the phase that was running, else the last one that
    finished, else the start (reading, checking and compiling the spec)."""
    if phase:
        return f" during '{phase}'"
    if reporter.completed:
        return f" after '{reporter.completed[-1]}'"
    return " while reading, checking and compiling the spec"


def _partial(reporter) -> dict | None:
    """What the pipeline knew when it stopped (it sets reporter.partial), or None."""
    try:
        return reporter.partial()
    except Exception:   # no callback yet (stopped before the loss was computed) or a broken state
        return None


def _method_named(source: str | None) -> dict:
    """{"name": ...} of the spec's method statement, so that a stopped interval run is labelled as
    the sound mode (with nothing proved), never as an estimate; {} when there is none."""
    m = re.search(r"^[ \t]*method[ \t]+([A-Za-z_]\w*)", source or "", re.MULTILINE)
    return {"name": m.group(1)} if m else {}


def partial_result(path: str, source: str | None, kind: str, message: str, suggestion: str,
                   seconds: float, reporter=None, partial: dict | None = None, exit_code: int | None = None):
    """An inconclusive Result for a run that stopped early (budget, Ctrl-C) before the engine
    could build one: the title, the phase that was running and the phases that completed.
    `exit_code` (Ctrl-C, SIGTERM) goes into failing_region.numbers, where Result.exit_code reads it,
    so that the report prints the code the process exits with."""
    title = Path(path).stem
    if source is not None:
        try:
            title = parse(source, path).title or title
        except Exception:   # SpecError, or a parser bug: the partial report keeps the file's stem
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
        spec=path, title=title, verdict="inconclusive", sound=False, method=_method_named(source),
        loss=partial.get("loss", {}),
        desingularizer={}, mu=None, mu_source=None, mu_sources=[], region={}, rate={}, witness=None,
        failing_region=FailingRegion(
            kind=kind, message=message, suggestion=suggestion, points=[],
            span=None if span is None else {"line": span.line, "column": span.column,
                                            "end_line": span.end_line, "end_column": span.end_column},
            numbers={"seconds": seconds, **({} if exit_code is None else {"exit_code": exit_code})}),
        diagnostics=[], problem=partial.get("problem", {}), timing={"total": seconds}, notes=notes)


def cache_options(args) -> dict:
    # max_params and max_memory: a hit answers what the run would, E205 included
    return {"device": args.device, "threads": None, "max_params": args.max_params,
            "max_memory": getattr(args, "max_memory", None),
            "allow_python": bool(args.allow_python), "spec_path": None}


def options_for_key(args, path: str) -> dict:
    options = cache_options(args)
    options["spec_path"] = path
    return options


def run_one(path: str, args, cache, started: float | None = None, text: str | None = None) -> Outcome:
    """One spec's Outcome. `started` (a time.monotonic() value) is when the budget begins: the
    process's start for the first spec, so that --budget S bounds the wall time a user sees.
    `text`: the spec itself (read from stdin, `path` then "<stdin>"), instead of reading `path`.
    Never raises but Interrupted: whatever goes wrong with one spec (hashing it for the cache
    included) is that spec's outcome, and the other specs and the summary still run."""
    t0 = time.perf_counter()
    try:
        return _run_one(path, args, cache, started, text)
    except Interrupted:
        raise
    except KeyboardInterrupt as exc:   # outside the analysis (storing in the cache, --emit)
        seconds = time.perf_counter() - t0
        code = interrupt_exit_code(exc)
        result = partial_result(path, None, "interrupted", f"interrupted after {seconds:.3g} s",
                                "run certify again and let it finish (or give it a --budget)", seconds,
                                exit_code=code)
        raise Interrupted(Outcome(path, result=result, seconds=seconds), code) from None
    except SystemExit as exc:          # sys.exit() in code that is not the spec's torch model (that is E302)
        if args.debug:                 # a traceback, not the process exiting with exc.code (maybe 0)
            raise RuntimeError(f"exit({exc.code!r}) called during the run") from exc
        return _internal(path, None, t0, f"SystemExit: exit({exc.code!r}) called during the run")
    except Exception as exc:
        if args.debug:
            raise
        return _internal(path, None, t0, f"{type(exc).__name__}: {exc}".rstrip().rstrip(":"))


def _internal(path: str, source: str | None, t0: float, message: str) -> Outcome:
    """An internal error (a bug in certify) as the spec's outcome: one line and the report hint."""
    err(f"certify: internal error: {message}")
    err("please report this; rerun with --debug for the traceback")
    return Outcome(path, source=source, seconds=time.perf_counter() - t0, internal=message)


def _run_one(path: str, args, cache, started: float | None, text: str | None) -> Outcome:
    t0 = time.perf_counter()
    started = time.monotonic() if started is None else started
    try:
        source = read_source(path) if text is None else text
    except OSError as exc:
        reason = exc.strerror or str(exc)
        err(f"certify: error: cannot read '{path}': {reason}")
        code = "E201" if isinstance(exc, FileNotFoundError) else "E202"
        return Outcome(path, diagnostics=[Diagnostic(code, f"cannot read '{path}': {reason}", path=path)],
                       seconds=time.perf_counter() - t0)

    deadline = started + args.budget if args.budget is not None else None
    reporter = with_deadline(make_reporter(not args.quiet), deadline, args.budget)
    material = loaded = None
    try:
        # the deadline (SIGALRM, and progress.active for the check stage's estimates: check/costs.py)
        # covers hashing the spec and its files for the cache key too
        with alarm(reporter, deadline, args.budget), active(reporter):
            if cache is not None:
                material = key_material(path, source, options_for_key(args, path))
                if material is not None and args.emit is None:
                    hit = cache.load(material)
                    if hit is not None:
                        hit.notes = list(hit.notes) + ["read from the cache (.certify_cache/); "
                                                       "run with --no-cache to recompute"]
                        return Outcome(path, result=hit, source=source, seconds=time.perf_counter() - t0,
                                       cached=True)
                loaded = record_loads()   # (name, sha256) of the bytes this run's check parses
            # a miss: the analysis, and torch, load only now
            from . import pipeline

            options = run_options(pipeline, args, reporter, deadline)
            result = pipeline.run_file(path, options) if text is None else pipeline.run_text(text, path, options)
    except SpecError as exc:
        return Outcome(path, diagnostics=exc.diagnostics, source=source, seconds=time.perf_counter() - t0)
    except BudgetExceeded as exc:
        seconds = time.perf_counter() - t0
        where = _where(exc.phase, reporter)
        detail = f": {exc.detail}" if getattr(exc, "detail", None) else ""
        result = partial_result(path, source, "budget",
                                f"the budget of {args.budget:g} s ran out{where}{detail}",
                                # the engines name their own knob (pipeline.BUDGET_HINTS); before
                                # them (reading, checking, hashing) only the problem's size counts
                                exc.suggestion or "raise --budget, or shrink the problem (its data and parameters)",
                                seconds, reporter, _partial(reporter))
        return Outcome(path, result=result, source=source, seconds=seconds)
    except KeyboardInterrupt as exc:   # Ctrl-C, or SIGTERM (progress.Terminated)
        seconds = time.perf_counter() - t0
        code = interrupt_exit_code(exc)
        where = _where(reporter.stopped_in or reporter.current, reporter)
        result = partial_result(path, source, "interrupted", f"interrupted{where} after {seconds:.3g} s",
                                "run certify again and let it finish (or give it a --budget)", seconds, reporter,
                                _partial(reporter), exit_code=code)
        raise Interrupted(Outcome(path, result=result, source=source, seconds=seconds), code) from None
    except Exception as exc:
        if args.debug:
            raise
        return _internal(path, source, t0, f"{type(exc).__name__}: {exc}".rstrip().rstrip(":"))
    outcome = Outcome(path, result=result, source=source, seconds=time.perf_counter() - t0)
    # store only when the bytes the run parsed are those the key hashed (a file changed, even
    # changed back, between the key and the load: the result may belong to neither)
    if cache is not None and material is not None and loaded_as_keyed(loaded, material):
        cache.store(material, result)
    if args.emit is not None:
        _emit(result, path, source, args)
    return outcome


def run_options(pipeline, args, reporter, deadline: float | None):
    """The pipeline's RunOptions from the command line's."""
    options = pipeline.RunOptions(reporter=reporter, device=args.device, deadline=deadline,
                                  allow_python=bool(args.allow_python), workers=args.workers, threads=args.threads,
                                  scheduler=args.scheduler, max_memory=getattr(args, "max_memory", None))
    if args.max_params is not None:
        options.max_params = args.max_params
    return options


def _emit(result, path: str, source: str, args) -> None:
    from .certificate import CertificateError, emit

    try:
        emit(result, path, source, args.emit, allow_python=bool(args.allow_python), device=args.device)
    except CertificateError as exc:
        err(f"certify: error: --emit: {exc}")


def cache_for(args):
    if args.no_cache:
        return None
    return Cache(args.cache_dir or os.environ.get("CERTIFY_CACHE_DIR") or CACHE_DIR)


def __getattr__(name: str):
    """`runs.pipeline`, imported on first use (a cache hit never needs it)."""
    if name == "pipeline":
        from . import pipeline

        return pipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
