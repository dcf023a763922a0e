"""The data statement: `data { name = expr ... }` evaluated in order, or `data from "file"`.
Produces x, y and the other arrays (constants for the model) as float64 numpy arrays."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath

import numpy as np
import torch

from ..diagnostics import Collector, Span
from ..language.ast import DataBlock, DataDist, DataFrom, Spec
from ..language.evaluate import CONSTANTS
from . import files
from .expressions import Walker
from .generators import GeneratorCalls, materialise
from .memory import Memory, default_limit
from .names import Scope, did_you_mean, join
from .shapes import Shape, show, size
from .values import number

LIMIT_HINT = "use a smaller data set: the limit keeps certify from running out of memory"


@dataclass
class Population:
    """`data gaussian(d=5)`: x ~ N(0, I_d), infinitely many samples; y is the `target` statement."""

    kind: str      # 'gaussian'
    d: int
    span: Span     # the distribution's name in the spec

    @property
    def text(self) -> str:
        return f"{self.kind}(d={self.d})"


@dataclass
class Data:
    arrays: dict[str, np.ndarray] = field(default_factory=dict)   # x, y and the others
    shapes: dict[str, Shape | None] = field(default_factory=dict)  # every defined name
    spans: dict[str, Span] = field(default_factory=dict)          # where each name is defined
    population: Population | None = None                          # data gaussian(d=...)

    @property
    def constants(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self.arrays.items() if k not in ("x", "y")}


def keyword_span(span: Span, keyword: str) -> Span:
    """The leading keyword of a statement whose span starts with it."""
    return Span(span.line, span.column, span.line, span.column + len(keyword))


def nonfinite(array: np.ndarray) -> int:
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def check_data(spec: Spec, collector: Collector, max_elements: int, memory: Memory | None = None) -> Data:
    memory = memory or Memory(default_limit())
    if isinstance(spec.data, DataDist):
        return _population(spec, spec.data, collector, max_elements, memory)
    if isinstance(spec.data, DataBlock):
        data = _block(spec, spec.data, collector, max_elements, memory)
    else:
        data = _from(spec, spec.data, collector, max_elements, memory)
    _samples(spec, data, collector)
    return data


def _block(spec: Spec, block: DataBlock | DataDist, collector: Collector, max_elements: int,
           memory: Memory, population: bool = False) -> Data:
    """Two passes: every shape first (so that the memory estimate sees all arrays before any is
    allocated), then the arrays in order."""
    data = Data()
    pending = []
    env = {}
    lines: dict[str, int] = {}
    for a in block.assigns:
        lines.setdefault(a.name, a.span.line)
    for a in block.assigns:
        if a.name in data.spans:
            collector.error("E102", f"'{a.name}' is defined twice", a.span,
                            f"the first definition is at line {data.spans[a.name].line}; "
                            "rename one of them")
            continue
        if a.name in CONSTANTS:
            collector.error("E102", f"'{a.name}' is a built-in constant", a.span,
                            "choose another name")
            continue
        if population and a.name in ("x", "y"):
            collector.error("E102", f"'{a.name}' is defined by the population", a.span,
                            "x is the Gaussian input and y the `target` statement; a population's data "
                            "block holds constants only, such as the teacher's weights")
            data.spans[a.name] = a.span
            data.shapes[a.name] = None
            continue
        later = {n: line for n, line in lines.items() if n not in data.spans}
        scope = Scope(visible=dict(data.shapes), later=later, defining=a.name)
        calls = GeneratorCalls(collector, spec.source, a.name)
        walker = Walker(collector, scope, spec.source, where="a data block", generators=calls,
                        lists=True, max_elements=max_elements)
        before = len(collector.items)
        shape = walker.shape(a.value)
        data.spans[a.name] = a.span
        data.shapes[a.name] = None
        if shape is None or len(collector.items) > before:
            continue
        data.shapes[a.name] = tuple(shape)
        pending.append((a, calls))
    shapes = {a.name: data.shapes[a.name] for a, _ in pending}
    admitted = memory.admit(collector, keyword_span(block.span, "data"), **_samples_of(shapes))
    failed = False
    for a, calls in pending if admitted else ():
        data.shapes[a.name] = None
        try:
            array = materialise(a.value, env, calls).numpy().astype(np.float64, copy=True)
        except MemoryError:
            collector.error("E205", f"not enough memory to compute '{a.name}'", a.span, LIMIT_HINT)
            continue
        except Exception as exc:  # the walk should have caught it; report, never raise
            if not failed:   # else it may read an array that failed before: that one is reported
                collector.error("E109", f"cannot compute '{a.name}': {exc}", a.value.span,
                                "simplify the expression, or split it into several statements")
            failed = True
            continue
        bad = nonfinite(array)
        if bad:
            failed = True
            collector.error("E203", f"'{a.name}' has {bad} non-finite entr{'y' if bad == 1 else 'ies'} "
                            "(NaN or infinite)", a.span,
                            "look for the log or sqrt of a negative number, or a division by zero")
            continue
        env[a.name] = torch.from_numpy(array)
        data.arrays[a.name] = array
        data.shapes[a.name] = tuple(array.shape)
    for name in () if population else ("x", "y"):
        if name not in data.spans:
            collector.error("E005", f"the data block does not define '{name}'",
                            keyword_span(block.span, "data"),
                            f"define the {'inputs' if name == 'x' else 'targets'}: `{name} = ...`")
    return data


DISTRIBUTIONS = {"gaussian": "gaussian(d=5): x ~ N(0, I_d)"}
MAX_DIMENSION = 10**5


def _population(spec: Spec, stmt: DataDist, collector: Collector, max_elements: int, memory: Memory) -> Data:
    """`data gaussian(d=5) { constants }`: x ~ N(0, I_d), y from the `target` statement."""

    data = _block(spec, stmt, collector, max_elements, memory, population=True)
    data.spans["x"] = data.spans["y"] = stmt.name_span
    data.shapes["x"] = data.shapes["y"] = None
    if stmt.name not in DISTRIBUTIONS:
        collector.error("E104", f"unknown data distribution '{stmt.name}'", stmt.name_span,
                        join(did_you_mean(stmt.name, DISTRIBUTIONS),
                             "the distributions are: " + ", ".join(DISTRIBUTIONS.values())))
        return data
    if stmt.args:
        collector.error("E104", "gaussian takes keyword arguments only", stmt.args[0].span,
                        "write data gaussian(d=5)")
        return data
    unknown = [k for k in stmt.kwargs if k != "d"]
    for key in unknown:
        collector.error("E104", f"gaussian has no option '{key}'", stmt.kwargs[key].span,
                        "its option is d, the input dimension: data gaussian(d=5)")
    if "d" not in stmt.kwargs:
        collector.error("E104", "gaussian needs d=", stmt.name_span,
                        "write data gaussian(d=5): x ~ N(0, I_5)")
        return data
    d = number(stmt.kwargs["d"].value, collector, spec.source, "the dimension d", minimum=0, strict=True,
               integer=True, maximum=MAX_DIMENSION, hint="the input dimension, such as d=5")
    if d is None or unknown:
        return data
    data.population = Population("gaussian", int(d), stmt.name_span)
    data.arrays["x"] = np.zeros((0, int(d)))     # no samples: the loss is an expectation
    data.arrays["y"] = np.zeros((0,))
    data.shapes["x"], data.shapes["y"] = (0, int(d)), (0,)
    return data


def _samples_of(shapes: dict) -> dict:
    """The memory estimate's data entries, n and k from the shapes of x and y."""
    x, y = shapes.get("x"), shapes.get("y")
    return {"data": sum(size(s) for s in shapes.values() if s is not None),
            "n": x[0] if x else 0, "k": size(y[1:]) if y else 1}


class _Refused(Exception):
    """The memory estimate refused the file's arrays (E205 is already reported)."""


def _from(spec: Spec, stmt: DataFrom, collector: Collector, max_elements: int, memory: Memory) -> Data:
    data = Data()
    paths = stmt.paths
    suffixes = [PurePath(p).suffix.lower() for p, _ in paths]

    def admit(shapes) -> None:
        if not memory.admit(collector, paths[0][1], **_samples_of(shapes)):
            raise _Refused

    try:
        if len(paths) == 1 and suffixes[0] == ".npz":
            # only x and y are used: other members are never decompressed
            arrays = files.load_npz(files.locate(spec.path, paths[0][0]), paths[0][0],
                                    max_elements, LIMIT_HINT, only=("x", "y"), admit=admit)
            for name in ("x", "y"):
                if name not in arrays:
                    raise files.FileProblem("E204", f"'{paths[0][0]}' has no array '{name}'",
                                            files.available(arrays) +
                                            "; write it with numpy.savez(path, x=..., y=...)")
            loaded = {"x": (arrays["x"], paths[0]), "y": (arrays["y"], paths[0])}
        elif len(paths) == 1 and suffixes[0] == ".csv":
            x, y = files.load_csv(files.locate(spec.path, paths[0][0]), paths[0][0],
                                  max_elements, LIMIT_HINT)
            admit({"x": x.shape, "y": y.shape})   # a CSV's size is known once parsed (streamed, bounded)
            loaded = {"x": (x, paths[0]), "y": (y, paths[0])}
        elif len(paths) == 2 and suffixes == [".npy", ".npy"]:
            loaded = {}
            problems = []
            admit({name: files.peek_npy(files.base_dir(spec.path) / p, p)
                   for name, (p, _) in zip(("x", "y"), paths)})
            for name, (p, span) in zip(("x", "y"), paths):
                try:
                    loaded[name] = (files.load_npy(files.locate(spec.path, p), p, max_elements,
                                                   LIMIT_HINT), (p, span))
                except files.FileProblem as problem:
                    problems.append((problem, span))
            for problem, span in problems:
                collector.error(problem.code, problem.message, span, problem.hint)
            if problems:
                return _unknown(data, stmt)
        else:
            _form_error(paths, suffixes, collector)
            return _unknown(data, stmt)
    except files.FileProblem as problem:
        collector.error(problem.code, problem.message, paths[0][1], problem.hint)
        return _unknown(data, stmt)
    except _Refused:
        return _unknown(data, stmt)
    ok = True
    for name, (array, (p, span)) in loaded.items():
        data.spans[name] = span
        bad = nonfinite(array)
        if bad:
            ok = False
            collector.error("E203", f"the array '{name}' in '{p}' has {bad} non-finite "
                            f"entr{'y' if bad == 1 else 'ies'} (NaN or infinite)", span,
                            "remove or fill in those entries; certify needs finite data")
    if not ok:
        return _unknown(data, stmt)
    for name, (array, _) in loaded.items():
        data.arrays[name] = array
        data.shapes[name] = tuple(array.shape)
    return data


def _unknown(data: Data, stmt: DataFrom) -> Data:
    for name in ("x", "y"):
        data.spans.setdefault(name, stmt.paths[0][1])
        data.shapes[name] = None
        data.arrays.pop(name, None)
    return data


_FORMS = ("data from takes one .npz file (arrays x and y), one .csv file (the last column is y) "
          "or two .npy files (x, then y)")


def _form_error(paths, suffixes, collector: Collector) -> None:
    if len(paths) > 2:
        first, last = paths[2][1], paths[-1][1]
        collector.error("E104", f"data from names one or two files, not {len(paths)}",
                        Span(first.line, first.column, last.end_line, last.end_column), _FORMS)
    elif suffixes[0] == ".npy" and len(paths) == 1:
        collector.error("E104", "one .npy file holds one array; name two files, x then y",
                        paths[0][1], 'write data from "x.npy", "y.npy"')
    elif len(paths) == 1:
        collector.error("E202", f"unknown data file format: '{paths[0][0]}'",
                        paths[0][1], _FORMS)
    else:
        for (p, span), suffix in zip(paths, suffixes):
            if suffix != ".npy":
                collector.error("E202", f"'{p}' is not a .npy file", span, _FORMS)


def _samples(spec: Spec, data: Data, collector: Collector) -> None:
    """x and y: a sample dimension each, the same number of samples, y of shape [n] or [n, k]."""
    x, y = data.arrays.get("x"), data.arrays.get("y")
    if x is not None and x.ndim == 0:
        collector.error("E103", "x must have a sample dimension, but it is a scalar", data.spans["x"],
                        "x has shape [n] (scalar samples) or [n, d, ...]")
        data.shapes["x"] = None
        x = None
    if y is not None and y.ndim not in (1, 2):
        collector.error("E103", f"y must have shape [n] or [n, k], not {show(y.shape)}", data.spans["y"],
                        "y holds one target (or one row of k targets) per sample")
        data.shapes["y"] = None
        y = None
    if x is None or y is None:
        return
    if x.shape[0] != y.shape[0]:
        collector.error("E103", f"x has {x.shape[0]} samples but y has {y.shape[0]}", data.spans["y"],
                        f"the first dimension counts the samples: x is {show(x.shape)}, y is {show(y.shape)}")
        data.shapes["x"] = data.shapes["y"] = None
    elif x.shape[0] == 0:
        collector.error("E109", "the data has no samples", data.spans["y"],
                        "x and y need at least one row")
        data.shapes["x"] = data.shapes["y"] = None
