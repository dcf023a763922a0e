"""Typed AST of a .rq spec. Every node carries its source span.

Expressions are one node type keyed by operator (`Expr.op`), so that each analysis
(shape, evaluate, interval, ...) is a table of rules keyed by operator.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..diagnostics import Span

# Expression operators produced by the parser:
#   number (attrs.value), string (attrs.value), name (attrs.id),
#   add sub mul div matmul pow neg (args),
#   call (attrs.func, attrs.fspan, args positional, kwargs: dict name -> Expr),
#   index (args[0] the value, args[1:] subscripts), slice (args: start/stop or None-op),
#   list (args), none (an omitted slice bound).


@dataclass
class Expr:
    op: str
    args: tuple["Expr", ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    span: Span | None = None
    kwargs: dict[str, "Expr"] = field(default_factory=dict)


@dataclass
class Keyword:
    name: str
    value: Expr
    span: Span


@dataclass
class Call:
    """`name(args...)` at statement level: loss, region, method, desingularizer, certify."""

    name: str
    args: list[Expr]
    kwargs: dict[str, Keyword]
    span: Span  # the name
    full_span: Span


@dataclass
class Assign:
    name: str
    value: Expr
    span: Span  # the name


@dataclass
class ParamDecl:
    name: str
    shape: list[Expr]
    init: Expr
    span: Span  # the name
    shape_span: Span


@dataclass
class DataBlock:
    assigns: list[Assign]
    span: Span


@dataclass
class DataFrom:
    paths: list[tuple[str, Span]]
    span: Span


@dataclass
class DataDist:
    """`data gaussian(d=5) { v = ... }`: a population (infinite data) with optional constants.
    `name` is the distribution, `args`/`kwargs` its arguments, `assigns` the block (may be empty)."""

    name: str
    args: list[Expr]
    kwargs: dict[str, Keyword]
    assigns: list[Assign]
    span: Span        # the whole statement
    name_span: Span   # the distribution's name


@dataclass
class ParamsBlock:
    decls: list[ParamDecl]
    span: Span


@dataclass
class ParamsFrom:
    path: str
    path_span: Span
    span: Span


@dataclass
class Model:
    name: str
    arg: str
    body: Expr
    span: Span
    arg_span: Span


@dataclass
class ModelImport:
    """`model torch("package.module:Name")`: a model written in Python (imported only with
    --allow-python). `kind` is the NAME (torch), `target` the string."""

    kind: str
    target: str
    span: Span         # the kind
    target_span: Span  # the string, quotes included


@dataclass
class Target:
    """`target expr`: the target y(x) of a population, written for one sample x."""

    body: Expr
    span: Span  # the keyword


@dataclass
class Spec:
    path: str
    source: str
    title: str | None = None
    title_span: Span | None = None
    data: DataBlock | DataFrom | DataDist | None = None
    params: ParamsBlock | ParamsFrom | None = None
    model: Model | ModelImport | None = None
    target: Target | None = None
    loss: Call | None = None
    region: Call | None = None
    method: Call | None = None
    desingularizer: Call | None = None
    certify: Call | None = None
