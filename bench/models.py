"""The benchmark problems as spec text, with their FLOP counts per Rayleigh quotient, and the
baselines a user would write for R = ||grad L||^2 / ||g||_D^2 of the same networks in torch (an
autograd.grad loop, torch.func vmap(grad), a hand-batched version)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


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
        """The products R needs (issue 21): the forward pass and the gradients of the weights,
        no gradient of the data. Two-layer: forward 2n(dh + h), weight gradients dW 2ndh and
        da 2nh, so twice the forward. MLP: the forward, the weight gradients (as many FLOPs as the
        forward) and the gradients of the two hidden layers' outputs, through W3 and W2 (2nh^2
        each; not through W1, whose input is the data). Elementwise work is not counted."""
        h, n = self.h, self.n
        hidden = 0.0 if self.kind == "two_layer" else 2.0 * 2 * n * h * h
        return 2.0 * self.forward_flops() + hidden

    def convention_flops(self) -> float:
        """The training-step convention, 3 forward passes (it counts the data's gradient too):
        the count of this page's figures until 2026-12-07."""
        return 3.0 * self.forward_flops()

    def shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """The parameters in the spec's order, as Problem.unflatten cuts theta."""
        d, h = self.d, self.h
        if self.kind == "two_layer":
            return [("W", (h, d)), ("a", (h,))]
        return [("W1", (h, d)), ("W2", (h, h)), ("W3", (h, h)), ("a", (h,))]


REFERENCE = Model("two-layer tanh (width 1024, d 32, n 256)", "two_layer", n=256, d=32, h=1024)
DEEP = Model("3-layer tanh MLP (width 256, d 32, n 256)", "mlp3", n=256, d=32, h=256)
QUICK_REFERENCE = Model("two-layer tanh (width 128, d 8, n 32)", "two_layer", n=32, d=8, h=128)
QUICK_DEEP = Model("3-layer tanh MLP (width 32, d 8, n 32)", "mlp3", n=32, d=8, h=32)


# --- what a user would write: R of the least-squares loss, in plain torch ---------------------------
#
# L = mean_i (F_i - y_i)^2, g_i = dl_i/dF_i = 2 (F_i - y_i), ||g||_D^2 = mean_i g_i^2 = 4 L, so
# R = ||grad_theta L||^2 / (4 L).

def _cut(model: Model, theta: torch.Tensor) -> list[torch.Tensor]:
    """theta ([m] or [B, m]) as the model's parameters ([B, *shape] for a batch)."""
    lead = theta.shape[:-1]
    out, at = [], 0
    for _, shape in model.shapes():
        size = 1
        for s in shape:
            size *= s
        out.append(theta[..., at:at + size].reshape(*lead, *shape))
        at += size
    return out


def forward(model: Model, params, x: torch.Tensor) -> torch.Tensor:
    """F for one theta's parameters (or a batch's, [B, ...]: then F is [B, n])."""
    act = getattr(torch, model.activation) if model.kind == "two_layer" else torch.tanh
    if model.kind == "two_layer":
        W, a = params
        T = act(x @ W.transpose(-1, -2))
    else:
        W1, W2, W3, a = params
        T = torch.tanh(torch.tanh(torch.tanh(x @ W1.transpose(-1, -2)) @ W2.transpose(-1, -2)) @ W3.transpose(-1, -2))
    return (T @ a.unsqueeze(-1)).squeeze(-1)


def autograd_loop(model: Model, x, y):
    """One theta at a time: the parameters, the loss, torch.autograd.grad, R."""
    def rayleigh(thetas: torch.Tensor) -> torch.Tensor:
        out = []
        for theta in thetas:
            params = [p.detach().requires_grad_() for p in _cut(model, theta)]
            L = ((forward(model, params, x) - y) ** 2).mean()
            grads = torch.autograd.grad(L, params)
            out.append(sum((g * g).sum() for g in grads) / (4 * L.detach()))
        return torch.stack(out)
    return rayleigh


def vmap_grad(model: Model, x, y):
    """torch.func: vmap over theta of grad_and_value of the loss of a flat theta."""
    from torch.func import grad_and_value, vmap

    def loss(theta):
        return ((forward(model, _cut(model, theta), x) - y) ** 2).mean()
    batched = vmap(grad_and_value(loss))

    def rayleigh(thetas: torch.Tensor) -> torch.Tensor:
        g, L = batched(thetas)
        return (g * g).sum(dim=1) / (4 * L)
    return rayleigh


def hand_batched(model: Model, x, y):
    """The batch of thetas as batched weight tensors ([B, h, d], ...), batched matrix products,
    one autograd.grad of the summed losses (the losses of different thetas are independent)."""
    def rayleigh(thetas: torch.Tensor) -> torch.Tensor:
        params = [p.detach().requires_grad_() for p in _cut(model, thetas)]
        L = ((forward(model, params, x) - y) ** 2).mean(dim=-1)
        grads = torch.autograd.grad(L.sum(), params)
        sq = sum((g * g).flatten(1).sum(dim=1) for g in grads)
        return sq / (4 * L.detach())
    return rayleigh


BASELINES = {"autograd_loop": autograd_loop, "vmap_grad_user": vmap_grad, "hand_batched": hand_batched}
