"""What the check stage hands to compile: a spec whose names, shapes and options are valid,
with its data and initial parameters materialised as float64 numpy arrays."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..diagnostics import Span
from ..language.ast import Expr, Model, Spec


@dataclass
class Choice:
    """A validated statement-level choice: `loss least_squares`, `region ball(...)`, ..."""

    name: str
    options: dict[str, object]  # every keyword, defaults filled in -> float | int | str ('auto', 'init')
    span: Span | None  # the name in the source (None when defaulted)
    option_spans: dict[str, Span] = field(default_factory=dict)  # keyword -> its value's span (written ones only)


@dataclass
class Checked:
    spec: Spec
    x: np.ndarray                  # [n, ...]: per-sample input shape is x.shape[1:] (a 1-D x gives scalar samples)
    y: np.ndarray                  # [n] or [n, k]
    constants: dict[str, np.ndarray]   # other data-block arrays, usable in the model as constants
    params: dict[str, np.ndarray]      # initial parameters theta_0, in declaration (or file) order
    param_spans: dict[str, Span]       # the name in params { }, or the path string of params from
    output_shape: tuple[int, ...]      # per-sample model output, == y.shape[1:]: () or (k,)
    loss: Choice                       # name in language.losses.LOSSES
    region: Choice                     # 'ball' {center:'init', radius: float|'auto'} | 'box' {center:'init', halfwidth: float}
    method: Choice                     # 'sampled' {samples: int, seed: int}
    desingularizer: Choice             # 'auto' | 'log' (no options)
    claim: Choice                      # 'rate' {floor: float, horizon: float}
    model_module: object | None = None  # model torch(...): the torch.nn.Module (float64, eval mode); None for model f(x) = ...
    model_expr: Model | None = None     # model torch(...) with method interval: the module as model f(x) = ... (check/torch_expr.py)
    population: object | None = None    # data gaussian(d=...): check.population.PopulationForm (x, y hold no samples)
    file_digests: list = field(default_factory=list)   # (name as written in the spec, sha256) of each file read, in order

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def parameter_count(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    @property
    def model_body(self) -> Expr:
        return (self.model_expr or self.spec.model).body
