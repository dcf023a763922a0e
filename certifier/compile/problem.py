"""Checked spec -> torch functions of a flat parameter vector theta in R^m.

The model is written per sample and evaluated over the whole data at once (compile/model.py;
torch.func.vmap over the samples where that has no rule). Everything runs in float64.
Conventions (docs/theory.md): L2(D) inner product = mean over the data,
R(theta) = ||grad L||^2 / ||g||_D^2, K_theta = J J^T / n on the stacked outputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..check.checked import Checked
from ..diagnostics import Diagnostic, SpecError
from ..language.evaluate import DTYPE
from ..language.losses import LOSSES, Loss
from ..progress import checkpoint
from .model import model_outputs
from .population import population_loss, rounding_level


@dataclass
class Point:
    """L, R and the gradient at one theta. R is finite wherever L and grad L are, even where
    grad_sqnorm = ||grad L||^2 overflows (it is then inf: rayleigh_quotient); R is NaN where L or
    grad L is not finite."""

    loss: float
    rayleigh: float
    grad: torch.Tensor
    grad_sqnorm: float   # ||grad L||^2 as a double: may be inf on a problem of huge scale
    sample_max: float   # the largest per-sample loss (a fact some loss constants need)


# --- R = ||grad L||^2 / ||g||_D^2 without overflow -------------------------------------------------
# The plain quotient gsq / gnorm is kept wherever both are finite normal doubles (the values of
# earlier versions, bitwise); where ||grad L||^2 or ||g||_D^2 overflows (L up to 1.8e308 is
# finite, ||grad L||^2 ~ 4 R L is not) or underflows, R is formed from the scaled forms
# ||grad L||^2 = s^2 ||grad L / s||^2 (s = max |grad L|) and ||g||_D^2 = a t^2 (the loss's
# grad_sqnorm_scaled): R = (||grad L / s||^2 / a) (s / t)^2, exact to a few ulps.
MIN_NORMAL = 2.0 ** -1022


def gnorm_factors(loss: Loss, F, y, L):
    """(a, t) with ||g||_D^2 = a t^2 (the loss's scaled form; (||g||_D^2, 1) for a bounded one)."""
    if loss.grad_sqnorm_scaled is not None:
        return loss.grad_sqnorm_scaled(F, y, L)
    return loss.grad_sqnorm(F, y, L), 1.0


def plain_quotient(gsq: float, gnorm: float, grad: torch.Tensor) -> bool:
    """Whether gsq / gnorm is R to rounding: both finite, neither in the subnormal range (an exact
    0 is fine: a zero gradient, or ||g||_D = 0)."""
    if not (math.isfinite(gsq) and math.isfinite(gnorm)):
        return False
    if 0.0 < gnorm < MIN_NORMAL:
        return False
    return gsq >= MIN_NORMAL or (gsq == 0.0 and not bool(grad.detach().any()))


def rayleigh_quotient(grad: torch.Tensor, gsq: float, gnorm: float, factors) -> float:
    """R = ||grad L||^2 / ||g||_D^2 from gsq = ||grad L||^2 and gnorm = ||g||_D^2 as doubles, and
    `factors()` -> (a, t), ||g||_D^2 = a t^2 (called only where the plain quotient over- or
    underflows). inf where ||g||_D = 0 < ||grad L||, NaN where grad L, a or t is not finite."""
    if plain_quotient(gsq, gnorm, grad):
        return gsq / gnorm if gnorm > 0 else math.inf
    g = grad.detach()
    s = float(g.abs().max()) if g.numel() else 0.0
    if not math.isfinite(s):
        return math.nan                    # the gradient itself overflowed: R is unknown
    a, t = (float(v) for v in factors())
    if not (math.isfinite(a) and math.isfinite(t)):
        return math.nan
    if s == 0.0:
        return 0.0 if a * t > 0 else math.inf
    if not (a > 0 and t > 0):
        return math.inf
    q = g / s
    r = s / t
    return (float(q @ q) / a) * (r * r)     # r * r: inf on overflow, where r ** 2 raises


def _log(v):
    return torch.log(v) if isinstance(v, torch.Tensor) else math.log(v)


def log_rayleigh(g: torch.Tensor, gnorm: torch.Tensor, factors) -> torch.Tensor:
    """log R, differentiable in theta through g = grad L (create_graph) and gnorm = ||g||_D^2:
    log(g . g) - log(gnorm), or where that over- or underflows the scaled form
    log(||g / s||^2) + 2 log s - log a - 2 log t (s = max |g| held constant: the same function)."""
    gg = g @ g
    if plain_quotient(float(gg.detach()), float(gnorm.detach()), g):
        return torch.log(gg) - torch.log(gnorm)
    s = g.detach().abs().max()
    if not (bool(torch.isfinite(s)) and float(s) > 0):
        return torch.log(gg) - torch.log(gnorm)
    q = g / s
    a, t = factors()
    return torch.log(q @ q) + 2.0 * torch.log(s) - _log(a) - 2.0 * _log(t)


def problem_device(checked: Checked, device: str) -> str:
    """Where a spec's Problem lives: on `device`, except in the sound mode (method interval), whose
    interval arithmetic runs in numpy on the CPU and hands float64 points (counterexample candidates,
    the witness) back and forth with it: its Problem stays on the CPU whatever --device says."""
    return "cpu" if checked.method.name == "interval" else str(device)


def _largest(a) -> float | None:
    """max |a| over the finite and infinite entries (NaN ignored), None for no entries."""
    a = np.abs(np.asarray(a, dtype=np.float64)).reshape(-1)
    a = a[~np.isnan(a)]
    return float(a.max()) if a.size else None


def initial_loss_check(checked: Checked, p0: Point, problem: "Problem | None" = None) -> None:
    """E206 at the loss statement when the analysis cannot start from theta0 at this scale: L(theta0),
    grad L(theta0) or R(theta0) is not a finite double, or the loss's bound G(L0) <= ||g||_D^2 (with
    its natural desingularizer's phi'(L0) G(L0), the KL constant's factor at theta0) overflows.
    Both analysis modes call it on their first point (compose/sampled.py, compose/sound.py)."""

    loss = LOSSES[checked.loss.name]
    L0, R0 = p0.loss, p0.rayleigh
    grad_ok = bool(torch.isfinite(p0.grad).all())
    what = None
    if not math.isfinite(L0):
        what = f"the initial loss L(theta0) = {L0!r} is not finite"
    elif not grad_ok:
        what = f"the gradient of the loss at theta0 is not finite (L(theta0) = {L0:.4g})"
    elif L0 > 0 and not (R0 >= 0 and math.isfinite(R0)):   # (L0 = 0: R0 = inf, a minimum already)
        what = f"R(theta0) = ||grad L||^2 / ||g||_D^2 = {R0!r} is not finite (L(theta0) = {L0:.4g})"
    elif L0 > 0:
        G0 = loss.floor_g(L0, p0.sample_max)
        c0 = loss.natural_phi().dphi(L0) * G0
        if not (math.isfinite(G0) and math.isfinite(c0)):
            what = (f"L(theta0) = {L0:.4g} is too large for the analysis: the bound G(L0) <= ||g||_D^2 of "
                    f"{loss.name} (or phi'(L0) G(L0)) is not a finite double")
    if what is None:
        return
    scale = []
    y = getattr(checked, "y", None)
    if getattr(checked, "population", None) is None and y is not None:
        ymax = _largest(y)
        if ymax is not None:
            scale.append(f"the largest |target| is {ymax:.3g}")
        if problem is not None and getattr(problem, "_outputs", None) is not None:
            try:
                with torch.no_grad():
                    fmax = _largest(problem.outputs(problem.theta0).cpu().numpy())
                if fmax is not None:
                    scale.append(f"the largest |F(theta0)| is {fmax:.3g}")
            except Exception:   # noqa: BLE001 - the scale is a hint only
                pass
    message = what + (" (" + " and ".join(scale) + ")" if scale else "")
    span = checked.loss.span or getattr(checked.spec.loss, "span", None)
    hint = ("rescale the data or the initial parameters (e.g. divide the targets by a power of ten): "
            "L(theta0), its gradient and ||grad L||^2 / ||g||_D^2 must be finite float64 numbers")
    raise SpecError([Diagnostic("E206", message, span, hint, checked.spec.path)])


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

    def initial_loss_check(self, p0: Point) -> None:
        """E206 when L, grad L or R at theta0 (p0 = self.point(self.theta0)) is not finite at this
        scale: initial_loss_check."""
        initial_loss_check(self.checked, p0, self)

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
        loss = self.loss_def
        if not second and self._closed_form.fast:       # numpy closed form, no autograd
            L, g = self._closed_form.value_and_grad(theta)
            gsq, gn = float(g @ g), float(loss.grad_sqnorm(None, None, L))
            grad = torch.from_numpy(g).to(dtype=theta.dtype, device=theta.device)
            R = rayleigh_quotient(grad, gsq, gn, lambda: gnorm_factors(loss, None, None, L))
            return Point(L, R, grad, gsq, math.nan)
        th = theta.detach().requires_grad_(True)
        L = self.loss(th)
        (g,) = torch.autograd.grad(L, th, create_graph=second)
        gnorm = loss.grad_sqnorm(None, None, L)
        if second:
            log_r = log_rayleigh(g, gnorm, lambda: gnorm_factors(loss, None, None, L))
            (dg,) = torch.autograd.grad(log_r, th)
            return float(L.detach()), float(log_r.detach()), dg.detach(), math.nan
        gsq = float(g @ g)
        gn = float(gnorm.detach())
        Ld = L.detach()
        R = rayleigh_quotient(g, gsq, gn, lambda: gnorm_factors(loss, None, None, Ld))
        return Point(float(Ld), R, g.detach(), gsq, math.nan)

    def point(self, theta: torch.Tensor) -> Point:
        """L, grad L and R = ||grad L||^2 / ||g||_D^2 with one backward pass."""
        if self._closed_form is not None:
            return self._closed_form_point(theta, False)
        th = theta.detach().requires_grad_(True)
        F = self.outputs(th)
        L = self.loss_def.value(F, self.y)
        (g,) = torch.autograd.grad(L, th)
        Fd, Ld = F.detach(), L.detach()
        gnorm = float(self.loss_def.grad_sqnorm(Fd, self.y, Ld))
        gsq = float(g @ g)
        R = rayleigh_quotient(g, gsq, gnorm, lambda: gnorm_factors(self.loss_def, Fd, self.y, Ld))
        return Point(float(Ld), R, g.detach(), gsq, float(self.loss_def.per_sample(Fd, self.y).max()))

    def log_rayleigh_and_grad(self, theta: torch.Tensor) -> tuple[float, float, torch.Tensor, float]:
        """(L, log R, d log R / d theta, max per-sample loss): adversarial descent on R needs the
        second derivative."""
        if self._closed_form is not None:
            return self._closed_form_point(theta, True)
        th = theta.detach().requires_grad_(True)
        F = self.outputs(th)
        L = self.loss_def.value(F, self.y)
        (g,) = torch.autograd.grad(L, th, create_graph=True)
        log_r = log_rayleigh(g, self.loss_def.grad_sqnorm(F, self.y, L),
                             lambda: gnorm_factors(self.loss_def, F, self.y, L))
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
            checkpoint()   # --budget: a wide model's product takes long, and nothing else checks here
            # the scalar g.v, not grad_outputs=v: the same Hv (its backward seeds g with 1.0 * v), and
            # no import of torch.fx.experimental.symbolic_shapes and sympy (0.44 s) by _make_grads
            (hv,) = torch.autograd.grad(g @ v, th, retain_graph=True)
            lam = float(hv.norm())
            if lam == 0.0 or not math.isfinite(lam):
                break
            v = hv / lam
        return lam
