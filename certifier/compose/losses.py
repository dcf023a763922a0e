"""The loss table. Each loss declares, in one place, its value, the squared norm of its
functional gradient ||g||_D^2 (so that R = ||grad L||^2 / ||g||_D^2), and its KL inequality:
phi'(l) ||g||_D^2 >= c for its default desingularizer phi.

A new loss is one entry here (docs/theory.md derives each constant).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .desingularizers import DESINGULARIZERS, Desingularizer


@dataclass(frozen=True)
class Loss:
    name: str
    value: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]         # (F [n,...], y [n,...]) -> L
    grad_sqnorm: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (F, y, L) -> ||g||_D^2
    desingularizer: str     # default phi
    constant: float         # c in phi'(l) ||g||_D^2 >= c
    inequality: str         # the KL fact, in words
    reachable_minimum: str  # what "floor=0" asks


def _least_squares(F: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r = (F - y).reshape(F.shape[0], -1)
    return (r * r).sum(dim=1).mean()


LEAST_SQUARES = Loss(
    name="least_squares",
    value=_least_squares,
    # g = 2 (F - y) in L2(D), so ||g||_D^2 = E ||2 (F - y)||^2 = 4 L exactly.
    grad_sqnorm=lambda F, y, L: 4.0 * L,
    desingularizer="log",
    constant=4.0,
    inequality="||g||_D^2 = 4 l (exact), so with phi = log: phi'(l) ||g||_D^2 = 4",
    reachable_minimum="zero loss (an interpolating solution)",
)

LOSSES: dict[str, Loss] = {"least_squares": LEAST_SQUARES}


def desingularizer_for(loss: Loss, requested: str) -> Desingularizer:
    """`auto` picks the loss's own desingularizer."""
    name = loss.desingularizer if requested == "auto" else requested
    return DESINGULARIZERS[name]
