"""The model statement `model f(x) = expr`, written for one sample: names, calls and the
per-sample output shape (check.targets matches it with y and the loss)."""
from __future__ import annotations

from ..diagnostics import Collector
from ..language.ast import Spec
from .data import Data
from .expressions import Walker
from .names import Scope
from .params import Params
from .shapes import Shape


def check_model(spec: Spec, collector: Collector, data: Data, params: Params) -> Shape | None:
    model = spec.model
    arg = model.arg
    x_shape = data.shapes.get("x")
    visible: dict[str, Shape | None] = {}
    for name, shape in data.shapes.items():
        if name not in ("x", "y"):
            visible[name] = shape
    visible.update(params.shapes)
    if arg in visible:
        collector.error("E102", f"the model's argument '{arg}' has the same name as "
                        f"{'a parameter' if arg in params.shapes else 'a data array'}", model.arg_span,
                        "rename the argument, as in model f(x) = ...")
    visible[arg] = None if x_shape is None else tuple(x_shape[1:])
    blocked = {}
    if arg != "y":
        blocked["y"] = ("'y' cannot be used in the model", "the model cannot read the targets")
    if arg != "x":
        blocked["x"] = ("'x' cannot be used in the model",
                        f"the model's input is its argument '{arg}', one sample of x")
    scope = Scope(visible=visible, blocked=blocked)
    before = len(collector.items)
    out = Walker(collector, scope, spec.source, where="the model").shape(model.body)
    if out is None or len(collector.items) > before:
        return None
    return out  # checked against y and the loss by check.targets
