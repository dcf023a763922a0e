"""The model statement's Python form, `model torch("package.module:Name")`: the model kind, the
permission to import (--allow-python, E301), building the module (E302), its parameters from
the module or from `params from "weights.pt|.safetensors|.npz"` (E201-E205, E303, E103), and
the shape of its forward pass on x against y (E103); with `method interval`, its translation into
the spec's model form (check/torch_expr.py, E304 for a layer it cannot translate)."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..diagnostics import Collector, Diagnostic
from ..language.ast import ParamsBlock, ParamsFrom, Spec
from ..language.torch_modules import EXIT_HINT, ModelProblem, build_module, exit_message, source_digest, split_target
from . import files
from .data import Data, keyword_span, nonfinite
from .memory import Memory, default_limit
from .params import LIMIT_HINT, Params
from .shapes import count, show
from .torch_expr import SUPPORTED, Unsupported, translate
from .weights import Weights

KINDS = ("torch",)


def check_model_import(spec: Spec, collector: Collector, data: Data, allow_python: bool,
                       max_params: int, memory: Memory | None = None):
    """(Params, per-sample output shape or None, the module or None, the module translated into
    `model f(x) = ...` or None: only for `method interval`, the sound mode's model)."""
    memory = memory or Memory(default_limit())

    m = spec.model
    params = Params()
    if m.kind not in KINDS:
        collector.error("E302", f"unknown model kind '{m.kind}'", m.span,
                        "the Python model kinds are: torch, as in model torch(\"package.module:Name\"); "
                        "or write the model in the spec: model f(x) = ...")
        return params, None, None, None
    try:
        module_name, _ = split_target(m.target)
    except ModelProblem as p:
        collector.error(p.code, p.message, m.target_span, p.hint)
        return params, None, None, None
    if not allow_python:
        collector.error("E301", f"model {m.kind}(\"{m.target}\") imports the Python module '{module_name}', "
                        "which runs its code; certify does that only with --allow-python", m.target_span,
                        f"rerun with --allow-python if you trust '{module_name}'")
        return params, None, None, None
    if isinstance(spec.params, ParamsBlock):
        collector.error("E303", "a torch model takes its parameters from the module or from "
                        "`params from \"weights.pt\"`, not from a params block",
                        keyword_span(spec.params.span, "params"),
                        "remove the params block (the module's own initial parameters are used) "
                        "or save the weights and write params from \"weights.pt\"")
        return params, None, None, None
    try:
        module = build_module(m.target, files.base_dir(spec.path))
    except ModelProblem as p:
        collector.error(p.code, p.message, m.target_span, p.hint)
        return params, None, None, None
    digest = source_digest(module_name)
    if digest is not None:   # the module as imported (the cache key names its source file)
        files.record(f"python:{module_name}", digest)
    named = dict(module.named_parameters())
    total = sum(p.numel() for p in named.values())
    if total > max_params:
        collector.error("E205", f"the module has {total:,} parameter entries, more than the limit of "
                        f"{max_params:,}", m.target_span, LIMIT_HINT)
        return params, None, None, None
    if not memory.admit(collector, m.target_span, params=total):
        return params, None, None, None
    if not named:
        collector.error("E302", f"'{m.target}' has no parameters", m.target_span,
                        "certify analyses gradient descent on the module's parameters")
        return params, None, None, None
    span = m.target_span
    values = {name: p.detach().cpu().to(torch.float64).numpy().copy() for name, p in named.items()}
    if isinstance(spec.params, ParamsFrom):
        span = spec.params.path_span
        stmt = spec.params
        buffers = dict(module.named_buffers())
        expected = {n: tuple(t.shape) for n, t in {**buffers, **named}.items()}
        try:
            path = files.locate(spec.path, stmt.path)
            if path.suffix.lower() == ".npz":
                def admit(shapes) -> None:   # before any array is read
                    if not _match(collector, stmt.path, span, shapes, named, buffers, expected):
                        raise _Refused
                state = files.load_npz(path, stmt.path, max_params, LIMIT_HINT, total_limit=max_params,
                                       admit=admit)
            else:
                weights = Weights(path, stmt.path, sum(math.prod(s) for s in expected.values()), LIMIT_HINT)
                declared = sum(math.prod(s) for s in weights.shapes.values())
                if declared > max_params:   # from the header, before any tensor is read
                    weights.close()
                    raise files.FileProblem("E205", f"'{stmt.path}' holds {count(declared)} parameter entries, "
                                            f"more than the limit of {max_params:,}", LIMIT_HINT)
                if not _match(collector, stmt.path, span, weights.shapes, named, buffers, expected):
                    weights.close()
                    return params, None, None, None
                state = weights.arrays()
        except files.FileProblem as p:
            collector.error(p.code, p.message, span, p.hint)
            return params, None, None, None
        except _Refused:
            return params, None, None, None
        for name, array in state.items():
            bad = nonfinite(array)
            if bad:
                collector.error("E203", f"'{name}' in '{stmt.path}' has {bad} non-finite "
                                f"entr{'y' if bad == 1 else 'ies'} (NaN or infinite)", span,
                                "initial parameters must be finite")
                return params, None, None, None
            if name in named:
                values[name] = array
            else:
                with torch.no_grad():
                    buffers[name].copy_(torch.from_numpy(array).to(buffers[name].dtype))
    params.values = values
    params.shapes = {k: tuple(v.shape) for k, v in values.items()}
    params.spans = {k: span for k in values}
    output = _output_shape(spec, collector, data, module, values)
    if output is None:
        return params, None, None, None
    expr = None
    if getattr(spec.method, "name", None) == "interval":
        expr = _translate(spec, collector, data, module, values, output)
        if expr is None:
            return params, None, None, None
    return params, output, module, expr


def _translate(spec: Spec, collector: Collector, data: Data, module, values, output):
    """The module as the spec's model form for the sound mode, or None after E304 (E302 for its
    own sys.exit() while traced)."""
    m = spec.model
    try:
        return translate(module, data.arrays["x"], output, m.target_span, values)
    except Unsupported as u:
        collector.error("E304", f"model torch(\"{m.target}\"): {u.message}", m.target_span,
                        f"the sound mode translates {SUPPORTED}; use method sampled(...) for other modules")
    except SystemExit as exc:
        collector.error("E302", exit_message(f"tracing '{m.target}'", exc), m.target_span, EXIT_HINT)
    return None


class _Refused(Exception):
    """The weights' names or shapes do not match the module (already reported)."""


def _match(collector: Collector, file: str, span, shapes: dict, named: dict, buffers: dict,
           expected: dict) -> bool:
    """The file's entries against the module's, from the headers (E204, E303, E103): False after
    reporting, before any tensor is read."""
    missing = [n for n in named if n not in shapes]
    extra = [n for n in shapes if n not in named and n not in buffers]
    if missing:
        collector.error("E204", f"'{file}' has no entry '{missing[0]}'"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""), span,
                        files.available(shapes) + "; save the module's state_dict()")
    if extra:
        collector.error("E303", f"'{file}' has entries the module does not have: "
                        + ", ".join(f"'{n}'" for n in extra[:4]) + (", ..." if len(extra) > 4 else ""),
                        span, "save the state_dict() of the same module class")
    if missing or extra:
        return False
    for name, shape in shapes.items():
        if tuple(shape) != expected[name]:
            collector.error("E103", f"'{name}' in '{file}' has shape {show(tuple(shape))}, the "
                            f"module's has shape {show(expected[name])}", span,
                            "save the state_dict() of the same module class")
            return False
    return True


def _output_shape(spec: Spec, collector: Collector, data: Data, module, values):
    from torch.func import functional_call

    m = spec.model
    x, y = data.arrays.get("x"), data.arrays.get("y")
    if x is None or y is None:
        return None
    try:
        with torch.no_grad():
            out = functional_call(module, {k: torch.from_numpy(v) for k, v in values.items()},
                                  (torch.from_numpy(np.asarray(x, dtype=np.float64)),))
    except SystemExit as exc:
        collector.error("E302", exit_message(f"the forward pass of '{m.target}'", exc), m.target_span,
                        EXIT_HINT)
        return None
    except Exception as exc:
        collector.error("E302", f"the forward pass of '{m.target}' on x (shape {show(x.shape)}) failed: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "),
                        m.target_span, "forward(x) receives the whole batch x, in float64")
        return None
    if not isinstance(out, torch.Tensor):
        collector.error("E302", f"the forward pass of '{m.target}' returned a {type(out).__name__}, "
                        "not a tensor", m.target_span, "return one tensor of shape [n] or [n, k]")
        return None
    shape, target = tuple(out.shape), tuple(y.shape)
    if shape != target and not (len(target) == 1 and shape == target + (1,)):
        collector.error("E103", f"the module returns shape {show(shape)} for x of shape {show(x.shape)}, "
                        f"but y has shape {show(target)}", m.target_span,
                        "forward(x) must return one row per sample, shaped like y")
        return None
    if not torch.isfinite(out).all():
        collector.error("E203", f"the forward pass of '{m.target}' on x gives non-finite outputs",
                        m.target_span, "check the module and the data")
        return None
    return target[1:]


def exit_diagnostic(spec: Spec, exc: SystemExit) -> Diagnostic:
    """E302 for a torch model that called sys.exit() during the analysis (after the check)."""
    m = spec.model
    return Diagnostic("E302", exit_message(f"'{m.target}'", exc, " during the analysis"),
                      m.target_span, EXIT_HINT, spec.path)
