"""The stored LALR tables (grammars/rq.tables.json) against the parser lark builds from the grammar."""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from lark import Lark
from lark.exceptions import UnexpectedInput

from certifier.parse import parser as P

ROOT = Path(__file__).resolve().parent.parent
TEXT = P.grammar_path().read_text()


@pytest.fixture(scope="module")
def both():
    doc = P.stored_tables(TEXT)
    assert doc is not None, "grammars/rq.tables.json is stale: run python -m certifier.parse.tables"
    return P.build_parser(TEXT), Lark.load({"data": doc["data"], "memo": doc["memo"]})


def test_the_stored_tables_are_this_grammars():
    doc = json.loads(P.grammar_path().with_name(P.TABLES).read_text())
    assert doc["grammar_sha256"] == hashlib.sha256(TEXT.encode()).hexdigest(), \
        "grammars/rq.lark changed: run python -m certifier.parse.tables"


def _outcome(lark: Lark, text: str):
    """The tree with every node's position, or the error with its location and expected tokens."""
    try:
        tree = lark.parse(text)
    except UnexpectedInput as exc:
        return ("error", type(exc).__name__, exc.line, exc.column, sorted(getattr(exc, "expected", None) or ()))
    nodes = [(t.data, t.meta.line, t.meta.column, t.meta.end_line, t.meta.end_column)
             for t in tree.iter_subtrees() if not t.meta.empty]
    return ("tree", tree, nodes)


def _texts():
    specs = sorted(ROOT.glob("specs/**/*.rq")) + sorted(ROOT.glob("tests/**/*.rq"))
    texts = [p.read_text() for p in specs]
    rng = random.Random(0)
    alphabet = "{}()[]=,:@*+-/.\n 0123456789abcxyz\"'"
    for text in list(texts):
        for _ in range(12):           # deletions and insertions: errors at every kind of place
            i = rng.randrange(len(text) + 1)
            if rng.random() < 0.5:
                texts.append(text[:i] + text[i + rng.randint(1, 4):])
            else:
                texts.append(text[:i] + rng.choice(alphabet) + text[i:])
    return texts


def test_the_loaded_parser_is_the_built_one(both):
    built, loaded = both
    texts = _texts()
    assert len(texts) > 300
    errors = 0
    for text in texts:
        a, b = _outcome(built, text), _outcome(loaded, text)
        assert a == b
        errors += a[0] == "error"
    assert errors > 100


def test_the_interactive_parser_accepts_the_same_tokens(both):
    """Diagnostics list the tokens an interactive parse accepts where it stopped."""
    built, loaded = both
    for text in _texts()[:200]:
        states = []
        for lark in (built, loaded):
            ip = lark.parse_interactive(text)
            try:
                tokens = list(ip.iter_parse())          # the whole text, token by token
                states.append(("done", len(tokens), sorted(ip.accepts())))
            except UnexpectedInput as exc:
                states.append(("error", exc.line, exc.column, sorted(ip.accepts())))
        assert states[0] == states[1]


def test_tables_of_another_grammar_or_unreadable_are_not_used(tmp_path, monkeypatch):
    grammar = tmp_path / "rq.lark"
    grammar.write_text(TEXT)
    monkeypatch.setattr(P, "grammar_path", lambda: grammar)
    tables = tmp_path / P.TABLES
    tables.write_text(json.dumps(P.tables_of(P.build_parser(TEXT), TEXT)))
    assert P.stored_tables(TEXT) is not None
    assert P.stored_tables(TEXT + "\n// edited\n") is None          # another grammar text
    doc = json.loads(tables.read_text())
    doc["lark"] = "0.0.1"
    tables.write_text(json.dumps(doc))
    assert P.stored_tables(TEXT) is None                              # another lark
    tables.write_text("{not json")
    assert P.stored_tables(TEXT) is None
    tables.unlink()
    assert P.stored_tables(TEXT) is None
