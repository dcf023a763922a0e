"""python -m certifier.parse.tables: write grammars/rq.tables.json, the parser's LALR tables
(certifier/parse/parser.py loads them when they match the grammar and lark's version)."""
from __future__ import annotations

import json

from .parser import TABLES, build_parser, grammar_path, tables_of


def main() -> None:
    text = grammar_path().read_text()
    path = grammar_path().with_name(TABLES)
    path.write_text(json.dumps(tables_of(build_parser(text), text), separators=(",", ":")) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
