"""The model abstraction Problem builds on: a function outputs(theta, x) -> [n, *output_shape]
of the flat parameter vector theta and the whole batch x.

Two kinds: the spec's own `model f(x) = expr` (evaluated per sample, vectorised with vmap) and
a Python module, `model torch("package.module:Name")` (language/torch_modules.py loads it,
compile/torch_model.py runs it through torch.func.functional_call). Problem's methods (point,
grad, ...) and compile/kernel.py work on either.
"""
from __future__ import annotations

import torch
from torch.func import vmap

from ..language.evaluate import evaluate
from .torch_model import torch_outputs


def ast_outputs(problem, checked):
    body, arg = checked.spec.model.body, checked.spec.model.arg

    def one_sample(theta: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        env = dict(problem.constants)
        env.update(problem.unflatten(theta))
        env[arg] = xi
        return evaluate(body, env)

    return vmap(one_sample, in_dims=(None, 0))


def model_outputs(problem, checked):
    """outputs(theta, x) for the checked spec's model, whichever its kind."""
    module = getattr(checked, "model_module", None)
    if module is not None:

        return torch_outputs(problem, module, checked.output_shape)
    return ast_outputs(problem, checked)
