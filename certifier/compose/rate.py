"""The composition rule, written once: if phi'(L) ||grad L||^2 >= K on the region, then
    gradient flow:      L(t)   <= max(phi^-1(phi(L0) - K t), floor)
    gradient descent:   L_k    <= max(phi^-1(phi(L0) - k eta (1 - beta eta / 2) K), floor)
(docs/theory.md, sections 3 and 4b). `speed` is the phi-decrease per unit of `unit`.

With `outward` (the sound mode) every number is rounded so that it stays a bound: the
phi-decrease s = speed * t down, phi^-1 and the gaps of phi evaluated in arb and rounded up, so
bound(t) >= the exact phi^-1(phi(L0) - K t) and time_to(level) >= the exact time, for the
exact reals K and L0 given (themselves a proved lower and upper bound)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..compile.rounding import down, up
from ..language.desingularizers import LOG, Desingularizer

FRACTIONS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


@dataclass(frozen=True)
class Rate:
    phi: Desingularizer
    K: float          # phi'(L) ||grad L||^2 >= K on the region
    initial: float    # L0
    floor: float      # epsilon >= 0: nothing is claimed below it
    step: float | None = None       # eta for gradient descent; None for gradient flow
    smoothness: float | None = None  # beta, with eta <= 1/beta
    outward: bool = False            # every number a bound (the sound mode): see the module's docstring
    K_text: str | None = None        # K as the formula shows it (e.g. "4 * mu" with mu's digits)

    @property
    def speed(self) -> float:
        """phi-decrease per unit time (flow) or per step (descent)."""
        if self.step is None:
            return self.K
        if self.outward:   # eta (1 - beta eta / 2) K, each operation rounded down
            half = float(up(up(self.smoothness * self.step) / 2))
            return float(down(down(self.step * down(1 - half)) * self.K))
        return self.step * (1 - self.smoothness * self.step / 2) * self.K

    @property
    def unit(self) -> str:
        return "t" if self.step is None else "k"

    def bound(self, t: float) -> float:
        """Bound on L at flow time t, or after k = t steps. Once the floor is reached the loss stays
        below it (L is non-increasing), hence the max with the floor."""
        if t <= 0:
            return self.initial
        if self.outward:
            return max(self.phi.descend_up(self.initial, float(down(self.speed * t))), self.floor)
        return max(self.phi.descend(self.initial, self.speed * t), self.floor)

    def time_to(self, level: float) -> float | None:
        """Time (or steps, rounded up) after which the bound is <= level; None below the floor."""
        if level >= self.initial:
            return 0.0
        if level < self.floor or level <= 0:
            return None
        if self.outward:
            value = float(up(self.phi.gap_up(self.initial, level) / self.speed))
        else:
            value = self.phi.gap(self.initial, level) / self.speed
        return float(math.ceil(value)) if self.step is not None else value

    def formula(self) -> str:
        var = "t" if self.step is None else "k"
        core = self.phi.formula(self.initial, self.speed, self.outward,
                                 self.K_text if self.step is None else None).replace("* t", f"* {var}")
        left = "L(t)" if self.step is None else "L_k"
        floor = repr(self.floor) if self.outward else f"{self.floor:.6g}"
        return f"{left} <= max({core}, {floor})" if self.floor > 0 else f"{left} <= {core}"

    def asymptotic(self) -> str:
        text = self.phi.asymptotic(self.speed)
        return text if self.step is None else text.replace(" t", " k").replace("t^", "k^")

    def curve(self, horizon: float, points: int = 61) -> list[list[float]]:
        ts = [0.0] + list(np.logspace(math.log10(horizon) - 6, math.log10(horizon), points))
        return [[float(t), self.bound(t)] for t in ts]

    def times_to_fraction(self) -> dict[str, float | None]:
        return {f"{f:.0e}".replace("e-0", "e-"): self.time_to(f * self.initial) for f in FRACTIONS}


def proved_rate(L0_up: float, mu: float, floor: float, c: float, phi: Desingularizer = LOG,
                step: float | None = None, smoothness: float | None = None) -> Rate:
    """The sound mode's bound L(t) <= max(phi^-1(phi(L0_up) - c mu t), floor) for the loss's natural
    phi, c = phi'(L) G(L) (constant in L by construction: least squares 4 with phi = log, so
    L0_up exp(-4 mu t); exponential 1 with phi = -1/u, so 1/(1/L0_up + mu t)). K = c mu rounded down
    (exactly mu when c = 1), every number rounded outward. With a step eta and a proved smoothness beta
    (eta beta <= 1): gradient descent, L_k <= max(phi^-1(phi(L0_up) - k eta (1 - beta eta / 2) K), floor)."""
    K = float(mu) if c == 1 else float(down(c * mu))
    c_text = f"{c:g}" if c == int(c) else repr(c)
    return Rate(phi, K, L0_up, floor, step, smoothness, outward=True,
                K_text=repr(K) if c == 1 else f"{c_text} * {mu!r}")


@dataclass(frozen=True)
class ProfileRate:
    """The loss-level profile's rate (the sound mode, docs/theory.md 10.11): on each loss band [a, b] of
    `bands` (ascending, covering [floor, L0]) phi'(L) ||grad L||^2 >= K_band, so the flow spends at most
    tau = (phi(b) - phi(a)) / K_band in the band (rounded up) and, with S the sum of the taus of the bands
    above (rounded up), L(t) <= max(phi^-1(phi(b) - K_band (t - S)), a) for S <= t <= S + tau. Every
    number is rounded outward like Rate(outward=True). A band with K = 0 stops the profile: the bound
    stays at its upper edge."""

    phi: Desingularizer
    bands: tuple          # ((a, b, K), ...) ascending in the loss
    initial: float        # L0 (an upper bound)
    floor: float
    step: None = None
    outward: bool = True

    @property
    def K(self) -> float:
        """The smallest band constant (what a single-K rate would use)."""
        return min(k for _, _, k in self.bands)

    @property
    def unit(self) -> str:
        return "t"

    def schedule(self) -> list[tuple[float, float, float, float, float]]:
        """(a, b, K, start, tau) from the top band down; start = the time by which L <= b (rounded up)."""
        out, start = [], 0.0
        for a, b, K in reversed(self.bands):
            tau = float(up(self.phi.gap_up(b, a) / K)) if K > 0 else math.inf
            out.append((a, b, K, start, tau))
            start = float(up(start + tau))
        return out

    def bound(self, t: float) -> float:
        if t <= 0:
            return self.initial
        for a, b, K, start, tau in self.schedule():
            if t <= float(up(start + tau)):
                if K <= 0:
                    return b
                return max(self.phi.descend_up(b, float(down(down(t - start) * K))), a)
        return self.floor

    def time_to(self, level: float) -> float | None:
        if level >= self.initial:
            return 0.0
        if level < self.floor or level <= 0:
            return None
        total = 0.0
        for a, b, K, _start, tau in self.schedule():
            if level >= b:
                break
            if K <= 0:
                return None
            part = tau if level <= a else float(up(self.phi.gap_up(b, level) / K))
            total = float(up(total + part))
        return total

    def formula(self) -> str:
        first = self.schedule()[0]
        return (f"L(t) <= max(phi^-1(phi(b) - K_band * (t - S_band)), a) on each band [a, b] from L0 = "
                f"{self.initial!r} (phi = {self.phi.name}; {len(self.bands)} bands, rate.profile.bands), "
                f"max(..., {self.floor!r}) after; top band K = {first[2]!r}")

    def asymptotic(self) -> str:
        return self.phi.asymptotic(self.bands[0][2]) + " in the lowest band (band by band above it)"

    def curve(self, horizon: float, points: int = 61) -> list[list[float]]:
        ts = [0.0] + list(np.logspace(math.log10(horizon) - 6, math.log10(horizon), points))
        return [[float(t), self.bound(t)] for t in ts]

    def times_to_fraction(self) -> dict[str, float | None]:
        return {f"{f:.0e}".replace("e-0", "e-"): self.time_to(f * self.initial) for f in FRACTIONS}
