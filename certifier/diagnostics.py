"""One diagnostic model for every stage: a code, a message, a source span and a hint.

Renderers (text here; JSON and others in certifier.report) read this model only.
"""
from __future__ import annotations

import unicodedata
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
    "E304": ("module not translatable", "The sound mode cannot translate a layer or operation of the torch model."),
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

    def to_dict(self, source: str | None = None) -> dict:
        """The JSON form; with the spec's source, the span clamped into the file (see clamp)."""
        span = self.span if source is None or self.span is None else clamp(self.span, source_lines(source))
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


def source_lines(text: str) -> list[str]:
    """The spec's lines as every diagnostic counts them: split at '\\n' only, as lark counts lines
    (str.splitlines also breaks at form feeds, U+2028 and others, which lark reads inside a line),
    without the '\\r' of a CRLF line end. A text ending in '\\n' has an empty last line, where lark
    puts the end of file."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def clamp(span: Span, lines: list[str]) -> Span:
    """The span moved inside the file: 1 <= line <= len(lines), 1 <= column <= len(line) + 1, and
    its end not before its start (a span past the end of the file points at the end of the file)."""
    lines = lines or [""]
    last = len(lines)

    def point(line: int, column: int) -> tuple[int, int]:
        if line > last:
            return last, len(lines[-1]) + 1
        line = max(1, line)
        return line, min(max(1, column), len(lines[line - 1]) + 1)

    line, column = point(span.line, span.column)
    end_line, end_column = point(span.end_line, span.end_column)
    if (end_line, end_column) < (line, column):
        end_line, end_column = line, column
    return Span(line, column, end_line, end_column)


def located(diagnostics: list[Diagnostic], source: str, path: str) -> list[Diagnostic]:
    """The diagnostics about this spec file with their spans clamped into it (in place)."""
    lines = source_lines(source)
    for d in diagnostics:
        if d.span is not None and d.path == path:
            d.span = clamp(d.span, lines)
    return diagnostics


EXCERPT = 100   # columns of a source line shown around the caret; longer lines are cut with '…'


def _visible(c: str) -> str:
    if c.isprintable() or c == " ":
        return c
    return chr(0x2400 + ord(c)) if ord(c) < 0x20 else "\ufffd"   # control pictures: '␌' for \x0c


def _columns(text: str) -> int:
    """The terminal columns `text` takes."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def excerpt(line: str, column: int, width: int) -> tuple[str, int, int]:
    """(the text shown of a source line, the caret's 1-based column in it, the caret's width):
    tabs shown as one space each so that the caret lines up, and a window of about EXCERPT columns
    around the caret for a long line."""
    # one column per character, so that the caret lines up: a tab as one space, and characters a
    # terminal would move the cursor for or not show (a lone '\\r', a form feed, U+2028) as a
    # visible stand-in
    text = "".join(_visible(c) for c in line.expandtabs(1))
    width = max(1, min(width, len(text) - column + 1 if column <= len(text) else 1))
    if len(text) <= EXCERPT:
        return text, column, width
    start = max(0, min(column - 1 - EXCERPT // 3, len(text) - EXCERPT))
    end = min(len(text), start + EXCERPT)
    shown = ("…" if start > 0 else "") + text[start:end] + ("…" if end < len(text) else "")
    caret = column - start + (1 if start > 0 else 0)
    return shown, caret, max(1, min(width, end - column + 1))


def render_text(diag: Diagnostic, source: str | None) -> str:
    """`path:line:col: error[CODE]: message`, the source line with a caret under the span, a hint."""
    span = diag.span
    if span is None:
        head = f"{diag.path}: {diag.severity}[{diag.code}]: {diag.message}"
        return head + (f"\n  = hint: {diag.hint}" if diag.hint else "")
    lines = source_lines(source) if source is not None else []
    if lines:
        span = clamp(span, lines)
    out = [f"{diag.path}:{span.line}:{span.column}: {diag.severity}[{diag.code}]: {diag.message}"]
    if lines:
        line = lines[span.line - 1]
        width = (span.end_column - span.column) if span.end_line == span.line else len(line) - span.column + 1
        text, caret, width = excerpt(line, span.column, width)
        gutter = " " * len(str(span.line))
        out.append(f"{gutter} |")
        out.append(f"{span.line} | {text}")
        # padded by terminal columns: a wide character (CJK, most emoji) takes two, a combining mark none
        under = max(1, _columns(text[caret - 1:caret - 1 + width]))
        out.append(f"{gutter} | {' ' * _columns(text[:caret - 1])}{'^' * under}")
    if diag.hint:
        out.append(f"  = hint: {diag.hint}")
    return "\n".join(out)
