"""Checked spec -> torch functions of a flat parameter vector theta in R^m.

The model is written per sample; torch.func.vmap vectorises it over the data. Everything
runs in float64. Conventions (docs/theory.md): L2(D) inner product = mean over the data,
R(theta) = ||grad L||^2 / ||g||_D^2, K_theta = J J^T / n on the stacked outputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import vmap

from ..check.checked import Checked
from ..compose.losses import LOSSES, Loss
from .evaluate import DTYPE, evaluate
from .model import model_outputs


@dataclass
class Point:
    """L, R and the gradient at one theta."""

    loss: float
    rayleigh: float
    grad: torch.Tensor
    grad_sqnorm: float
    sample_max: float   # the largest per-sample loss (a fact some loss constants need)


def problem_device(checked: Checked, device: str) -> str:
    """Where a spec's Problem lives: on `device`, except in the sound mode (method interval), whose
    interval arithmetic runs in numpy on the CPU and hands float64 points (counterexample candidates,
    the witness) back and forth with it: its Problem stays on the CPU whatever --device says."""
    return "cpu" if checked.method.name == "interval" else str(device)


class Problem:
    def __init__(self, checked: Checked, device: str = "cpu"):
        self.checked = checked
        self.device = torch.device(device)
        self.names = list(checked.params)
        self.shapes = [tuple(checked.params[k].shape) for k in self.names]
        self.sizes = [int(np.prod(s)) if s else 1 for s in self.shapes]
        self.m = int(sum(self.sizes))
        self.theta0 = torch.cat([self._t(checked.params[k]).reshape(-1) for k in self.names])
        self.x = self._t(checked.x)
        self.y = self._t(checked.y)
        self.n = int(self.x.shape[0])
        self.k = int(np.prod(checked.output_shape)) if checked.output_shape else 1
        self.constants = {k: self._t(v) for k, v in checked.constants.items()}
        self.loss_def: Loss = LOSSES[checked.loss.name]
        # a population (data gaussian): L in closed form, no per-sample outputs (compile/population.py)
        self.population = getattr(checked, "population", None)
        self._closed_form = None
        self.loss_rounding = 0.0   # absolute rounding level of L (pipeline: losses below it are noise)
        if self.population is not None:
            from .population import population_loss, rounding_level

            self._closed_form = population_loss(self, checked)
            self.loss_rounding = rounding_level(self, checked)
        # the spec's model f(x) = expr, or a torch module (compile/model.py)
        self._outputs = model_outputs(self, checked) if self._closed_form is None else None

    def _t(self, a) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=DTYPE, device=self.device)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """The named parameters as views of theta. One torch.split, not a slice per parameter:
        autograd then assembles the gradient of theta once (a cat of the parameters' gradients)
        instead of a zero-filled copy of theta per parameter, accumulated (the same values; on the
        bench's 3-layer MLP those fills and sums took a fifth of the time)."""
        parts = torch.split(theta, self.sizes)
        return {name: part.reshape(shape) for name, shape, part in zip(self.names, self.shapes, parts)}

    # values ------------------------------------------------------------------
    def outputs(self, theta: torch.Tensor) -> torch.Tensor:
        if self._outputs is None:
            raise TypeError("a population (data gaussian) has no per-sample outputs: use Problem.loss")
        return self._outputs(theta, self.x)

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        if self._closed_form is not None:
            return self._closed_form(theta)
        return self.loss_def.value(self.outputs(theta), self.y)

    def _closed_form_point(self, theta: torch.Tensor, second: bool):
        """Population: L in closed form, least squares, so ||g||_D^2 = 4 L (exact); no per-sample
        losses (their maximum is reported as NaN)."""
        if not second and self._closed_form.fast:       # numpy closed form, no autograd
            L, g = self._closed_form.value_and_grad(theta)
            gsq, gn = float(g @ g), float(self.loss_def.grad_sqnorm(None, None, L))
            grad = torch.from_numpy(g).to(dtype=theta.dtype, device=theta.device)
            return Point(L, gsq / gn if gn > 0 else math.inf, grad, gsq, math.nan)
        th = theta.detach().requires_grad_(True)
        L = self.loss(th)
        (g,) = torch.autograd.grad(L, th, create_graph=second)
        gnorm = self.loss_def.grad_sqnorm(None, None, L)
        if second:
            log_r = torch.log(g @ g) - torch.log(gnorm)
            (dg,) = torch.autograd.grad(log_r, th)
            return float(L.detach()), float(log_r.detach()), dg.detach(), math.nan
        gsq = float(g @ g)
        gn = float(gnorm.detach())
        return Point(float(L.detach()), gsq / gn if gn > 0 else math.inf, g.detach(), gsq, math.nan)

    def point(self, theta: torch.Tensor) -> Point:
        """L, grad L and R = ||grad L||^2 / ||g||_D^2 with one backward pass."""
        if self._closed_form is not None:
            return self._closed_form_point(theta, False)
        th = theta.detach().requires_grad_(True)
        F = self.outputs(th)
        L = self.loss_def.value(F, self.y)
        (g,) = torch.autograd.grad(L, th)
        Fd = F.detach()
        gnorm = float(self.loss_def.grad_sqnorm(Fd, self.y, L.detach()))
        gsq = float(g @ g)
        R = gsq / gnorm if gnorm > 0 else math.inf
        return Point(float(L.detach()), R, g.detach(), gsq, float(self.loss_def.per_sample(Fd, self.y).max()))

    def log_rayleigh_and_grad(self, theta: torch.Tensor) -> tuple[float, float, torch.Tensor, float]:
        """(L, log R, d log R / d theta, max per-sample loss): adversarial descent on R needs the
        second derivative."""
        if self._closed_form is not None:
            return self._closed_form_point(theta, True)
        th = theta.detach().requires_grad_(True)
        F = self.outputs(th)
        L = self.loss_def.value(F, self.y)
        (g,) = torch.autograd.grad(L, th, create_graph=True)
        log_r = torch.log(g @ g) - torch.log(self.loss_def.grad_sqnorm(F, self.y, L))
        (dg,) = torch.autograd.grad(log_r, th)
        sample_max = float(self.loss_def.per_sample(F.detach(), self.y).max())
        return float(L.detach()), float(log_r.detach()), dg.detach(), sample_max

    # tangent kernel -----------------------------------------------------------
    def kernel_applicable(self, limit: int = 4096) -> bool:
        """lambda_min(K) > 0 needs m >= n k; forming J costs n k backward passes. A population has
        infinitely many samples: no finite kernel matrix."""
        if self.population is not None:
            return False
        return self.m >= self.n * self.k and self.n * self.k <= limit

    def jacobian(self, theta: torch.Tensor) -> torch.Tensor:
        """J [n k, m], by vector-Jacobian products in chunks of bounded memory (compile/kernel.py)."""
        from .kernel import jacobian

        return jacobian(self, theta)

    def kernel_lambda_min(self, theta: torch.Tensor, method: str = "auto") -> float:
        """lambda_min of K_theta = J J^T / n, a lower bound on R(theta) in every direction.
        method 'formed' (eigvalsh of K), 'lanczos' (kernel-vector products, J never formed) or
        'auto': formed for n k < 512 while J fits in memory, Lanczos beyond (compile/kernel.py)."""
        from .kernel import lambda_min

        return lambda_min(self, theta, method)

    # smoothness ---------------------------------------------------------------
    def hessian_top_eigenvalue(self, theta: torch.Tensor, iterations: int = 30, seed: int = 0) -> float:
        """Largest |eigenvalue| of the Hessian of L by power iteration on Hessian-vector products."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        v = torch.randn(self.m, generator=gen, dtype=DTYPE).to(self.device)
        v /= v.norm()
        th = theta.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(self.loss(th), th, create_graph=True)
        lam = 0.0
        for _ in range(iterations):
            (hv,) = torch.autograd.grad(g, th, v, retain_graph=True)
            lam = float(hv.norm())
            if lam == 0.0 or not math.isfinite(lam):
                break
            v = hv / lam
        return lam
