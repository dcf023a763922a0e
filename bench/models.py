"""The benchmark problems as spec text, with their FLOP counts per Rayleigh quotient."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Model:
    name: str
    kind: str        # 'two_layer' | 'mlp3'
    n: int
    d: int
    h: int
    activation: str = "tanh"   # of the two-layer net: a function of compile/two_layer.py's table (the MLP is tanh)

    def spec(self) -> str:
        d, h, n = self.d, self.h, self.n
        if self.kind == "two_layer":
            params = (f"  W : [{h}, {d}] = normal(std=1/sqrt({d}), seed=1)\n"
                      f"  a : [{h}]      = normal(std=1/sqrt({h}), seed=2)")
            model = f"sum(a * {self.activation}(W @ x))"
        else:
            params = (f"  W1 : [{h}, {d}] = normal(std=1/sqrt({d}), seed=1)\n"
                      f"  W2 : [{h}, {h}] = normal(std=1/sqrt({h}), seed=2)\n"
                      f"  W3 : [{h}, {h}] = normal(std=1/sqrt({h}), seed=4)\n"
                      f"  a  : [{h}]      = normal(std=1/sqrt({h}), seed=5)")
            model = "sum(a * tanh(W3 @ tanh(W2 @ tanh(W1 @ x))))"
        return (f'spec "bench {self.name}"\n\n'
                f"data {{\n  x = normal(shape=[{n}, {d}], seed=0)\n  y = sin(x[:, 0]) + 0.5 * x[:, 1]\n}}\n\n"
                f"params {{\n{params}\n}}\n\n"
                f"model f(x) = {model}\n\n"
                "loss least_squares\nregion ball(center=init, radius=auto)\n"
                "method sampled(samples=4096, seed=3)\ncertify rate(floor=0, horizon=1e4)\n")

    @property
    def parameters(self) -> int:
        d, h = self.d, self.h
        return d * h + h if self.kind == "two_layer" else d * h + 2 * h * h + h

    def forward_flops(self) -> float:
        """Multiply-adds of the matrix products and the output layer, 2 flops each, for the whole
        data set: 2 n (d h + h) for the two-layer net. Elementwise work (tanh) is not counted."""
        d, h, n = self.d, self.h, self.n
        per_sample = d * h + h if self.kind == "two_layer" else d * h + 2 * h * h + h
        return 2.0 * n * per_sample

    def flops_per_rayleigh(self) -> float:
        """forward + backward (about twice the forward) for one loss gradient, hence one R."""
        return 3.0 * self.forward_flops()


REFERENCE = Model("two-layer tanh (width 1024, d 32, n 256)", "two_layer", n=256, d=32, h=1024)
DEEP = Model("3-layer tanh MLP (width 256, d 32, n 256)", "mlp3", n=256, d=32, h=256)
QUICK_REFERENCE = Model("two-layer tanh (width 128, d 8, n 32)", "two_layer", n=32, d=8, h=128)
QUICK_DEEP = Model("3-layer tanh MLP (width 32, d 8, n 32)", "mlp3", n=32, d=8, h=32)
