"""Grammar text -> typed AST. One LALR parser, built once; parser errors become diagnostics.

The parser's LALR tables are stored beside the grammar (grammars/rq.tables.json, written by
`python -m certifier.parse.tables`) as JSON data, and loaded when they belong to this grammar
text and this lark version: building them took 0.16 s of every run, loading them 0.01 s. JSON,
not lark's pickled cache: loading them runs no code. Any mismatch builds the parser from the
grammar as before."""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import lark
from lark import Lark, Token, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.grammar import Rule
from lark.lexer import TerminalDef
from lark.visitors import Transformer_NonRecursive

from ..diagnostics import Collector, Diagnostic, Span, SpecError, located, source_lines
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


TABLES = "rq.tables.json"


def build_parser(text: str) -> Lark:
    return Lark(text, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def tables_of(built: Lark, text: str) -> dict:
    """The stored form of a built parser's tables, keyed by its grammar text and lark's version."""
    data, memo = built.memo_serialize([TerminalDef, Rule])
    return {"grammar_sha256": hashlib.sha256(text.encode()).hexdigest(), "lark": lark.__version__,
            "data": data, "memo": memo}


def _int_keys(pairs):
    # JSON keeps dict keys as strings; lark's tables key states and memo entries by int (no
    # terminal or rule name is all digits)
    return {int(k) if k.isdigit() else k: v for k, v in pairs}


def stored_tables(text: str) -> dict | None:
    """The stored tables when they are this grammar's under this lark, else None."""
    try:
        doc = json.loads(grammar_path().with_name(TABLES).read_text(), object_pairs_hook=_int_keys)
    except (OSError, ValueError):
        return None
    if (not isinstance(doc, dict) or doc.get("grammar_sha256") != hashlib.sha256(text.encode()).hexdigest()
            or doc.get("lark") != lark.__version__):
        return None
    return doc


@lru_cache(maxsize=1)
def parser() -> Lark:
    text = grammar_path().read_text()
    doc = stored_tables(text)
    if doc is not None:
        try:
            return Lark.load({"data": doc["data"], "memo": doc["memo"]})
        except Exception:   # noqa: BLE001 - tables lark cannot read: build them
            pass
    return build_parser(text)


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


_OPEN = {"LPAR": ")", "LSQB": "]", "LBRACE": "}"}
_CLOSE = {"RPAR": "LPAR", "RSQB": "LSQB", "RBRACE": "LBRACE"}
_EXPRESSION_START = {"LPAR", "PLUS", "MINUS", "LSQB", "NAME", "NUMBER", "STRING"}
_OPERATORS = {"PLUS", "MINUS", "STAR", "SLASH", "AT", "__ANON_0"}
_KEYWORD_TYPES = {k.upper() for k in _STATEMENTS}
# how each statement is written, for hints
_FORMS = {
    "spec": '`spec "a title"`',
    "data": '`data { name = expression ... }`, `data from "file.npz"` or `data gaussian(d=5)`',
    "params": '`params { name : [shape] = initializer ... }` or `params from "theta0.npz"`',
    "model": '`model f(x) = expression` or `model torch("package.module:Net")`',
    "target": "`target expression`",
    "loss": "`loss least_squares`",
    "region": "`region ball(center=init, radius=auto)`",
    "method": "`method sampled(samples=4096, seed=3)`",
    "desingularizer": "`desingularizer log`",
    "certify": "`certify rate(floor=0, horizon=1e4)`",
}
# what an expected terminal means, said in words
_WORDS = {
    "RPAR": "')' to close the parentheses", "RSQB": "']' to close the brackets", "RBRACE": "'}' to close the block",
    "COMMA": "',' and another item", "EQUAL": "'='", "COLON": "':'", "NAME": "a name",
    "STRING": 'a string in double quotes', "NUMBER": "a number", "$END": "the end of the file",
    "LBRACE": "'{' to open a block", "LPAR": "'('", "LSQB": "'['", "FROM": "'from'",
}


def _words(expected: set[str]) -> str:
    """The expected terminals in words: 'an expression', 'an operator', 'a new statement' for the
    usual groups, then each other one."""
    rest = set(expected)
    items = []
    if _EXPRESSION_START <= rest:
        items.append("an expression")
        rest -= _EXPRESSION_START
    if len(_OPERATORS & rest) >= 4:
        items.append("an operator (+ - * / @ **)")
        rest -= _OPERATORS
    if len(_KEYWORD_TYPES & rest) >= 5:
        items.append("a new statement, which starts with a keyword")
        rest -= _KEYWORD_TYPES
    items += sorted(_WORDS.get(t, _token_text(t)) for t in rest)
    if not items:
        return "nothing more"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _context(source: str, pos: int) -> tuple[list[Token], Token | None, Token | None]:
    """Before offset `pos`: the brackets still open, the last statement keyword at the top level and
    the last token, as the parser read them (its lexer reads `data2` as 'data' '2' where no name may
    stand, so the text is parsed again up to the error)."""
    stack: list[Token] = []
    keyword = previous = None
    try:
        for tok in parser().parse_interactive(source).iter_parse():
            if tok.start_pos >= pos:
                break
            if tok.type in _OPEN:
                stack.append(tok)
            elif tok.type in _CLOSE and stack and stack[-1].type == _CLOSE[tok.type]:
                stack.pop()
            elif tok.type in _KEYWORD_TYPES and not stack:
                keyword = tok
            previous = tok
    except UnexpectedInput:   # the error itself: the context so far is what counts
        pass
    return stack, keyword, previous


def _at(tok: Token) -> str:
    return f"line {tok.line}, column {tok.column}"


def _pointer(tok: Token | None, expected: set[str], stack: list[Token], keyword: Token | None,
             previous: Token | None) -> str | None:
    """What is probably wrong, where the tokens around the error tell (None where they do not)."""
    kind = tok.type if tok is not None else "$END"
    glued = (tok is not None and previous is not None and previous.end_pos == tok.start_pos
             and str(previous)[-1:].isalnum() and str(tok)[:1].isalnum())
    if glued and previous.type in _KEYWORD_TYPES:
        # where a name cannot stand, lark reads `data2` as the keyword 'data' and then '2'
        return f"'{previous}{tok}' is read as the keyword '{previous}' followed by '{tok}': put a space after '{previous}'"
    if glued and previous.type == "NUMBER":
        return (f"'{previous}{tok}' is read as the number '{previous}' followed by '{tok}': a name cannot start "
                "with a digit")
    stray = kind in _CLOSE and kind not in expected    # a closing bracket where none may stand
    if stray and not any(t.type == _CLOSE[kind] for t in stack):
        text = f"this '{tok}' closes nothing: no '{_TOKEN_TEXT[_CLOSE[kind]].strip(chr(39))}' before it is open"
        if stack and stack[-1].type != "LBRACE":
            text += f"; the '{stack[-1]}' at {_at(stack[-1])} is open"
        return text
    # a keyword read as a name (the parser takes `model` for a name inside brackets) ends it too
    keyword_next = kind in _KEYWORD_TYPES or (previous is not None and previous.type == "NAME"
                                              and str(previous) in _STATEMENTS and stack[-1:] != [])
    if stack and (keyword_next or kind == "$END" or (stray and _CLOSE[kind] != stack[-1].type)):
        opened = stack[-1]
        return f"the '{opened}' at {_at(opened)} is not closed: add '{_OPEN[opened.type]}'"
    if kind in _KEYWORD_TYPES and "NAME" in expected:
        return f"'{tok}' is a keyword and cannot be used as a name"
    if kind in _KEYWORD_TYPES and keyword is not None:
        return f"the '{keyword}' statement at line {keyword.line} is not finished"
    if previous is not None and (previous.type in _OPERATORS | {"COMMA", "EQUAL", "COLON"}) \
            and _EXPRESSION_START <= expected:
        return f"'{previous}' must be followed by an expression: a name, a number, '(' or a sign"
    if kind == "STRING" and "NAME" in expected:
        return "a name is written without quotes"
    if kind == "NUMBER" and "NAME" in expected and not _OPERATORS & expected:
        return "a name starts with a letter or '_'"
    if (kind in ("NAME", "NUMBER", "STRING", "LPAR") and previous is not None
            and previous.type in ("NAME", "NUMBER", "STRING", "RPAR", "RSQB") and _OPERATORS <= expected):
        return f"an operator or ',' may be missing between '{_shown(str(previous))}' and '{_shown(str(tok))}'"
    if expected == {"EQUAL"} and kind == "COLON":
        return "data assignments are written `name = expression`"
    if expected == {"COLON"}:
        return "parameters are declared `name : [shape] = initializer`"
    if len(_KEYWORD_TYPES & expected) >= 5:
        return "each statement starts with a keyword: " + ", ".join(_STATEMENTS)
    return None


def _syntax_hint(tok: Token | None, expected: set[str], source: str, pos: int) -> str:
    """The hint of every E001 at a token (None: the end of the file): what is probably wrong where
    the context tells, what certify expects there in words, and how the statement is written."""
    stack, keyword, previous = _context(source, pos)
    pointer = _pointer(tok, expected, stack, keyword, previous)
    parts = [pointer]
    top_level = len(_KEYWORD_TYPES & expected) >= 5    # the statement before is complete
    # a pointer that says what comes next, or how the statement is written, is the whole hint
    complete = pointer is not None and any(w in pointer for w in ("followed by an", "written", "declared"))
    if not (complete or top_level and pointer is not None):
        parts.append(f"here certify expects {_words(expected)}")
    if (keyword is not None and not (complete or top_level) and not any(t.type != "LBRACE" for t in stack)
            and "closes nothing" not in (pointer or "")):
        parts.append(f"a {keyword} statement is written {_FORMS[str(keyword)]}")
    return "; ".join(p for p in parts if p)


_CHARACTER_HINTS = {
    "'": "strings use double quotes",
    ";": "statements end at the next keyword and need no ';'",
    "\ufeff": "the file starts with a byte-order mark: save it as UTF-8 without one",
}


def _character_hint(ch: str) -> str:
    if ch == '"':
        return "this string is not closed: end it with '\"' on the same line"
    if ch in _CHARACTER_HINTS:
        return _CHARACTER_HINTS[ch]
    if not ch.isprintable():
        return ("this invisible character (a form feed, line separator or other control character) "
                "is not read as a space: replace it with spaces or a newline")
    return ("certify reads names, numbers, double-quoted strings, the operators + - * / @ ** = : , and "
            "brackets; comments start with '#'")


def _shown(text: str, limit: int = 40) -> str:
    """A token in a message, cut to `limit` characters."""
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _syntax_diagnostic(err: UnexpectedInput, source: str, collector: Collector) -> None:
    if isinstance(err, UnexpectedCharacters):
        ch = source[err.pos_in_stream] if err.pos_in_stream < len(source) else ""
        collector.error("E001", f"unexpected character {ch!r}", Span.point(err.line, err.column),
                        _character_hint(ch))
        return
    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        # at the end of the last line with anything on it (lark's own position for the end may be
        # past the last line)
        lines = source_lines(source.rstrip(" \t\f\r\n")) or [""]
        expected = set(err.expected)
        collector.error("E001", f"unexpected end of file; expected {_expected_text(expected)}",
                        Span.point(len(lines), len(lines[-1]) + 1),
                        _syntax_hint(None, expected, source, len(source)))
        return
    assert isinstance(err, UnexpectedToken)
    tok = err.token
    expected = set(err.expected)
    collector.error("E001", f"unexpected {_shown(str(tok))!r}; expected {_expected_text(expected)}",
                    _tspan(tok), _syntax_hint(tok, expected, source, tok.start_pos))


_ONCE = ("title", "data", "params", "model", "target", "loss", "region", "method", "desingularizer", "certify")


def decode(raw: bytes, path: str = "<spec>") -> str:
    """A spec file's bytes as text, or E003 located at the first byte that is not UTF-8 (its line
    and column counted in the characters before it)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8").split("\n")
        raise SpecError([Diagnostic(
            "E003", f"the spec file is not valid UTF-8 text (byte 0x{raw[exc.start]:02x})",
            Span.point(len(before), len(before[-1]) + 1),
            "certify reads .rq spec files written in UTF-8; save the file as UTF-8", path)]) from None


def parse(source: str, path: str = "<spec>") -> Spec:
    """Parse a spec's text. Raises SpecError (E001-E004) with located diagnostics."""
    try:
        return _parse(source, path)
    except SpecError as exc:
        located(exc.diagnostics, source, path)
        raise


def _parse(source: str, path: str) -> Spec:
    collector = Collector(path)
    if "\x00" in source:
        before = source[: source.index("\x00")].split("\n")
        collector.error("E003", "the spec file is binary, not text", Span.point(len(before), len(before[-1]) + 1),
                        "certify reads .rq spec files written in UTF-8; this is the first NUL byte")
        collector.raise_if_any()
    stripped = "\n".join(line.split("#", 1)[0] for line in source_lines(source)).strip()
    if not stripped:
        collector.error("E002", "the spec is empty", Span.point(1, 1),
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
