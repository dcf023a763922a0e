"""parse: .rq text -> typed AST with source locations."""
from ..language.ast import Call, Expr, Spec
from .parser import decode, parse

__all__ = ["Call", "Expr", "Spec", "decode", "parse"]
