"""Kurdyka-Lojasiewicz desingularizers: each declares phi, phi', phi^-1 and the rate it gives.

Composition rule (docs/theory.md, section 3), written once in compose.rate:
if phi'(L) ||g||_D^2 >= c (a fact of the loss) and R >= mu on the region, then
L(theta_t) <= phi^-1(phi(L0) - c mu t) while the flow stays in the region.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Desingularizer:
    name: str
    phi: Callable[[float], float]
    dphi: Callable[[float], float]
    phi_inverse: Callable[[float], float]
    phi_text: str           # human formula of phi
    params: dict


def _exp_or_zero(v: float) -> float:
    return math.exp(v) if v > -745.0 else 0.0


LOG = Desingularizer(
    name="log",
    phi=math.log,
    dphi=lambda u: 1.0 / u,
    phi_inverse=_exp_or_zero,
    phi_text="phi(u) = log(u)",
    params={},
)

DESINGULARIZERS: dict[str, Desingularizer] = {"log": LOG}
