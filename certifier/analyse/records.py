"""Every evaluated point of the search: its distance from the center, L, and a value that
bounds R there from above (R itself) or from below in all directions (lambda_min of K)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class Best:
    value: float
    distance: float
    loss: float
    theta: torch.Tensor


@dataclass
class Records:
    distance: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    thetas: dict[int, torch.Tensor] = field(default_factory=dict)  # kept for the lowest points only

    def add(self, source: str, distance: float, loss: float, value: float, theta: torch.Tensor | None = None):
        if not (math.isfinite(value) and math.isfinite(loss)):
            return
        self.distance.append(distance)
        self.loss.append(loss)
        self.value.append(value)
        self.source.append(source)
        if theta is not None:
            self.thetas[len(self.value) - 1] = theta.detach().clone()
            if len(self.thetas) > 256:  # keep the 128 lowest
                keep = sorted(self.thetas, key=lambda i: self.value[i])[:128]
                self.thetas = {i: self.thetas[i] for i in keep}

    def count(self, source: str | None = None) -> int:
        return len(self.value) if source is None else sum(1 for s in self.source if s == source)

    def _eligible(self, radius: float, floor: float):
        for i, (d, L) in enumerate(zip(self.distance, self.loss)):
            if d <= radius * (1 + 1e-12) and L >= floor:
                yield i

    def minimum(self, radius: float, floor: float, source: str | None = None) -> tuple[float, int | None]:
        best, arg = math.inf, None
        for i in self._eligible(radius, floor):
            if (source is None or self.source[i] == source) and self.value[i] < best:
                best, arg = self.value[i], i
        return best, arg

    def lowest(self, radius: float, floor: float, count: int) -> list[int]:
        idx = sorted(self._eligible(radius, floor), key=lambda i: self.value[i])
        return idx[:count]
