"""GitHub Actions workflow commands: one annotation line per finding.

    ::error file=specs/x.rq,line=17,col=1,endLine=17,endColumn=30,title=certify refuted (witness)::message

- `::error` for refuted results, spec errors and internal errors; `::warning` for inconclusive
  results (`::notice` with --fail-on refuted, as they do not fail the run) and warning
  diagnostics; `::notice` for certified results (an estimate, with μ and the rate).
- Escaping follows GitHub's runner: in the message `%` -> %25, CR -> %0D, LF -> %0A; in property
  values additionally `:` -> %3A and `,` -> %2C.
"""
from __future__ import annotations

import os

from ..diagnostics import Diagnostic, Span
from .outcome import Outcome, effective_code, outcome_span
from .text import num


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _path(path: str) -> str:
    """Paths relative to the working directory (the repository root in a workflow) when below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path.replace(os.sep, "/")
    return (path if rel.startswith("..") else rel).replace(os.sep, "/")


def command(level: str, message: str, file: str | None = None, span: Span | None = None,
            title: str | None = None) -> str:
    props = []
    if file:
        props.append(f"file={escape_property(_path(file))}")
    if span is not None:
        props.append(f"line={span.line}")
        props.append(f"col={span.column}")
        if span.end_line:
            props.append(f"endLine={span.end_line}")
        if span.end_line == span.line and span.end_column and span.end_column > span.column:
            props.append(f"endColumn={span.end_column}")
    if title:
        props.append(f"title={escape_property(title)}")
    head = f"::{level}" + (" " + ",".join(props) if props else "")
    return f"{head}::{escape_data(message)}"


def _diagnostic(o: Outcome, d: Diagnostic) -> str:
    level = "warning" if d.severity == "warning" else ("notice" if d.severity == "note" else "error")
    path = d.path if d.path and not d.path.startswith("<") else o.spec
    message = d.message + (f"\nhint: {d.hint}" if d.hint else "")
    return command(level, message, path, d.span, f"certify {d.code}")


def render_github(outcomes: list[Outcome], fail_on: str = "inconclusive") -> str:
    lines = []
    for o in outcomes:
        if o.result is None:
            lines += [_diagnostic(o, d) for d in o.error_diagnostics()]
            continue
        r = o.result
        label = "" if r.sound else " (estimate)"
        f = r.failing_region
        span = outcome_span(o)
        if f is None:
            formula = (r.rate or {}).get("formula")
            message = (f"{r.verdict}{label}: mu = {num(r.mu)}" + (f", {formula}" if formula else "")
                       + ("" if r.sound else "\nESTIMATE (not a proof): mu is the smallest R found by sampling"))
            lines.append(command("notice", message, o.spec, span, f"certify {r.verdict}{label}"))
        else:
            if r.verdict == "refuted":
                level = "error"
            else:
                level = "warning" if effective_code(o, fail_on) != 0 else "notice"
            message = f"{f.message}" + (f"\nsuggestion: {f.suggestion}" if f.suggestion else "")
            lines.append(command(level, message, o.spec, span, f"certify {r.verdict}{label}: {f.kind}"))
        lines += [_diagnostic(o, d) for d in r.diagnostics]
    return "\n".join(lines)
