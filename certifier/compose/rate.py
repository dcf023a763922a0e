"""The composition rule, written once: a loss's KL constant c, a desingularizer phi and a
Rayleigh lower bound mu give L(t) <= max(phi^-1(phi(L0) - c mu t), floor)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .desingularizers import Desingularizer

FRACTIONS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


@dataclass(frozen=True)
class Rate:
    phi: Desingularizer
    constant: float   # c
    mu: float
    initial: float    # L0
    floor: float      # epsilon >= 0: nothing is claimed below it

    def bound(self, t: float) -> float:
        """Bound on L at gradient-flow time t. Once the floor is reached the loss stays below it
        (L is non-increasing along the flow), so the bound is max(..., floor)."""
        if t <= 0:
            return self.initial
        value = self.phi.phi_inverse(self.phi.phi(self.initial) - self.constant * self.mu * t)
        return max(value, self.floor)

    def time_to(self, level: float) -> float | None:
        """Flow time after which the bound is <= level; None when level is below the floor."""
        if level >= self.initial:
            return 0.0
        if level < self.floor or level <= 0:
            return None
        return (self.phi.phi(self.initial) - self.phi.phi(level)) / (self.constant * self.mu)

    def formula(self) -> str:
        if self.phi.name == "log":
            core = f"{self.initial:.6g} * exp(-{self.constant:g} * {self.mu:.6g} * t)"
        else:
            core = f"phi^-1(phi({self.initial:.6g}) - {self.constant:g} * {self.mu:.6g} * t)"
        return f"L(t) <= max({core}, {self.floor:.6g})" if self.floor > 0 else f"L(t) <= {core}"

    def curve(self, horizon: float, points: int = 61) -> list[list[float]]:
        ts = [0.0] + list(np.logspace(math.log10(horizon) - 6, math.log10(horizon), points))
        return [[float(t), self.bound(t)] for t in ts]

    def times_to_fraction(self) -> dict[str, float | None]:
        return {f"{f:.0e}".replace("e-0", "e-"): self.time_to(f * self.initial) for f in FRACTIONS}
