"""parse: .rq text -> typed AST with source locations."""
from .ast import Call, Expr, Spec
from .parser import parse

__all__ = ["Call", "Expr", "Spec", "parse"]
