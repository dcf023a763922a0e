"""What one spec of a run gave: a Result, or the diagnostics of a spec that could not be run, or
an internal error. Every multi-spec renderer (summary table, JSON array, JSON lines, SARIF,
JUnit, GitHub annotations) reads a list of Outcomes and nothing else.

The exit code of a run over several specs is the worst outcome, with the precedence
    4 (internal error) > 2 (spec error) > 1 (refuted) > 3 (inconclusive) > 0 (certified);
with fail_on="refuted", inconclusive outcomes count as 0 (docs/output.md, "Exit codes").
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..diagnostics import Diagnostic, Span, source_lines
from ..result import Result

EXIT_INTERNAL = 4
# the first code present is the run's exit code; 143 and 130 (SIGTERM, Ctrl-C): a stopped run
PRECEDENCE = (143, 130, EXIT_INTERNAL, 2, 1, 3, 0)
FAIL_ON = ("inconclusive", "refuted")


@dataclass
class Outcome:
    spec: str                                  # the path as given (or found under a directory)
    result: Result | None = None               # None: the spec could not be run
    diagnostics: list[Diagnostic] = field(default_factory=list)   # why it could not be run
    source: str | None = None                  # the spec's text, when it could be read
    seconds: float = 0.0                       # wall-clock time of this spec in this run
    cached: bool = False                       # the result was read from .certify_cache/
    internal: str | None = None                # "RuntimeError: boom" for an internal error

    @property
    def verdict(self) -> str:
        return self.result.verdict if self.result is not None else "error"

    @property
    def exit_code(self) -> int:
        if self.internal is not None:
            return EXIT_INTERNAL
        return self.result.exit_code if self.result is not None else 2

    @property
    def failing_kind(self) -> str | None:
        if self.result is not None and self.result.failing_region is not None:
            return self.result.failing_region.kind
        return None

    def error_diagnostics(self) -> list[Diagnostic]:
        """The diagnostics of an error outcome, with an `internal-error` one for a bug."""
        if self.internal is not None:
            return [Diagnostic("internal-error", f"internal error: {self.internal}", None,
                               "rerun with --debug for the traceback and report it", self.spec)]
        return list(self.diagnostics)


def effective_code(outcome: Outcome, fail_on: str = "inconclusive") -> int:
    code = outcome.exit_code
    if fail_on == "refuted" and code == 3:
        return 0
    return code


def run_exit_code(outcomes: list[Outcome], fail_on: str = "inconclusive") -> int:
    """The worst code by PRECEDENCE; 0 for no outcomes."""
    codes = {effective_code(o, fail_on) for o in outcomes}
    for code in PRECEDENCE:
        if code in codes:
            return code
    return 0


# --- locating things in the spec ------------------------------------------------------------------

_KEYWORD_FOR_KIND = {"critical-point": "certify", "confinement": "region", "no-radius": "region",
                     "region-too-large": "region",
                     "singular-kernel": "region", "witness": "method", "budget": "method",
                     "interrupted": "method", "certified": "certify"}


def statement_span(source: str | None, keyword: str) -> Span | None:
    """The first line of the statement that starts with `keyword`, as a span over that line's
    text (comments and trailing blanks left out). Lines are counted as every diagnostic counts
    them (diagnostics.source_lines: at '\n' only, as lark does; a form feed or U+2028 stays inside
    its line)."""
    if not source:
        return None
    pattern = re.compile(rf"^(\s*)({re.escape(keyword)})\b")
    for number, line in enumerate(source_lines(source), start=1):
        code = line.split("#", 1)[0].rstrip()
        m = pattern.match(code)
        if m:
            return Span(number, len(m.group(1)) + 1, number, len(code) + 1)
    return None


def outcome_span(outcome: Outcome, kind: str | None = None) -> Span | None:
    """Where in the spec a result is about: the failing region's span, else the statement the
    kind concerns (certify, region or method), else None."""
    result = outcome.result
    f = result.failing_region if result is not None else None
    if f is not None and f.span:
        s = f.span
        try:
            return Span(int(s["line"]), int(s["column"]), int(s.get("end_line") or s["line"]),
                        int(s.get("end_column") or s["column"] + 1))
        except (KeyError, TypeError, ValueError):
            pass
    kind = kind or (f.kind if f is not None else "certified")
    keyword = _KEYWORD_FOR_KIND.get(kind, "certify")
    return (statement_span(outcome.source, keyword) or statement_span(outcome.source, "model")
            or statement_span(outcome.source, "spec"))


def span_text(source: str | None, span: Span | None) -> str:
    """The spec text a span covers (whole lines, blanks collapsed): what a fingerprint hashes."""
    if not source or span is None:
        return ""
    lines = source_lines(source)
    chosen = lines[max(0, span.line - 1):max(span.line, span.end_line)]
    return " ".join(" ".join(line.split("#", 1)[0].split()) for line in chosen).strip()
