"""The compiled forward pass of a `model torch("package.module:Name")` (the module is found and
loaded by certifier.language.torch_modules)."""
from __future__ import annotations

import torch
from torch.func import functional_call


def torch_outputs(problem, module: torch.nn.Module, output_shape: tuple[int, ...]):
    """outputs(theta, x) -> [n, *output_shape]: the module's forward pass with the parameters
    taken from the flat theta (torch.func.functional_call, so autograd and jacrev see theta)."""
    module.to(problem.device)
    shape = tuple(output_shape)

    def outputs(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = functional_call(module, problem.unflatten(theta), (x,))
        return out.reshape((x.shape[0],) + shape)

    return outputs
