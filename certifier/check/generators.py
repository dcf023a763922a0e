"""Generator calls (normal, uniform, zeros, ones) in data and params blocks: their keywords are
checked during the walk, and `materialise` evaluates an expression holding them (and list
literals) by replacing each with a precomputed array before calling language.evaluate."""
from __future__ import annotations

import dataclasses

import torch

from ..diagnostics import Collector
from ..language.ast import Expr
from ..language.evaluate import DTYPE, evaluate
from ..language.generators import GENERATORS
from .costs import evaluate_within_budget, generate_within_budget
from .expressions import keyword_span, spanning
from .names import did_you_mean, join, listing
from .shapes import Shape, show
from .values import MAX_SEED, SEED_HINT, number


@dataclasses.dataclass
class GeneratorCalls:
    """The walk's callback for generator calls. In a data block `shape=` is required; in a params
    block (declared set) it defaults to the declared shape and must equal it when given."""

    collector: Collector
    source: str
    name: str                       # the data array or parameter being defined (default seed)
    declared: Shape | None = None   # params: the declared shape
    in_params: bool = False
    calls: dict[int, tuple[str, Shape, dict[str, float]]] = dataclasses.field(default_factory=dict)

    def __call__(self, e: Expr) -> Shape | None:
        kind = e.attrs["func"]
        allowed = GENERATORS[kind]
        form = f"{kind}(" + ", ".join(f"{k}=..." for k in allowed) + ")"
        ok = True
        if e.args:
            ok = False
            self.collector.error("E104", f"'{kind}' takes keyword arguments only",
                                 spanning(e.args[0].span, e.args[-1].span), f"write {form}")
        options: dict[str, float] = {}
        for key, value in e.kwargs.items():
            if key not in allowed:
                ok = False
                self.collector.error("E104", f"'{kind}' has no keyword '{key}'",
                                     keyword_span(self.source, value, key),
                                     join(did_you_mean(key, allowed), f"its keywords are: {listing(allowed)}"))
                continue
            if key == "shape":
                continue
            what, hint = _WHAT[key]
            v = number(value, self.collector, self.source, what,
                       minimum=0 if key in ("std", "seed") else None, integer=key == "seed", hint=hint,
                       maximum=MAX_SEED if key == "seed" else None)
            if v is None:
                ok = False
            else:
                options[key] = v
        if kind == "uniform" and "high" in options and options.get("low", 0.0) > options["high"]:
            ok = False
            self.collector.error("E109", "the upper bound 'high' is below the lower bound 'low'",
                                 e.kwargs["high"].span, "uniform draws from [low, high]; the defaults are 0 and 1")
        shape = self._shape(e, kind)
        if shape is None or not ok:
            return None
        self.calls[id(e)] = (kind, shape, options)
        return shape

    def _shape(self, e: Expr, kind: str) -> Shape | None:
        value = e.kwargs.get("shape")
        if value is None:
            if self.in_params:
                return self.declared
            self.collector.error("E104", f"'{kind}' needs shape= in a data block", e.span,
                                 f"for example {kind}(shape=[64, 3])")
            return None
        shape = shape_list(value, self.collector, self.source, "a shape dimension")
        if shape is None:
            return None
        if self.in_params and self.declared is not None and shape != self.declared:
            self.collector.error("E103", f"{kind}(shape={show(shape)}) does not match the declared "
                                 f"shape {show(self.declared)} of '{self.name}'", value.span,
                                 "leave out shape= in a params block: the declared shape is used")
            return None
        return shape


_WHAT = {
    "mean": ("the mean", "write a number, such as mean=0"),
    "std": ("the standard deviation", "write a number of at least 0, such as std=1/sqrt(512)"),
    "low": ("the lower bound", "write a number, such as low=-1"),
    "high": ("the upper bound", "write a number, such as high=1"),
    "seed": ("the seed", SEED_HINT),
}
DIM_HINT = "dimensions are whole numbers of at least 1, as in [512, 3]"


def shape_list(value: Expr, collector: Collector, source: str, what: str) -> Shape | None:
    """A list of positive integer constants, such as [64, 3]."""
    if value.op != "list":
        collector.error("E109", "a shape is a list of whole numbers", value.span,
                        "for example shape=[64, 3]")
        return None
    dims = [number(d, collector, source, what, minimum=0, strict=True, integer=True, hint=DIM_HINT)
            for d in value.args]
    if any(d is None for d in dims):
        return None
    return tuple(dims)


def materialise(e: Expr, env: dict[str, torch.Tensor], calls: GeneratorCalls) -> torch.Tensor:
    """Evaluate e (checked) with language.evaluate, after replacing each generator call and list
    literal by a fresh name bound to its array."""
    local = dict(env)

    def bind(value: torch.Tensor) -> Expr:
        key = f"#{len(local)}"
        local[key] = value
        return Expr("name", attrs={"id": key}, span=None)

    def rewrite(x: Expr) -> Expr:
        if x.op == "call" and x.attrs["func"] in GENERATORS:
            kind, shape, options = calls.calls[id(x)]
            array = generate_within_budget(kind, shape, options, calls.name)   # --budget: costs.py
            return bind(torch.as_tensor(array, dtype=DTYPE))
        if x.op == "list":
            parts = [evaluate(rewrite(a), local) for a in x.args]
            return bind(torch.stack(parts))
        if not x.args:
            return x
        return dataclasses.replace(x, args=tuple(rewrite(a) for a in x.args))

    return evaluate_within_budget(rewrite(e), local, calls.name)
