"""Every evaluated point of the search: its distance from the center, L, and a value that
bounds R there from above (R itself) or from below in all directions (lambda_min of K).

Gradient flow never increases L, so the flow from theta0 lives in the sublevel set
{L <= L(theta0)} (docs/theory.md, section 7): with `ceiling` set to L(theta0), records above it
take no part in mu, the profile or a refutation. `path` counts the first records, those of the
descent from theta0: the only points that the search saw the flow reach."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

# Sources whose value is a lower bound on R at the point (valid in every direction), not R itself:
# reported beside mu, never used for it (docs/theory.md, section 7).
LOWER_BOUNDS = frozenset({"tangent-kernel"})

# The thetas kept for later queries (the lowest points: adversarial starts, kernel and smoothness
# points, a certificate's evidence; at most 8 a query) are bounded in bytes: Records keeps the
# `keep` lowest after each pruning (at most 2 keep), a unit of searches about 5 keep
# (analyse/units.py). At m = 278 784 the fixed 128 had Records hold 570 MB and one unit 2.3 GB.
THETA_BYTES = 32 * 2**20
MAX_KEEP = 128
MIN_KEEP = 8


def theta_keep(m: int) -> int:
    """How many lowest thetas Records keeps when it prunes, for thetas of m floats."""
    return int(max(MIN_KEEP, min(MAX_KEEP, THETA_BYTES // (5 * 8 * max(1, m)))))


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
    sample_max: list[float] = field(default_factory=list)   # largest per-sample loss at the point
    thetas: dict[int, torch.Tensor] = field(default_factory=dict)  # kept for the lowest points only
    ceiling: float = math.inf   # L(theta0): the flow never climbs above it
    path: int = 0               # records [0, path) lie on the descent from theta0
    keep: int = MAX_KEEP        # thetas kept after a pruning (theta_keep); it prunes above 2 keep

    def add(self, source: str, distance: float, loss: float, value: float, theta: torch.Tensor | None = None,
            sample_max: float = math.nan):
        if not (math.isfinite(value) and math.isfinite(loss)):
            return
        self.sample_max.append(sample_max)
        self.distance.append(distance)
        self.loss.append(loss)
        self.value.append(value)
        self.source.append(source)
        # a point above the ceiling is never evidence: keeping its theta could evict one that is
        if theta is not None and loss <= self.ceiling * (1 + 1e-12):
            self.thetas[len(self.value) - 1] = theta.detach().clone()
            if len(self.thetas) > 2 * self.keep:  # keep the `keep` lowest
                keep = sorted(self.thetas, key=lambda i: self.value[i])[:self.keep]
                self.thetas = {i: self.thetas[i] for i in keep}

    def count(self, source: str | None = None) -> int:
        return len(self.value) if source is None else sum(1 for s in self.source if s == source)

    def _eligible(self, radius: float, floor: float):
        top = self.ceiling * (1 + 1e-12)
        for i, (d, L) in enumerate(zip(self.distance, self.loss)):
            if d <= radius * (1 + 1e-12) and floor <= L <= top:
                yield i

    def minimum(self, radius: float, floor: float, source: str | None = None) -> tuple[float, int | None]:
        """Smallest R within `radius` at loss >= floor. Records whose value is only a lower bound
        on R (the kernel's lambda_min, valid in every direction) never set it: they take part
        only when `source` names them, for the report."""
        best, arg = math.inf, None
        for i in self._eligible(radius, floor):
            if source is not None and self.source[i] != source:
                continue
            if source is None and self.source[i] in LOWER_BOUNDS:
                continue
            if self.value[i] < best:
                best, arg = self.value[i], i
        return best, arg

    def eligible(self, radius: float, floor: float) -> list[int]:
        """The records of R itself within `radius` and in [floor, L(theta0)] (no lower bounds)."""
        return [i for i in self._eligible(radius, floor) if self.source[i] not in LOWER_BOUNDS]

    def max_sample_loss(self, radius: float) -> float:
        """Largest per-sample loss seen within `radius` (an estimate of its sup over the region)."""
        top = self.ceiling * (1 + 1e-12)
        values = [m for d, L, m in zip(self.distance, self.loss, self.sample_max)
                  if d <= radius * (1 + 1e-12) and L <= top]
        return max((m for m in values if math.isfinite(m)), default=math.nan)

    def lowest(self, radius: float, floor: float, count: int, on_path: bool = False) -> list[int]:
        """The `count` records of smallest R; `on_path`: only those of the descent from theta0."""
        idx = sorted((i for i in self.eligible(radius, floor) if not (on_path and i >= self.path)),
                     key=lambda i: self.value[i])
        return idx[:count]

    def lowest_loss(self, radius: float) -> float:
        """The smallest loss of any record within `radius` (and in the sublevel set)."""
        return min((self.loss[i] for i in self._eligible(radius, 0.0)), default=math.inf)
