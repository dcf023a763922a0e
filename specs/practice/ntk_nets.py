"""PyTorch modules for specs/practice/torch_tanh_ntk_sound.rq (imported by `certify --allow-python`).

TanhNTK is specs/two_layer_tanh_random_init_sound.rq written as a module: a two-layer tanh network
of width 256 on inputs in 4 dimensions, output scaled by 1/sqrt(256) (the NTK parameterisation),
no biases. Its weights are drawn as that spec draws them (numpy's default_rng(seed).standard_normal,
the language's normal(seed=...)), in float64 layers, so that the two specs start from the same θ0."""
import math

import numpy as np
import torch


class TanhNTK(torch.nn.Module):
    def __init__(self, d: int = 4, width: int = 256):
        super().__init__()
        self.width = width
        self.hidden = torch.nn.Linear(d, width, bias=False, dtype=torch.float64)
        self.output = torch.nn.Linear(width, 1, bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.from_numpy(np.random.default_rng(1).standard_normal((width, d))))
            self.output.weight.copy_(torch.from_numpy(np.random.default_rng(2).standard_normal((1, width))))

    def forward(self, x):
        return self.output(torch.tanh(self.hidden(x))) / math.sqrt(self.width)


class TanhNTK1024(TanhNTK):
    """specs/practice/wide_tanh_16_points_sound.rq as a module: width 1024 on inputs in 16 dimensions."""

    def __init__(self):
        super().__init__(d=16, width=1024)
