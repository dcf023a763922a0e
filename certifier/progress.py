"""Progress reporting on stderr.

The engine reports progress through one small interface:

    with reporter.phase("searching", total=N) as advance:
        for ...:
            advance()        # or advance(k)

`total=None` shows a spinner (unknown amount of work). Phases may follow each other or nest;
a nested phase is shown indented under its parent while both run.

`NullReporter` does nothing (the default in RunOptions, and what the CLI uses when stderr is not
a terminal or --quiet is given); `RichReporter` draws a transient rich.progress display on a
stderr console; `make_reporter(enabled)` picks between them.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

Advance = Callable[..., None]


def _noop(n: float = 1) -> None:
    return None


class NullReporter:
    """Reports nothing. `advance` is a no-op, cheap enough to call in inner loops."""

    @contextmanager
    def phase(self, description: str, total: int | None = None) -> Iterator[Advance]:
        yield _noop


class RichReporter:
    """A rich.progress display on `console` (a stderr Console), erased when the outermost phase ends."""

    def __init__(self, console=None, transient: bool = True):
        if console is None:
            from rich.console import Console

            console = Console(stderr=True)
        self.console = console
        self.transient = transient
        self._progress = None
        self._depth = 0
        self._lock = threading.RLock()

    def _new_progress(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        return Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=self.transient,
        )

    @contextmanager
    def phase(self, description: str, total: int | None = None) -> Iterator[Advance]:
        with self._lock:
            if self._progress is None:
                self._progress = self._new_progress()
                self._progress.start()
            progress = self._progress
            task = progress.add_task("  " * self._depth + str(description), total=total)
            self._depth += 1

        def advance(n: float = 1) -> None:
            progress.advance(task, n)

        try:
            yield advance
        finally:
            with self._lock:
                self._depth -= 1
                try:
                    progress.remove_task(task)
                finally:
                    if self._depth <= 0:
                        self._depth = 0
                        self._progress = None
                        progress.stop()


def _isatty(stream) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def make_reporter(enabled: bool, console=None):
    """A RichReporter when `enabled` (i.e. not --quiet) and stderr is a terminal; else a NullReporter."""
    if not enabled or not _isatty(sys.stderr):
        return NullReporter()
    return RichReporter(console)


# --- deadlines (certify --budget) and the phase that was running (for partial reports) ----------

class BudgetExceeded(BaseException):
    """Raised by an `advance()` of a DeadlineReporter once time.monotonic() passes its deadline,
    or by `alarm` at the deadline itself. The CLI turns it into an inconclusive partial Result.
    A BaseException, as KeyboardInterrupt is, so that no `except Exception` fallback in the
    engines takes it for a failure of the computation it interrupted."""

    def __init__(self, phase: str | None, budget: float | None = None, detail: str | None = None):
        self.phase = phase
        self.budget = budget
        self.detail = detail        # why work was refused before the deadline (check stage), or None
        self.suggestion: str | None = None   # the engine's own hint for the partial report, or None
        where = f" during '{phase}'" if phase else ""
        super().__init__(f"the time budget ran out{where}" + (f": {detail}" if detail else ""))


class DeadlineReporter:
    """Wraps a reporter: forwards every phase and advance, remembers which phases are running
    (`current`, `completed`), and when `deadline` (a time.monotonic() value) is not None, raises
    BudgetExceeded from advance() once it has passed. Checking costs one clock read per advance."""

    def __init__(self, inner=None, deadline: float | None = None, budget: float | None = None):
        self.inner = inner if inner is not None else NullReporter()
        self.deadline = deadline
        self.budget = budget
        self.running: list[str] = []
        self.completed: list[str] = []
        self.stopped_in: str | None = None

    @property
    def current(self) -> str | None:
        return self.running[-1] if self.running else None

    def check(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise BudgetExceeded(self.current, self.budget)

    def left(self) -> float:
        """Seconds until the deadline (inf without one)."""
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def ensure(self, seconds: float = 0.0, detail: str | None = None) -> None:
        """Raise BudgetExceeded unless work estimated at `seconds` can finish before the deadline:
        one torch call cannot be interrupted (not even by `alarm`), so a long one is not started."""
        if self.deadline is None:
            return
        left = self.deadline - time.monotonic()
        if left < 0 or seconds > left:
            raise BudgetExceeded(self.current, self.budget, detail if left >= 0 else None)

    @contextmanager
    def phase(self, description: str, total: int | None = None) -> Iterator[Advance]:
        self.check()
        with self.inner.phase(description, total) as inner_advance:
            self.running.append(str(description))

            def advance(n: float = 1) -> None:
                inner_advance(n)
                if self.deadline is not None and time.monotonic() > self.deadline:
                    raise BudgetExceeded(self.current, self.budget)

            try:
                yield advance
            except BaseException:
                if self.stopped_in is None:        # the innermost phase an exception left
                    self.stopped_in = str(description)
                raise
            else:
                self.completed.append(str(description))
            finally:
                self.running.pop()


def with_deadline(reporter, deadline: float | None, budget: float | None = None) -> DeadlineReporter:
    """`reporter` wrapped in a DeadlineReporter (itself when it already is one with that deadline)."""
    if isinstance(reporter, DeadlineReporter) and reporter.deadline == deadline:
        return reporter
    return DeadlineReporter(reporter, deadline, budget)


# The DeadlineReporter of the run in progress, for code that has no reporter to hand: the check
# stage (check.check takes no options) and the first estimates of the engines. A ContextVar, so
# that a thread or a run in-process (tests) sees only its own.
_ACTIVE: ContextVar = ContextVar("certify_active_deadline", default=None)


@contextmanager
def active(reporter) -> Iterator[None]:
    """Make `reporter` (a DeadlineReporter) the one `checkpoint` and `ensure` consult."""
    token = _ACTIVE.set(reporter if isinstance(reporter, DeadlineReporter) else None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def deadline_set() -> bool:
    """True inside `active(reporter)` with a deadline: a budget is being enforced."""
    reporter = _ACTIVE.get()
    return reporter is not None and reporter.deadline is not None


def left() -> float:
    """Seconds until the active deadline (inf without one)."""
    reporter = _ACTIVE.get()
    return float("inf") if reporter is None else reporter.left()


def checkpoint(seconds: float = 0.0, detail: str | None = None) -> None:
    """BudgetExceeded when the active deadline has passed, or when work estimated at `seconds`
    cannot finish before it; nothing without an active deadline. One clock read."""
    reporter = _ACTIVE.get()
    if reporter is not None:
        reporter.ensure(seconds, detail)


# --- SIGTERM and the exit codes of a stopped run ------------------------------------------------

EXIT_INTERRUPTED = 130   # 128 + SIGINT: Ctrl-C
EXIT_TERMINATED = 143    # 128 + SIGTERM: `kill`, a CI job's timeout


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as a KeyboardInterrupt so that it stops a run exactly as Ctrl-C does (the
    partial report), but exits with EXIT_TERMINATED, the code a shell gives a process it killed."""

    exit_code = EXIT_TERMINATED


def interrupt_exit_code(exc: BaseException | None) -> int:
    """130 for Ctrl-C, 143 for SIGTERM."""
    return getattr(exc, "exit_code", EXIT_INTERRUPTED)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Raise Terminated in the main thread on SIGTERM (nothing off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated()

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def alarm(reporter, deadline: float | None, budget: float | None = None) -> Iterator[None]:
    """Raise BudgetExceeded in the main thread when time.monotonic() reaches `deadline`, even in a
    long computation that never calls advance() (a Hessian eigenvalue, one large batch): the
    exception is raised between two bytecodes, so a single torch call still finishes first. Does
    nothing off the main thread or without setitimer (the advance() checks remain)."""
    if deadline is None or threading.current_thread() is not threading.main_thread() \
            or not hasattr(signal, "setitimer"):
        yield
        return

    def ring(signum, frame):
        raise BudgetExceeded(getattr(reporter, "current", None), budget)

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(deadline - time.monotonic(), 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
