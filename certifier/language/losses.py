"""The loss table. Each loss declares, in one place:

- value(F, y): the mean loss L over the data;
- per_sample(F, y): the per-sample losses (their maximum M over the region is a fact some
  constants need);
- grad_sqnorm(F, y, L): ||g||_D^2, the squared L2(D) norm of the functional gradient g, so that
  R = ||grad L||^2 / ||g||_D^2 exactly;
- grad_sqnorm_scaled(F, y, L) (optional): (a, t) with ||g||_D^2 = a t^2, both finite wherever L
  is, for a loss whose ||g||_D^2 can overflow (or underflow) while L is a finite double: R is then
  formed from it in scaled form (compile/problem.py, rayleigh_quotient). None: ||g||_D^2 is
  bounded (logistic, cross-entropy);
- floor_g(L, M): a lower bound G(L) <= ||g||_D^2 valid wherever per-sample losses are <= M,
  from which every desingularizer's KL constant follows:
      phi'(L) ||grad L||^2 = phi'(L) R ||g||_D^2 >= R phi'(L) G(L);
- its natural desingularizer (the phi with phi'(L) G(L) constant, = c).

docs/theory.md, section 3, derives each G. A new loss is one entry here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .desingularizers import Desingularizer, make


@dataclass(frozen=True)
class Loss:
    name: str
    value: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    per_sample: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    grad_sqnorm: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    floor_g: Callable[[float, float], float]   # (L, M) -> G(L) <= ||g||_D^2
    natural: str                               # natural desingularizer name
    natural_params: dict
    inequality: str                            # the KL fact, in words
    needs_sample_bound: bool = False           # G uses M, the max per-sample loss over the region
    targets: str = "real"                      # 'real', 'pm1' (labels +-1), 'class' (class indices or one-hot)
    # (a, t) with ||g||_D^2 = a t^2, finite wherever L is (None: grad_sqnorm never overflows)
    grad_sqnorm_scaled: Callable | None = None
    # k with ||g||_D^2 = k L for every F: the fact the sound mode (method interval) proves with, so
    # R = ||grad L||^2 / (k L) and, with the natural phi, L(t) <= L0 exp(-k mu t). None: the sound
    # mode does not take this loss yet
    exact_g: float | None = None
    # the sound mode (method interval) takes this loss: its interval rule (per-sample losses, L, g,
    # ||g||_D^2 over a box) is compile/interval_losses.py's entry of this name, and its natural phi
    # gives the proved rate with c = phi'(L) G(L) (docs/theory.md 3c, 10)
    sound: bool = False
    # dL/dF in closed form for rows of scalar outputs, F [B, n] with targets y [n]: row b is the
    # derivative of value(F[b], y). The two-layer fast path's step then needs no autograd (its
    # call was a quarter of a witness step at n = 64, width 256). None: autograd on F
    derivative: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def constant(self, M: float = math.inf) -> float:
        """c = phi'(L) G(L) for the natural phi (constant in L by construction)."""
        return self.natural_phi().dphi(1.0) * self.floor_g(1.0, M)

    def natural_phi(self) -> Desingularizer:
        return make(self.natural, **self.natural_params)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


# least squares: l_i = ||F_i - y_i||^2, g = 2 (F - y): ||g||_D^2 = 4 L exactly.
def _ls_per_sample(F, y):
    r = _flat(F - y)
    return (r * r).sum(dim=1)


LEAST_SQUARES = Loss(
    name="least_squares",
    value=lambda F, y: _ls_per_sample(F, y).mean(),
    per_sample=_ls_per_sample,
    grad_sqnorm=lambda F, y, L: 4.0 * L,
    floor_g=lambda L, M: 4.0 * L,
    grad_sqnorm_scaled=lambda F, y, L: (4.0, L ** 0.5),     # 4 L = 4 (sqrt L)^2
    natural="log", natural_params={},
    inequality="||g||_D^2 = 4 L exactly, so phi = log gives phi'(L) ||g||_D^2 = 4",
    exact_g=4.0, sound=True,
    derivative=lambda F, y: (F - y).mul_(2.0 / y.shape[0]),     # d mean_i (F_i - y_i)^2 / dF
)


# logistic, labels +-1: l_i = log(1 + exp(-y_i F_i)), g_i = -y_i sigmoid(-y_i F_i), and
# |g_i| = sigmoid(-y_i F_i) = 1 - exp(-l_i) exactly.
def _logistic_per_sample(F, y):
    return torch.nn.functional.softplus(-_flat(y * F)).sum(dim=1)


def _h(u: float) -> float:
    return math.expm1(-u) ** 2            # (1 - e^-u)^2


def _dh(u: float) -> float:
    return 2 * math.exp(-u) * -math.expm1(-u)


def tangent_point(M: float) -> float:
    """u1 in (0, ln 2] with h'(u1) (M - u1) = h(M) - h(u1) (M > ln 2), by bisection in floats: the
    lower end of the last bracket, so that the tangent from u1 lies below the chord and the minorant
    stays below h (the sound mode verifies the sign it needs in arb)."""
    lo, hi = 0.0, math.log(2)
    hM = 1.0 if M > 700 else _h(M)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _dh(mid) * (M - mid) > hM - _h(mid):
            hi = mid
        else:
            lo = mid
    return lo


def _bounded_kl(L: float, M: float) -> float:
    """The largest G with mean_i (1 - e^-l_i)^2 >= G(L) for every l in [0, M]^n with mean L:
    the convex minorant of h(u) = (1 - e^-u)^2 on [0, M] at L (Jensen). h is convex on
    [0, ln 2] and concave after, so the minorant is h up to the point u1 whose tangent passes
    through (M, h(M)), then that tangent (docs/theory.md, section 3)."""
    if not math.isfinite(M):
        M = 1e300
    L = min(L, M)
    if M <= math.log(2):
        return _h(L)
    u1 = tangent_point(M)
    if L <= u1:
        return _h(L)
    return _h(u1) + _dh(u1) * (L - u1)


LOGISTIC = Loss(
    name="logistic",
    value=lambda F, y: _logistic_per_sample(F, y).mean(),
    per_sample=_logistic_per_sample,
    grad_sqnorm=lambda F, y, L: (torch.sigmoid(-_flat(y * F)) ** 2).sum(dim=1).mean(),
    floor_g=_bounded_kl,
    natural="lambert", natural_params={},
    inequality=("|g_i| = 1 - exp(-l_i) exactly, so ||g||_D^2 = mean h(l_i), h(u) = (1 - e^-u)^2; "
                "with per-sample losses <= M, ||g||_D^2 >= h_M(L), the convex minorant of h on [0, M]"),
    needs_sample_bound=True, targets="pm1", sound=True,
)


# softmax cross-entropy: l_i = -log p_{y_i}, g_i = p_i - e_{y_i}, ||g_i|| >= 1 - p_{y_i} = 1 - exp(-l_i).
def _onehot(F, y):
    if y.dim() == 1:  # class indices
        return torch.nn.functional.one_hot(y.long(), F.shape[-1]).to(F.dtype)
    return y


def _ce_per_sample(F, y):
    return -(_onehot(F, y) * torch.log_softmax(F, dim=-1)).sum(dim=-1)


CROSS_ENTROPY = Loss(
    name="cross_entropy",
    value=lambda F, y: _ce_per_sample(F, y).mean(),
    per_sample=_ce_per_sample,
    grad_sqnorm=lambda F, y, L: ((torch.softmax(F, dim=-1) - _onehot(F, y)) ** 2).sum(dim=-1).mean(),
    floor_g=_bounded_kl,
    natural="lambert", natural_params={},
    inequality=("||g_i|| >= 1 - p_{y_i} = 1 - exp(-l_i), so ||g||_D^2 >= mean h(l_i), h(u) = (1 - e^-u)^2; "
                "with per-sample losses <= M, ||g||_D^2 >= h_M(L), the convex minorant of h on [0, M] "
                "(the mean loss alone does not give it: h is concave beyond ln 2)"),
    needs_sample_bound=True, targets="class", sound=True,
)


# exponential, labels +-1: l_i = exp(-y_i F_i), |g_i| = l_i, ||g||_D^2 = mean l_i^2 >= L^2 (Jensen).
def _exp_per_sample(F, y):
    return torch.exp(-_flat(y * F)).sum(dim=1)


def _exp_grad_sqnorm_scaled(F, y, L):
    """mean_i sum_k l_ik^2 = a t^2 with t = max l_ik: finite while the l_ik are (their squares
    overflow from l = 1.3e154 on)."""
    l = torch.exp(-_flat(y * F))
    t = l.max()
    return ((l / t) ** 2).sum(dim=1).mean(), t


EXPONENTIAL = Loss(
    name="exponential",
    value=lambda F, y: _exp_per_sample(F, y).mean(),
    per_sample=_exp_per_sample,
    grad_sqnorm=lambda F, y, L: (torch.exp(-2 * _flat(y * F))).sum(dim=1).mean(),
    floor_g=lambda L, M: L * L,
    grad_sqnorm_scaled=_exp_grad_sqnorm_scaled,
    natural="power", natural_params={"alpha": 1.0},
    inequality="|g_i| = l_i, so ||g||_D^2 = mean l_i^2 >= L^2; phi = -1/u gives phi'(L) ||g||_D^2 >= 1",
    targets="pm1", sound=True,
)

LOSSES: dict[str, Loss] = {l.name: l for l in (LEAST_SQUARES, CROSS_ENTROPY, LOGISTIC, EXPONENTIAL)}
