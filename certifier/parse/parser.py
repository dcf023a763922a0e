"""Grammar text -> typed AST. One LALR parser, built once; parser errors become diagnostics."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.visitors import Transformer_NonRecursive

from ..diagnostics import Collector, Diagnostic, Span, SpecError
from ..language.ast import (
    Assign,
    Call,
    DataBlock,
    DataDist,
    DataFrom,
    Expr,
    Keyword,
    Model,
    ModelImport,
    ParamDecl,
    ParamsBlock,
    ParamsFrom,
    Spec,
    Target,
)


def grammar_path() -> Path:
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "grammars" / "rq.lark", here.parent / "grammars" / "rq.lark"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("grammars/rq.lark is missing from the installation")


@lru_cache(maxsize=1)
def parser() -> Lark:
    return Lark(grammar_path().read_text(), parser="lalr", propagate_positions=True,
                maybe_placeholders=True)


def _span(meta) -> Span:
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _tspan(tok: Token) -> Span:
    return Span(tok.line, tok.column, tok.end_line, tok.end_column)


def _unquote(tok: Token) -> str:
    import ast as pyast

    try:
        return pyast.literal_eval(str(tok))
    except (ValueError, SyntaxError) as exc:
        raise SpecError([Diagnostic("E001", f"invalid string {str(tok)}: {exc}", _tspan(tok),
                                    "escape a backslash as \\\\, or use forward slashes in paths")]) from None


_BINARY = ("add", "sub", "mul", "div", "matmul", "pow")

MAX_DEPTH = 100    # expressions nest at most this deep (later stages walk them recursively)
MAX_DIGITS = 300   # digits of an integer literal (a double holds at most about 1.8e308)


@v_args(meta=True)
class ToAst(Transformer_NonRecursive):
    """Parse tree -> AST, without recursion (`x ** x ** ...` may be long). Any rule without a
    method here is a bug, and raises."""

    def __default__(self, data, children, meta):
        raise NotImplementedError(f"no AST rule for grammar rule {data!r}")

    # expressions -------------------------------------------------------------
    def number(self, meta, c):
        text = str(c[0])
        if any(ch in text for ch in ".eE"):
            value = float(text)
        elif len(text) > MAX_DIGITS:    # before int(): Python refuses over 4300 digits
            raise SpecError([Diagnostic(
                "E109", f"this integer has {len(text)} digits, more than {MAX_DIGITS}", _tspan(c[0]),
                "write large numbers in scientific notation, such as 1e300 (a double holds at most "
                "about 1.8e308)")])
        else:
            value = int(text)
        return Expr("number", attrs={"value": value, "text": text}, span=_span(meta))

    def name(self, meta, c):
        return Expr("name", attrs={"id": str(c[0])}, span=_span(meta))

    def string(self, meta, c):
        return Expr("string", attrs={"value": _unquote(c[0])}, span=_span(meta))

    def list(self, meta, c):
        return Expr("list", tuple(x for x in c if x is not None), span=_span(meta))

    def neg(self, meta, c):
        return Expr("neg", (c[0],), span=_span(meta))

    def index(self, meta, c):
        return Expr("index", tuple(c), span=_span(meta))

    def slice(self, meta, c):
        parts = tuple(x if x is not None else Expr("none") for x in c)
        return Expr("slice", parts, span=_span(meta))

    def call(self, meta, c):
        fname, (args, kwargs, _) = c
        return Expr("call", tuple(args), attrs={"func": str(fname), "fspan": _tspan(fname)},
                    span=_span(meta), kwargs={k: kw.value for k, kw in kwargs.items()})

    def arguments(self, meta, c):
        args, kwargs = [], {}
        for item in c:
            if item is None:
                continue
            if isinstance(item, Keyword):
                if item.name in kwargs:
                    raise SpecError([Diagnostic("E104", f"keyword '{item.name}' is given twice", item.span,
                                                "remove one of them")])
                kwargs[item.name] = item
            else:
                args.append(item)
        return args, kwargs, _span(meta)

    def keyword(self, meta, c):
        return Keyword(str(c[0]), c[1], _tspan(c[0]))

    # statements --------------------------------------------------------------
    def start(self, meta, c):
        return list(c)

    def title(self, meta, c):
        return ("title", _unquote(c[0]), _tspan(c[0]))

    def assign(self, meta, c):
        return Assign(str(c[0]), c[1], _tspan(c[0]))

    def data_block(self, meta, c):
        return DataBlock(list(c), _span(meta))

    def data_from(self, meta, c):
        return DataFrom([(_unquote(t), _tspan(t)) for t in c], _span(meta))

    def data_dist(self, meta, c):
        name, (args, kwargs, _) = c[0], c[1]
        assigns = [a for a in c[2:] if a is not None]
        return DataDist(str(name), args, kwargs, assigns, _span(meta), _tspan(name))

    def target(self, meta, c):
        return Target(c[0], Span(meta.line, meta.column, meta.line, meta.column + len("target")))

    def shape(self, meta, c):
        return [x for x in c if x is not None], _span(meta) if c else Span(meta.line, meta.column, meta.line, meta.column + 2)

    def param_decl(self, meta, c):
        (dims, shape_span), init = c[1], c[2]
        return ParamDecl(str(c[0]), dims, init, _tspan(c[0]), shape_span)

    def params_block(self, meta, c):
        return ParamsBlock(list(c), _span(meta))

    def params_from(self, meta, c):
        return ParamsFrom(_unquote(c[0]), _tspan(c[0]), _span(meta))

    def model(self, meta, c):
        return Model(str(c[0]), str(c[1]), c[2], _tspan(c[0]), _tspan(c[1]))

    def model_import(self, meta, c):
        return ModelImport(str(c[0]), _unquote(c[1]), _tspan(c[0]), _tspan(c[1]))

    def _statement_call(self, kind, meta, c):
        name, arguments = c
        args, kwargs, aspan = arguments if arguments is not None else ([], {}, None)
        return (kind, Call(str(name), args, kwargs, _tspan(name), _span(meta)))

    def loss(self, meta, c):
        return self._statement_call("loss", meta, c)

    def region(self, meta, c):
        return self._statement_call("region", meta, c)

    def method(self, meta, c):
        return self._statement_call("method", meta, c)

    def desingularizer(self, meta, c):
        return self._statement_call("desingularizer", meta, c)

    def certify(self, meta, c):
        return self._statement_call("certify", meta, c)


for _op in _BINARY:
    setattr(ToAst, _op, v_args(meta=True)(
        lambda self, meta, c, _op=_op: Expr(_op, (c[0], c[1]), span=_span(meta))))


# Readable names for terminals in "expected ..." lists.
_TOKEN_TEXT = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'",
    "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'",
    "SLASH": "'/'", "AT": "'@'", "__ANON_0": "'**'", "$END": "end of file",
}


def _token_text(name: str) -> str:
    if name in _TOKEN_TEXT:
        return _TOKEN_TEXT[name]
    term = {t.name: t for t in parser().terminals}.get(name)
    if term is not None and term.pattern.type == "str":
        return f"'{term.pattern.value}'"
    return name.lower()


_STATEMENTS = ("spec", "data", "params", "model", "target", "loss", "region", "method", "desingularizer",
               "certify")


def _expected_text(expected: set[str]) -> str:
    names = sorted({_token_text(e) for e in expected})
    keywords = [n for n in names if n.strip("'") in _STATEMENTS]
    others = [n for n in names if n not in keywords]
    if keywords and len(keywords) >= 5:
        others.append("a statement (" + ", ".join(_STATEMENTS) + ")")
    else:
        others.extend(keywords)
    if len(others) == 1:
        return others[0]
    return ", ".join(others[:-1]) + " or " + others[-1]


def _syntax_diagnostic(err: UnexpectedInput, source: str, collector: Collector) -> None:
    if isinstance(err, UnexpectedCharacters):
        ch = source[err.pos_in_stream] if err.pos_in_stream < len(source) else ""
        collector.error("E001", f"unexpected character {ch!r}", Span.point(err.line, err.column),
                        "comments start with '#'; strings use double quotes")
        return
    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        lines = source.rstrip().splitlines() or [""]
        line = len(lines)
        col = len(lines[-1]) + 1
        expected = err.expected
        collector.error("E001", f"unexpected end of file; expected {_expected_text(set(expected))}",
                        Span.point(line, col), "a bracket or a statement is left open")
        return
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    shown = str(tok).replace("\n", "\\n")
    collector.error("E001", f"unexpected {shown!r}; expected {_expected_text(set(err.expected))}",
                    _tspan(tok), _syntax_hint(tok, set(err.expected)))


def _syntax_hint(tok: Token, expected: set[str]) -> str | None:
    if tok.type == "NAME" and str(tok) in _STATEMENTS:
        return f"'{tok}' is a keyword and cannot be used as a name"
    if "EQUAL" in expected and tok.type in ("COLON",):
        return "data assignments are written `name = expression`"
    if "COLON" in expected:
        return "parameters are declared `name : [shape] = initializer`"
    if tok.type == "NAME":
        return "each statement starts with a keyword: " + ", ".join(_STATEMENTS)
    return None


_ONCE = ("title", "data", "params", "model", "target", "loss", "region", "method", "desingularizer", "certify")


def parse(source: str, path: str = "<spec>") -> Spec:
    """Parse a spec's text. Raises SpecError (E001-E004) with located diagnostics."""
    collector = Collector(path)
    if "\x00" in source:
        collector.error("E003", "the spec file is binary, not text", None,
                        "certify reads .rq spec files written in UTF-8")
        collector.raise_if_any()
    stripped = "\n".join(line.split("#", 1)[0] for line in source.splitlines()).strip()
    if not stripped:
        collector.error("E002", "the spec is empty", None,
                        "a spec needs at least data, params, model and loss statements; see docs/language.md")
        collector.raise_if_any()
    try:
        tree = parser().parse(source)
    except UnexpectedInput as err:
        _syntax_diagnostic(err, source, collector)
        collector.raise_if_any()
    try:
        statements = ToAst().transform(tree)
    except (RecursionError, VisitError) as exc:  # lark wraps transformer errors
        inner = getattr(exc, "orig_exc", exc)
        if isinstance(inner, SpecError):
            for d in inner.diagnostics:
                d.path = path
            raise inner from None
        if not isinstance(inner, RecursionError):
            raise
        collector.error("E109", "the spec nests expressions too deeply to analyse", Span.point(1, 1),
                        DEPTH_HINT)
        collector.raise_if_any()
    spec = Spec(path=path, source=source)
    seen: dict[str, Span] = {}
    for st in statements:
        kind, node, span = _classify(st)
        if kind in seen:
            collector.error("E004", f"'{_keyword(kind)}' appears more than once", span,
                            f"the first one is at line {seen[kind].line}; keep one")
            continue
        seen[kind] = span
        if kind == "title":
            spec.title, spec.title_span = node, span
        else:
            setattr(spec, kind, node)
    too_deep(spec, collector)
    collector.raise_if_any()
    return spec


DEPTH_HINT = (f"at most {MAX_DEPTH} levels (parentheses do not count): split it into several data "
              "statements or simplify it")


def expressions(spec: Spec):
    """Every top-level expression of a spec."""
    if isinstance(spec.data, (DataBlock, DataDist)):
        yield from (a.value for a in spec.data.assigns)
    if isinstance(spec.data, DataDist):
        yield from spec.data.args
        yield from (k.value for k in spec.data.kwargs.values())
    if spec.target is not None:
        yield spec.target.body
    if isinstance(spec.params, ParamsBlock):
        for d in spec.params.decls:
            yield from d.shape
            yield d.init
    if isinstance(spec.model, Model):
        yield spec.model.body
    for call in (spec.loss, spec.region, spec.method, spec.desingularizer, spec.certify):
        if call is not None:
            yield from call.args
            yield from (k.value for k in call.kwargs.values())


def too_deep(spec: Spec, collector: Collector) -> bool:
    """E109 at the first sub-expression nested deeper than MAX_DEPTH (walked without recursion)."""
    found = False
    for top in expressions(spec):
        stack = [(top, 1)]
        while stack:
            e, depth = stack.pop()
            if depth > MAX_DEPTH:
                span = e.span or top.span
                collector.error("E109", f"this expression is nested deeper than {MAX_DEPTH} levels",
                                Span.point(span.line, span.column) if span else None, DEPTH_HINT)
                found = True
                break
            stack.extend((a, depth + 1) for a in e.args)
            stack.extend((v, depth + 1) for v in e.kwargs.values())
    return found


def _keyword(kind: str) -> str:
    return "spec" if kind == "title" else kind


def _classify(st):
    if isinstance(st, tuple) and st[0] == "title":
        return "title", st[1], st[2]
    if isinstance(st, tuple):  # a statement call: point at its keyword
        full = st[1].full_span
        return st[0], st[1], Span(full.line, full.column, full.line, full.column + len(st[0]))
    if isinstance(st, (DataBlock, DataFrom, DataDist)):
        return "data", st, Span(st.span.line, st.span.column, st.span.line, st.span.column + 4)
    if isinstance(st, (ParamsBlock, ParamsFrom)):
        return "params", st, Span(st.span.line, st.span.column, st.span.line, st.span.column + 6)
    if isinstance(st, (Model, ModelImport)):
        return "model", st, st.span
    if isinstance(st, Target):
        return "target", st, st.span
    raise TypeError(st)
