"""The composition rule, written once: if phi'(L) ||grad L||^2 >= K on the region, then
    gradient flow:      L(t)   <= max(phi^-1(phi(L0) - K t), floor)
    gradient descent:   L_k    <= max(phi^-1(phi(L0) - k eta (1 - beta eta / 2) K), floor)
(docs/theory.md, sections 3 and 4b). `speed` is the phi-decrease per unit of `unit`."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..language.desingularizers import Desingularizer

FRACTIONS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


@dataclass(frozen=True)
class Rate:
    phi: Desingularizer
    K: float          # phi'(L) ||grad L||^2 >= K on the region
    initial: float    # L0
    floor: float      # epsilon >= 0: nothing is claimed below it
    step: float | None = None       # eta for gradient descent; None for gradient flow
    smoothness: float | None = None  # beta, with eta <= 1/beta

    @property
    def speed(self) -> float:
        """phi-decrease per unit time (flow) or per step (descent)."""
        if self.step is None:
            return self.K
        return self.step * (1 - self.smoothness * self.step / 2) * self.K

    @property
    def unit(self) -> str:
        return "t" if self.step is None else "k"

    def bound(self, t: float) -> float:
        """Bound on L at flow time t, or after k = t steps. Once the floor is reached the loss stays
        below it (L is non-increasing), hence the max with the floor."""
        if t <= 0:
            return self.initial
        return max(self.phi.descend(self.initial, self.speed * t), self.floor)

    def time_to(self, level: float) -> float | None:
        """Time (or steps, rounded up) after which the bound is <= level; None below the floor."""
        if level >= self.initial:
            return 0.0
        if level < self.floor or level <= 0:
            return None
        value = self.phi.gap(self.initial, level) / self.speed
        return float(math.ceil(value)) if self.step is not None else value

    def formula(self) -> str:
        var = "t" if self.step is None else "k"
        core = self.phi.formula(self.initial, self.speed).replace("* t", f"* {var}")
        left = "L(t)" if self.step is None else "L_k"
        return f"{left} <= max({core}, {self.floor:.6g})" if self.floor > 0 else f"{left} <= {core}"

    def asymptotic(self) -> str:
        text = self.phi.asymptotic(self.speed)
        return text if self.step is None else text.replace(" t", " k").replace("t^", "k^")

    def curve(self, horizon: float, points: int = 61) -> list[list[float]]:
        ts = [0.0] + list(np.logspace(math.log10(horizon) - 6, math.log10(horizon), points))
        return [[float(t), self.bound(t)] for t in ts]

    def times_to_fraction(self) -> dict[str, float | None]:
        return {f"{f:.0e}".replace("e-0", "e-"): self.time_to(f * self.initial) for f in FRACTIONS}
