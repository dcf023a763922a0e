"""One diagnostic model for every stage: a code, a message, a source span and a hint.

Renderers (text here; JSON and others in certifier.report) read this model only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# code -> (title, explanation). The single table of diagnostic codes (docs/language.md lists it).
CODES: dict[str, tuple[str, str]] = {
    "E001": ("syntax error", "The text does not follow the .rq grammar."),
    "E002": ("empty spec", "The spec file is empty or holds only comments."),
    "E003": ("unreadable spec", "The spec file is binary or not valid UTF-8 text."),
    "E004": ("duplicate statement", "A statement that may appear once appears twice."),
    "E005": ("missing statement", "A required statement (data, params, model, loss) is absent."),
    "E101": ("undefined name", "A name is used that no data, params or model statement defines."),
    "E102": ("duplicate definition", "A name is defined twice."),
    "E103": ("shape mismatch", "Operand shapes do not broadcast, or do not fit the operation."),
    "E104": ("bad arguments", "A call has the wrong number of arguments or an unknown keyword."),
    "E105": ("unknown function", "The function is not one of the built-in functions."),
    "E106": ("unknown loss", "The loss is not one of the losses certify knows."),
    "E107": ("unknown method", "The method is not one of the analysis methods."),
    "E108": ("unknown region", "The region is not one of the region kinds."),
    "E109": ("invalid value", "A value is out of its allowed range (a non-positive radius, say)."),
    "E110": ("unknown claim", "The certify statement names an unknown claim."),
    "E111": ("unknown desingularizer", "The desingularizer is not one certify knows."),
    "E112": ("no closed form", "A population loss (data gaussian) has no closed form for this model or target."),
    "E201": ("file not found", "A file named by the spec does not exist (paths are relative to the spec)."),
    "E202": ("unreadable file", "A file named by the spec cannot be read in the expected format."),
    "E203": ("non-finite data", "Loaded or generated data contains NaN or infinite values."),
    "E204": ("missing array", "A data or parameter file lacks an array the spec needs."),
    "E205": ("size limit", "The problem is larger than the configured limits."),
    "E206": ("initial loss out of range", "L(theta0), its gradient or R(theta0) is not a finite double at this scale."),
    "E301": ("python code not allowed", "The spec imports Python code; certify runs it only with --allow-python."),
    "E302": ("python model failed", "The Python model cannot be imported, built or run on the data."),
    "E303": ("model parameters mismatch", "The parameters given for a torch model do not fit the module."),
}


@dataclass(frozen=True)
class Span:
    """1-based line and column of the first character, and of the character after the last."""

    line: int
    column: int
    end_line: int
    end_column: int

    @staticmethod
    def point(line: int, column: int) -> "Span":
        return Span(line, column, line, column + 1)


@dataclass
class Diagnostic:
    code: str
    message: str
    span: Span | None = None
    hint: str | None = None
    path: str = "<spec>"
    severity: str = "error"

    def to_dict(self) -> dict:
        span = self.span
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "path": self.path,
            "line": span.line if span else None,
            "column": span.column if span else None,
            "end_line": span.end_line if span else None,
            "end_column": span.end_column if span else None,
            "hint": self.hint,
        }


class SpecError(Exception):
    """Raised with one or more diagnostics; the CLI renders them and exits 2."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(d.message for d in self.diagnostics))


@dataclass
class Collector:
    """Gathers diagnostics so that a stage can report all errors of a file at once."""

    path: str
    items: list[Diagnostic] = field(default_factory=list)

    def error(self, code: str, message: str, span: Span | None = None, hint: str | None = None) -> None:
        assert code in CODES, code
        self.items.append(Diagnostic(code, message, span, hint, self.path))

    def raise_if_any(self) -> None:
        if self.items:
            raise SpecError(self.items)


def render_text(diag: Diagnostic, source: str | None) -> str:
    """`path:line:col: error[CODE]: message`, the source line with a caret under the span, a hint."""
    span = diag.span
    if span is None:
        head = f"{diag.path}: {diag.severity}[{diag.code}]: {diag.message}"
        return head + (f"\n  = hint: {diag.hint}" if diag.hint else "")
    out = [f"{diag.path}:{span.line}:{span.column}: {diag.severity}[{diag.code}]: {diag.message}"]
    lines = source.splitlines() if source is not None else []
    if 1 <= span.line <= len(lines):
        text = lines[span.line - 1].expandtabs(1)
        gutter = " " * len(str(span.line))
        width = (span.end_column - span.column) if span.end_line == span.line else len(text) - span.column + 1
        width = max(1, width)
        out.append(f"{gutter} |")
        out.append(f"{span.line} | {text}")
        out.append(f"{gutter} | {' ' * (span.column - 1)}{'^' * width}")
    if diag.hint:
        out.append(f"  = hint: {diag.hint}")
    return "\n".join(out)
