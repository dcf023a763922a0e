"""One line-splitting rule for every diagnostic (issue 20): lines end at '\\n' only, as lark counts
them; spans are clamped into the file; excerpts of long lines are a window around the caret.
(The fuzz of the whole contract is in test_robust_input.py.)"""
from __future__ import annotations

import pytest

from certifier.diagnostics import Diagnostic, Span, SpecError, clamp, render_text, source_lines
from certifier.parse import parse


def rendered(source: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse(source, "bad.rq")
    return [render_text(d, source) for d in info.value.diagnostics]


def test_source_lines_split_at_newlines_only():
    text = "a\x0cb\u2028c\x0bd\x1ce\x85f\u2029g\rh\r\nnext\r\n"
    assert source_lines(text) == ["a\x0cb\u2028c\x0bd\x1ce\x85f\u2029g\rh", "next", ""]
    assert source_lines("") == [""]


def test_form_feed_and_line_separator_stay_inside_their_line():
    # str.splitlines() would count 4 lines before the error and show '}' on another line
    source = 'spec "t"\x0c# a comment\u2028with a line separator\ndata {\x0c\n  x = (1 +\n}\n'
    assert rendered(source) == [
        "bad.rq:4:1: error[E001]: unexpected '}'; expected '(', '+', '-', '[', a name, a number or a string\n"
        "  |\n"
        "4 | }\n"
        "  | ^\n"
        "  = hint: the '(' at line 3, column 7 is not closed: add ')'; here certify expects an expression"]


def test_a_form_feed_in_the_excerpt_keeps_the_caret_aligned():
    source = "data {\n  x = 1\x0c+ @\n}\n"
    assert rendered(source) == [
        "bad.rq:2:11: error[E001]: unexpected '@'; expected '(', '+', '-', '[', a name, a number or a string\n"
        "  |\n"
        "2 |   x = 1\u240c+ @\n"
        "  |           ^\n"
        "  = hint: '+' must be followed by an expression: a name, a number, '(' or a sign"]


def test_crlf_lines_show_without_their_carriage_return():
    source = 'spec "t"\r\ndata {\r\n  x = 1\r\n'
    assert rendered(source) == [
        "bad.rq:3:8: error[E001]: unexpected end of file; expected '}' or a name\n"
        "  |\n"
        "3 |   x = 1\n"
        "  |        ^\n"
        "  = hint: the '{' at line 2, column 6 is not closed: add '}'; here certify expects '}' to close the "
        "block or a name; a data statement is written `data { name = expression ... }`, "
        "`data from \"file.npz\"` or `data gaussian(d=5)`"]


def test_tabs_keep_the_caret_aligned():
    source = "data {\n\tx =\t1 +\t@ 2\n}\n"
    assert rendered(source) == [
        "bad.rq:2:10: error[E001]: unexpected '@'; expected '(', '+', '-', '[', a name, a number or a string\n"
        "  |\n"
        "2 |  x = 1 + @ 2\n"
        "  |          ^\n"
        "  = hint: '+' must be followed by an expression: a name, a number, '(' or a sign"]


def test_a_long_line_is_shown_as_a_window_around_the_caret():
    source = "data {\n  x = " + " + ".join(["1"] * 2000) + " + ]\n}\n"
    column = len("  x = ") + 4 * 2000 + 1
    (text,) = rendered(source)
    head, bar, line, caret, hint = text.split("\n")
    assert head == (f"bad.rq:2:{column}: error[E001]: unexpected ']'; expected '(', '+', '-', '[', a name, "
                    "a number or a string")
    assert line == "2 | …" + source.split("\n")[1][-100:]     # the last 100 columns, the caret at the end
    assert line.endswith(" 1 + 1 + ]")
    assert caret == "  | " + " " * (len(line) - 5) + "^"
    assert hint == "  = hint: this ']' closes nothing: no '[' before it is open; here certify expects an expression"


def test_a_window_in_the_middle_of_a_long_line_has_marks_on_both_sides():
    line = "".join(chr(ord("a") + i % 26) for i in range(5000))
    d = Diagnostic("E001", "m", Span(1, 2501, 1, 2504), "h", "p")
    assert render_text(d, line).split("\n")[2:4] == [
        "1 | …" + line[2467:2567] + "…",
        "  | " + " " * 34 + "^^^"]


def test_a_span_at_the_end_of_the_file_points_after_its_last_character():
    assert render_text(Diagnostic("E001", "m", Span(2, 4, 2, 5), "h", "p"), "abc\nxyz") == (
        "p:2:4: error[E001]: m\n  |\n2 | xyz\n  |    ^\n  = hint: h")


def test_spans_past_the_file_are_clamped_in_text_and_json():
    source = "ab\ncd\n"
    d = Diagnostic("E001", "m", Span(7, 9, 8, 2), "h", "p")
    assert clamp(d.span, source_lines(source)) == Span(3, 1, 3, 1)
    assert render_text(d, source) == "p:3:1: error[E001]: m\n  |\n3 | \n  | ^\n  = hint: h"
    wide = Diagnostic("E001", "m", Span(1, 40, 2, 99), "h", "p")
    assert clamp(wide.span, source_lines(source)) == Span(1, 3, 2, 3)
    json = wide.to_dict(source)
    assert (json["line"], json["column"], json["end_line"], json["end_column"]) == (1, 3, 2, 3)
    assert wide.to_dict()["column"] == 40    # without the source, the span as it is


def test_parse_and_check_clamp_their_spans():
    from certifier.check import check

    source = "data { x = [1, 2] }\nparams { w : [2] = zeros() }\nmodel f(x) = w @ x\nloss least_squares"
    spec = parse(source, "s.rq")
    spec.model.body.span = Span(40, 1, 40, 5)     # a span no real stage makes, to see it clamped
    spec.model.body.args = ()
    spec.model.body.op = "name"
    spec.model.body.attrs = {"id": "nowhere"}
    with pytest.raises(SpecError) as info:
        check(spec)
    spans = [(d.code, d.span) for d in info.value.diagnostics]
    assert ("E101", Span(4, 19, 4, 19)) in spans


def test_wide_characters_and_combining_marks_keep_the_caret_aligned():
    # '日' and '本' take two terminal columns each, the accent of 'é' (e + U+0301) none
    assert render_text(Diagnostic("E101", "m", Span(1, 12, 1, 14), "h", "p"), "x = 日本 + ab + c").split("\n")[2:4] == [
        "1 | x = 日本 + ab + c",
        "  |              ^^"]
    assert render_text(Diagnostic("E101", "m", Span(1, 9, 1, 10), "h", "p"), "x = e\u0301e + q").split("\n")[3] == (
        "  |        ^")


def test_every_diagnostic_of_parse_and_check_is_given_a_hint():
    """The fuzz reaches the common codes; this reads every `.error(...)` and `Diagnostic(...)` call
    in parse/ and check/ and wants a hint argument that is not left out or None."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "certifier"
    missing = []
    for path in sorted([*(root / "check").glob("*.py"), *(root / "parse").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in ("error", "Diagnostic"):
                continue
            hint = node.args[3] if len(node.args) >= 4 else next(
                (k.value for k in node.keywords if k.arg == "hint"), None)
            if hint is None or (isinstance(hint, ast.Constant) and not hint.value):
                missing.append(f"{path.relative_to(root)}:{node.lineno}")
    assert missing == []
