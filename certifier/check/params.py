"""The params statement: declared shapes and initialisers, or `params from "theta0.npz"`.
Sizes are checked against max_params before anything is allocated."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..diagnostics import Collector, Span
from ..language.ast import ParamDecl, ParamsBlock, ParamsFrom, Spec
from ..language.evaluate import CONSTANTS
from . import files
from .data import keyword_span, nonfinite
from .expressions import Walker
from .generators import DIM_HINT, GeneratorCalls, materialise
from .memory import Memory, default_limit
from .names import KEYWORDS, Scope
from .shapes import Shape, broadcast, count, show, size
from .values import number

LIMIT_HINT = "raise the limit with --max-params N"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass
class Params:
    values: dict[str, np.ndarray] = field(default_factory=dict)
    shapes: dict[str, Shape | None] = field(default_factory=dict)
    spans: dict[str, Span] = field(default_factory=dict)


class _Refused(Exception):
    """The memory estimate refused the parameters (E205 is already reported)."""


def check_params(spec: Spec, collector: Collector, max_params: int, data_names,
                 memory: Memory | None = None) -> Params:
    memory = memory or Memory(default_limit())
    if isinstance(spec.params, ParamsBlock):
        return _block(spec, spec.params, collector, max_params, data_names, memory)
    return _from(spec, spec.params, collector, max_params, memory)


def declared(spec: Spec, max_params: int) -> tuple[int, Span | None]:
    """The parameter entries a spec declares, before anything is read or allocated (for the
    memory estimate that the data block meets first): the params block's shapes or the
    headers of `params from`. 0 when unknown or over max_params (refused there on its own)."""
    p = spec.params
    total = 0
    if isinstance(p, ParamsBlock):
        quiet = Collector(spec.path)
        for decl in p.decls:
            dims = [number(d, quiet, spec.source, "a shape dimension", minimum=0, strict=True, integer=True)
                    for d in decl.shape]
            total += size(tuple(dims)) if all(d is not None for d in dims) else 0
        span = keyword_span(p.span, "params")
    elif isinstance(p, ParamsFrom) and p.path.lower().endswith(".npz"):
        try:
            total = sum(size(s) for s in files.npz_headers(files.locate(spec.path, p.path), p.path).values())
        except files.FileProblem:
            total = 0
        span = p.path_span
    else:
        return 0, None
    return (total if total <= max_params else 0), span


def _block(spec: Spec, block: ParamsBlock, collector: Collector, max_params: int, data_names,
           memory: Memory) -> Params:
    params = Params()
    pending: list[tuple[ParamDecl, Shape, GeneratorCalls]] = []
    total = 0
    for decl in block.decls:
        if decl.name in params.spans:
            collector.error("E102", f"the parameter '{decl.name}' is declared twice", decl.span,
                            f"the first declaration is at line {params.spans[decl.name].line}; "
                            "rename one of them")
            continue
        params.spans[decl.name] = decl.span
        params.shapes[decl.name] = None
        if decl.name in CONSTANTS:
            collector.error("E102", f"'{decl.name}' is a built-in constant", decl.span,
                            "choose another name")
            continue
        before = len(collector.items)
        dims = [number(d, collector, spec.source, "a shape dimension", minimum=0, strict=True,
                       integer=True, hint=DIM_HINT) for d in decl.shape]
        declared = None if any(d is None for d in dims) else tuple(dims)
        calls = GeneratorCalls(collector, spec.source, decl.name, declared, in_params=True)
        scope = Scope(blocked=_blocked(decl.name, data_names, params.spans),
                      hint="initialisers are constants: numbers, pi, generators and lists")
        walker = Walker(collector, scope, spec.source, where="a params block", generators=calls,
                        lists=True)
        shape = walker.shape(decl.init)
        if declared is None:
            continue
        total += size(declared)
        params.shapes[decl.name] = declared
        if shape is None or len(collector.items) > before:
            continue
        if broadcast(shape, declared) != declared:
            collector.error("E103", f"the initial value has shape {show(shape)}, but '{decl.name}' "
                            f"is declared {show(declared)}", decl.init.span,
                            "the initial value must be a scalar or broadcast to the declared shape")
            continue
        pending.append((decl, declared, calls))
    if total > max_params:
        collector.error("E205", f"the parameters have {count(total)} entries, more than the limit of "
                        f"{max_params:,}", keyword_span(block.span, "params"), LIMIT_HINT)
        return params
    if not memory.admit(collector, keyword_span(block.span, "params"), params=total):
        return params
    for decl, declared, calls in pending:
        try:
            value = materialise(decl.init, {}, calls).numpy()
            array = np.array(np.broadcast_to(value, declared), dtype=np.float64)
        except MemoryError:
            collector.error("E205", f"not enough memory for '{decl.name}'", decl.span, LIMIT_HINT)
            continue
        except Exception as exc:  # the walk should have caught it; report, never raise
            collector.error("E109", f"cannot compute the initial value of '{decl.name}': {exc}",
                            decl.init.span, "simplify the initial value")
            continue
        bad = nonfinite(array)
        if bad:
            collector.error("E203", f"the initial value of '{decl.name}' has {bad} non-finite "
                            f"entr{'y' if bad == 1 else 'ies'} (NaN or infinite)", decl.init.span,
                            "look for the log or sqrt of a negative number, or a division by zero")
            continue
        params.values[decl.name] = array
    return params


def _blocked(name: str, data_names, param_names) -> dict[str, tuple[str, str]]:
    hint = "initial values are constants; they cannot read data arrays or other parameters"
    out = {n: (f"'{n}' cannot be used in the initial value of '{name}'", hint)
           for n in list(data_names) + list(param_names)}
    out[name] = (f"'{name}' cannot be used in its own initial value", hint)
    return out


def _from(spec: Spec, stmt: ParamsFrom, collector: Collector, max_params: int, memory: Memory) -> Params:
    params = Params()
    span = stmt.path_span
    try:
        if not stmt.path.lower().endswith(".npz"):
            raise files.FileProblem("E202", f"params from reads a .npz file, not '{stmt.path}'",
                                    "write it with numpy.savez(path, W=..., a=...)")
        path = files.locate(spec.path, stmt.path)

        def admit(shapes) -> None:
            if not memory.admit(collector, span, params=sum(size(s) for s in shapes.values())):
                raise _Refused

        # every array of the file is a parameter: all are read, their total checked from headers
        arrays = files.load_npz(path, stmt.path, max_params, LIMIT_HINT, total_limit=max_params, admit=admit)
    except files.FileProblem as problem:
        collector.error(problem.code, problem.message, span, problem.hint)
        return params
    except _Refused:
        return params
    if not arrays:
        collector.error("E204", f"'{stmt.path}' holds no arrays", span,
                        "write one array per parameter: numpy.savez(path, W=..., a=...)")
    if sum(a.size for a in arrays.values()) > max_params:
        collector.error("E205", f"'{stmt.path}' holds more than {max_params:,} parameter entries",
                        span, LIMIT_HINT)
        return params
    for name, array in arrays.items():
        params.spans[name] = span
        params.shapes[name] = None
        if not _NAME.match(name) or name in KEYWORDS or name in CONSTANTS:
            collector.error("E202", f"'{stmt.path}' holds an array named '{name}', which is not a "
                            "usable parameter name", span,
                            "parameter names are letters, digits and '_', not starting with a digit, "
                            "and not a keyword or pi")
            continue
        bad = nonfinite(array)
        if bad:
            collector.error("E203", f"the array '{name}' in '{stmt.path}' has {bad} non-finite "
                            f"entr{'y' if bad == 1 else 'ies'} (NaN or infinite)", span,
                            "initial parameters must be finite")
            continue
        params.values[name] = array
        params.shapes[name] = tuple(array.shape)
    return params
