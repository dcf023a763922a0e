"""check: a parsed Spec -> Checked (names, shapes and options valid; data and initial
parameters materialised), or SpecError with every diagnostic found in the file."""
from __future__ import annotations

from ..diagnostics import Collector, Span, SpecError, located
from ..language.ast import DataBlock, DataDist, Model, ModelImport, ParamsBlock, Spec
from ..parse.parser import too_deep
from . import files, memory
from .checked import Checked, Choice
from .data import Data, check_data
from .model import check_model
from .names import KEYWORDS
from .options import check_choice
from .params import Params, check_params, declared
from .population import HINT, check_population, check_target
from .targets import check_targets
from .torch_model import check_model_import

__all__ = ["Checked", "Choice", "check"]

REQUIRED = {
    "data": 'add `data { x = ...  y = ... }` or `data from "train.npz"`',
    "params": "add `params { W : [16, 3] = normal(seed=1) }` or `params from \"theta0.npz\"`",
    "model": "add `model f(x) = ...`, written for one sample x",
    "loss": "add `loss least_squares`",
}


def check(spec: Spec, *, max_params: int = 10**8, max_elements: int = 10**8,
          allow_python: bool = False, max_memory: int | None = None) -> Checked:
    """Validate a parsed spec and build its arrays. Raises SpecError (only) on bad input.
    `allow_python`: a `model torch("pkg.mod:Net")` may import its module (E301 otherwise).
    `max_memory`: bytes the run may need by check/memory.py's estimate (E205 beyond it; default
    memory.default_limit()). Checked.file_digests: (name, sha256) of each file read."""
    collector = Collector(spec.path)
    try:
        with files.collecting() as digests:
            checked = _check(spec, collector, max_params, max_elements, allow_python,
                             memory.default_limit() if max_memory is None else max_memory)
    except SpecError as exc:
        raise SpecError(located(exc.diagnostics, spec.source or "", spec.path)) from None
    if checked is not None:
        checked.file_digests = list(digests)
    if collector.items:
        collector.items.sort(key=_position)
        located(collector.items, spec.source or "", spec.path)   # every span inside the file
        collector.raise_if_any()
    return checked


def _reserved(spec: Spec, collector: Collector) -> None:
    """The grammar lets keywords through where only a name can stand; refuse them as names."""
    names = []
    if isinstance(spec.data, (DataBlock, DataDist)):
        names += [(a.name, a.span) for a in spec.data.assigns]
    if isinstance(spec.params, ParamsBlock):
        names += [(d.name, d.span) for d in spec.params.decls]
    if isinstance(spec.model, Model):
        names += [(spec.model.name, spec.model.span), (spec.model.arg, spec.model.arg_span)]
    for name, span in names:
        if name in KEYWORDS:
            collector.error("E001", f"'{name}' is a keyword and cannot be used as a name", span,
                            "choose another name")


def _position(diag) -> tuple[int, int]:
    span = diag.span
    return (0, 0) if span is None else (span.line, span.column)


def _check(spec: Spec, collector: Collector, max_params: int, max_elements: int,
           allow_python: bool = False, max_memory: int = memory.DEFAULT_LIMIT) -> Checked | None:
    if too_deep(spec, collector):   # parse refuses these; a Spec built otherwise may not
        return None
    for statement, hint in REQUIRED.items():
        if getattr(spec, statement) is None and not (statement == "params" and isinstance(spec.model, ModelImport)):
            collector.error("E005", f"the spec has no '{statement}' statement", Span.point(1, 1), hint)
    _reserved(spec, collector)
    # the parameters a spec declares count in the estimate that the data meets first
    budget = memory.Memory(max_memory, *declared(spec, max_params))
    data = check_data(spec, collector, max_elements, budget) if spec.data is not None else Data()
    module = model_expr = None
    if isinstance(spec.model, ModelImport) and data.population is not None:

        collector.error("E112", "a Python model has no closed-form population loss", spec.model.span, HINT)
        return None
    if isinstance(spec.model, ModelImport):   # model torch("pkg.mod:Net"): parameters from the module

        params, output, module, model_expr = check_model_import(spec, collector, data, allow_python, max_params,
                                                                budget)
    else:
        params = (check_params(spec, collector, max_params, data.spans, budget) if spec.params is not None
                  else Params())
    for name, span in params.spans.items():
        if name in data.spans:
            collector.error("E102", f"'{name}' is both a data array and a parameter", span,
                            f"the data array is defined at line {data.spans[name].line}; "
                            "rename one of them")
            params.shapes[name] = None
    if not isinstance(spec.model, ModelImport):
        output = check_model(spec, collector, data, params) if spec.model is not None else None
    choices = {s: check_choice(s, getattr(spec, s), collector, spec.source)
               for s in ("loss", "region", "method", "desingularizer", "certify")}
    check_target(spec, collector, data, params, output)   # population specs: `target expr`
    if output is not None and choices["loss"] is not None and "y" in data.arrays:
        check_targets(spec, collector, choices["loss"].name, data.arrays["y"], output, data.spans.get("y"))
    if collector.items:
        return None
    population = None
    if data.population is not None:    # the closed form of E (f - y)^2, or E112 where there is none
        population = check_population(spec, collector, data, params, choices["loss"].name, choices["method"])
        if collector.items:
            return None
    return Checked(
        spec=spec,
        x=data.arrays["x"],
        y=data.arrays["y"],
        constants=data.constants,
        params=params.values,
        param_spans=params.spans,
        output_shape=output,
        loss=choices["loss"],
        region=choices["region"],
        method=choices["method"],
        desingularizer=choices["desingularizer"],
        claim=choices["certify"],
        model_module=module,
        model_expr=model_expr,
        population=population,
    )
