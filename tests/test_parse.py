"""Golden tests of the parser: AST facts of a full spec, and the exact text of syntax errors."""
from __future__ import annotations

import pytest

from certifier.diagnostics import Span, SpecError, render_text
from certifier.language.ast import DataBlock, DataFrom, ParamsBlock, ParamsFrom
from certifier.parse import parse

FULL = """\
spec "two-layer tanh"   # a title
data {
  x = normal(shape=[64, 3], seed=0)
  w = [1, 2, 3]
  y = tanh(x @ w) + 0.1 * normal(shape=[64], seed=1)
}
params {
  W : [512, 3] = normal(seed=1)
  a : [512] = normal(std=1/sqrt(512), seed=2)
}
model f(x) = a @ tanh(W @ x) / sqrt(512)
loss least_squares
region ball(center=init, radius=auto)
method sampled(samples=4096, seed=0)
desingularizer auto
certify rate(floor=0, horizon=1e4)
"""


def errors(source: str, path: str = "bad.rq") -> list[str]:
    with pytest.raises(SpecError) as info:
        parse(source, path)
    return [render_text(d, source) for d in info.value.diagnostics]


def body(expr: str):
    return parse(f"model f(x) = {expr}\n").model.body


def tree(e) -> object:
    """A compact form of an expression: numbers, names, and (op, args...) tuples."""
    if e.op == "number":
        return e.attrs["value"]
    if e.op == "name":
        return e.attrs["id"]
    if e.op == "none":
        return None
    if e.op == "call":
        return ("call", e.attrs["func"], *map(tree, e.args), *(f"{k}={tree(v)}" for k, v in e.kwargs.items()))
    return (e.op, *map(tree, e.args))


def test_full_spec_ast():
    spec = parse(FULL, "full.rq")
    assert spec.path == "full.rq" and spec.source == FULL
    assert spec.title == "two-layer tanh"
    assert spec.title_span == Span(1, 6, 1, 22)
    assert isinstance(spec.data, DataBlock)
    assert [a.name for a in spec.data.assigns] == ["x", "w", "y"]
    x = spec.data.assigns[0]
    assert x.span == Span(3, 3, 3, 4)
    assert tree(x.value) == ("call", "normal", "shape=('list', 64, 3)", "seed=0")
    assert x.value.attrs["fspan"] == Span(3, 7, 3, 13)
    assert tree(spec.data.assigns[1].value) == ("list", 1, 2, 3)
    assert isinstance(spec.params, ParamsBlock)
    W, a = spec.params.decls
    assert (W.name, [tree(d) for d in W.shape], W.span, W.shape_span) == (
        "W", [512, 3], Span(8, 3, 8, 4), Span(8, 7, 8, 15))
    assert tree(a.init) == ("call", "normal", "std=('div', 1, ('call', 'sqrt', 512))", "seed=2")
    assert (spec.model.name, spec.model.arg) == ("f", "x")
    assert spec.model.span == Span(11, 7, 11, 8) and spec.model.arg_span == Span(11, 9, 11, 10)
    assert tree(spec.model.body) == (
        "div", ("matmul", "a", ("call", "tanh", ("matmul", "W", "x"))), ("call", "sqrt", 512))
    assert spec.model.body.span == Span(11, 14, 11, 41)
    assert spec.loss.name == "least_squares" and spec.loss.span == Span(12, 6, 12, 19)
    assert spec.region.name == "ball"
    assert {k: tree(v.value) for k, v in spec.region.kwargs.items()} == {"center": "init", "radius": "auto"}
    assert spec.region.kwargs["radius"].span == Span(13, 26, 13, 32)
    assert spec.region.kwargs["radius"].value.span == Span(13, 33, 13, 37)
    assert spec.method.name == "sampled" and tree(spec.method.kwargs["samples"].value) == 4096
    assert spec.desingularizer.name == "auto" and not spec.desingularizer.kwargs
    assert spec.certify.name == "rate"
    assert spec.certify.kwargs["horizon"].value.attrs == {"value": 1e4, "text": "1e4"}


def test_statements_are_optional_and_order_free():
    spec = parse('loss least_squares\nmodel g(u) = u\nparams from "theta0.npz"\ndata from "x.npy", "y.npy"\n')
    assert spec.title is None and spec.region is None and spec.certify is None
    assert isinstance(spec.params, ParamsFrom) and spec.params.path == "theta0.npz"
    assert spec.params.path_span == Span(3, 13, 3, 25)
    assert isinstance(spec.data, DataFrom)
    assert spec.data.paths == [("x.npy", Span(4, 11, 4, 18)), ("y.npy", Span(4, 20, 4, 27))]
    assert (spec.model.name, spec.model.arg) == ("g", "u")


@pytest.mark.parametrize("expr, expected", [
    ("-x**2", ("neg", ("pow", "x", 2))),
    ("2**-1", ("pow", 2, ("neg", 1))),
    ("x**2**3", ("pow", "x", ("pow", 2, 3))),
    ("a - b - c", ("sub", ("sub", "a", "b"), "c")),
    ("a + b * c", ("add", "a", ("mul", "b", "c"))),
    ("a @ b * c", ("mul", ("matmul", "a", "b"), "c")),
    ("-a @ b", ("matmul", ("neg", "a"), "b")),
    ("+a", "a"),
    ("(a + b) / c", ("div", ("add", "a", "b"), "c")),
    ("x[0]", ("index", "x", 0)),
    ("x[-1, 1:3]", ("index", "x", ("neg", 1), ("slice", 1, 3))),
    ("x[:2, 1:]", ("index", "x", ("slice", None, 2), ("slice", 1, None))),
    ("W[0][1]", ("index", ("index", "W", 0), 1)),
    ("sum(x, axis=0)", ("call", "sum", "x", "axis=0")),
    ("softmax(W @ x)", ("call", "softmax", ("matmul", "W", "x"))),
    ("1.5e-3", 1.5e-3),
    ("pi", "pi"),
])
def test_expression_shapes(expr, expected):
    assert tree(body(expr)) == expected


def test_number_literals_keep_int_and_float():
    assert body("3").attrs["value"] == 3 and isinstance(body("3").attrs["value"], int)
    assert isinstance(body("3.0").attrs["value"], float)
    assert isinstance(body("1e3").attrs["value"], float)


def test_comments_and_newlines_are_whitespace():
    spec = parse("# header\nmodel   f ( x )\n  =  # a comment\n  x   # end\n")
    assert tree(spec.model.body) == "x"
    assert spec.model.body.span == Span(4, 3, 4, 4)


def test_unexpected_token():
    assert errors("model f(x) = W @ @ x\n") == [
        "bad.rq:1:18: error[E001]: unexpected '@'; expected '(', '+', '-', '[', a name, a number or a string\n"
        "  |\n"
        "1 | model f(x) = W @ @ x\n"
        "  |                  ^\n"
        "  = hint: '@' must be followed by an expression: a name, a number, '(' or a sign"]


def test_unexpected_token_in_data_block():
    assert errors("data { x : 1 }") == [
        "bad.rq:1:10: error[E001]: unexpected ':'; expected '='\n"
        "  |\n"
        "1 | data { x : 1 }\n"
        "  |          ^\n"
        "  = hint: data assignments are written `name = expression`"]


def test_unexpected_token_in_params_block():
    assert errors("params { W = 1 }") == [
        "bad.rq:1:12: error[E001]: unexpected '='; expected ':'\n"
        "  |\n"
        "1 | params { W = 1 }\n"
        "  |            ^\n"
        "  = hint: parameters are declared `name : [shape] = initializer`"]


def test_statement_must_start_with_a_keyword():
    assert errors("x = 1\n") == [
        "bad.rq:1:1: error[E001]: unexpected 'x'; expected a statement (spec, data, params, model, "
        "target, loss, region, method, desingularizer, certify)\n"
        "  |\n"
        "1 | x = 1\n"
        "  | ^\n"
        "  = hint: each statement starts with a keyword: spec, data, params, model, target, loss, region, "
        "method, desingularizer, certify"]


def test_unexpected_character():
    assert errors("data {\n  x = 1 ?\n}\n") == [
        "bad.rq:2:9: error[E001]: unexpected character '?'\n"
        "  |\n"
        "2 |   x = 1 ?\n"
        "  |         ^\n"
        "  = hint: certify reads names, numbers, double-quoted strings, the operators + - * / @ ** = : , and "
        "brackets; comments start with '#'"]


def test_unexpected_end_of_file():
    assert errors("model f(x) = tanh(W @ x\n") == [
        "bad.rq:1:24: error[E001]: unexpected end of file; expected ')' or ','\n"
        "  |\n"
        "1 | model f(x) = tanh(W @ x\n"
        "  |                        ^\n"
        "  = hint: the '(' at line 1, column 18 is not closed: add ')'; here certify expects ')' to close the "
        "parentheses or ',' and another item"]


def test_unexpected_end_of_file_in_block():
    assert errors("params {\n  W : [3] = normal(seed=1)\n") == [
        "bad.rq:2:27: error[E001]: unexpected end of file; expected '}' or a name\n"
        "  |\n"
        "2 |   W : [3] = normal(seed=1)\n"
        "  |                           ^\n"
        "  = hint: the '{' at line 1, column 8 is not closed: add '}'; here certify expects '}' to close the "
        "block or a name; a params statement is written `params { name : [shape] = initializer ... }` or "
        "`params from \"theta0.npz\"`"]


# --- the hint of every syntax error (issue 20): what is expected in words, and what is probably wrong

def hint(source: str) -> tuple[str, str]:
    with pytest.raises(SpecError) as info:
        parse(source, "bad.rq")
    (d,) = info.value.diagnostics
    return d.message, d.hint


@pytest.mark.parametrize("source, message, expected_hint", [
    ("data2 = x ** x ** x\n", "unexpected '2'; expected '{' or a name",
     "'data2' is read as the keyword 'data' followed by '2': put a space after 'data'; here certify expects "
     "'{' to open a block or a name; a data statement is written `data { name = expression ... }`, "
     "`data from \"file.npz\"` or `data gaussian(d=5)`"),
    ("data { x = 1 }\nloss least_squares(\nmodel f(x) = x\n",
     "unexpected 'f'; expected '(', ')', '*', '**', '+', ',', '-', '/', '=', '@' or '['",
     "the '(' at line 2, column 19 is not closed: add ')'; here certify expects an operator (+ - * / @ **), "
     "'(', ')' to close the parentheses, ',' and another item, '=' or '['"),
    ("region ball(radius=1\nmethod sampled\n", "unexpected 'method'; expected ')' or ','",
     "the '(' at line 1, column 12 is not closed: add ')'; here certify expects ')' to close the parentheses "
     "or ',' and another item"),
    ("data {\n  x = (1 ]\n}\n", "unexpected ']'; expected ')'",
     "this ']' closes nothing: no '[' before it is open; the '(' at line 2, column 7 is open; here certify "
     "expects ')' to close the parentheses"),
    ("data { x = 1 }\n}\n", "unexpected '}'; expected a statement (spec, data, params, model, "
     "target, loss, region, method, desingularizer, certify)",
     "this '}' closes nothing: no '{' before it is open"),
    ("data { x = f(1,) }\n", "unexpected ')'; expected '(', '+', '-', '[', a name, a number or a string",
     "',' must be followed by an expression: a name, a number, '(' or a sign"),
    ("data { x = 2 y }\n", "unexpected '}'; expected '='",     # y starts the next assignment
     "here certify expects '='; a data statement is written `data { name = expression ... }`, "
     "`data from \"file.npz\"` or `data gaussian(d=5)`"),
    ("data { x = [16tanh] }\n", "unexpected 'tanh'; expected ',' or ']'",
     "'16tanh' is read as the number '16' followed by 'tanh': a name cannot start with a digit; here certify "
     "expects ',' and another item or ']' to close the brackets"),
    ('spec\ndata { x = 1 }\n', "unexpected 'data'; expected a string",
     "the 'spec' statement at line 1 is not finished; here certify expects a string in double quotes; a spec "
     "statement is written `spec \"a title\"`"),
    ('spec "title\n', "unexpected character '\"'", "this string is not closed: end it with '\"' on the same line"),
    ("data { x = 1 }\x0c;\n", "unexpected character ';'", "statements end at the next keyword and need no ';'"),
    ("data { x = 1\u2028}\n", "unexpected character '\\u2028'",
     "this invisible character (a form feed, line separator or other control character) is not read as a "
     "space: replace it with spaces or a newline"),
    ("model f(x) = " + "x" * 60 + " y\n", "unexpected 'y'; expected end of file or a statement (spec, data, "
     "params, model, target, loss, region, method, desingularizer, certify)",
     "each statement starts with a keyword: spec, data, params, model, target, loss, region, method, "
     "desingularizer, certify"),
    ('data { x = 1 }\n"' + "a" * 60 + '"\n',     # a long token is cut in the message
     "unexpected '\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…'; expected a statement (spec, data, params, model, "
     "target, loss, region, method, desingularizer, certify)",
     "each statement starts with a keyword: spec, data, params, model, target, loss, region, method, "
     "desingularizer, certify"),
])
def test_syntax_error_hints(source, message, expected_hint):
    assert hint(source) == (message, expected_hint)


def test_duplicate_statement():
    assert errors("data { x = 1 }\nloss least_squares\ndata { y = 2 }\n") == [
        "bad.rq:3:1: error[E004]: 'data' appears more than once\n"
        "  |\n"
        "3 | data { y = 2 }\n"
        "  | ^^^^\n"
        "  = hint: the first one is at line 1; keep one"]


def test_duplicate_keyword_argument():
    assert errors("region ball(radius=1, radius=2)\n") == [
        "bad.rq:1:23: error[E104]: keyword 'radius' is given twice\n"
        "  |\n"
        "1 | region ball(radius=1, radius=2)\n"
        "  |                       ^^^^^^\n"
        "  = hint: remove one of them"]


@pytest.mark.parametrize("source, shown", [("", ""), ("\n\n  \n", ""),
                                           ("# only a comment\n# and another\n", "# only a comment")])
def test_empty_file_is_located_at_its_start(source, shown):
    assert errors(source) == [
        "bad.rq:1:1: error[E002]: the spec is empty\n"
        "  |\n"
        f"1 | {shown}\n"
        "  | ^\n"
        "  = hint: a spec needs at least data, params, model and loss statements; see docs/language.md"]


def test_binary_file_is_located_at_its_first_nul():
    assert errors("loss least_squares\nspec \x01\x00\x02") == [
        "bad.rq:2:7: error[E003]: the spec file is binary, not text\n"
        "  |\n"
        "2 | spec \u2401\u2400\u2402\n"
        "  |       ^\n"
        "  = hint: certify reads .rq spec files written in UTF-8; this is the first NUL byte"]


def test_invalid_utf8_is_located_at_its_first_bad_byte():
    from certifier.parse import decode

    raw = 'spec "é"\nloss least_squares \xff'.encode("utf-8").replace(b"\xc3\xbf", b"\xff")
    with pytest.raises(SpecError) as info:
        decode(raw, "bad.rq")
    assert [render_text(d, raw.decode("utf-8", errors="replace")) for d in info.value.diagnostics] == [
        "bad.rq:2:20: error[E003]: the spec file is not valid UTF-8 text (byte 0xff)\n"
        "  |\n"
        "2 | loss least_squares \ufffd\n"
        "  |                    ^\n"
        "  = hint: certify reads .rq spec files written in UTF-8; save the file as UTF-8"]
    assert decode("spec \"é\"\n".encode("utf-8")) == "spec \"é\"\n"
