"""Staying inside the region (docs/theory.md, section 4).

While the flow is in U with phi'(L) ||grad L||^2 >= K, its path length is at most
    rho = int_floor^L0 sqrt(phi'(u) / K) du,
so B(theta0, rho) inside U keeps the flow in U until it reaches the floor (first-exit-time
argument). Gradient descent with eta <= 1/beta: rho / (1 - beta eta / 2) plus one last step.
"""
from __future__ import annotations

import math

from ..language.desingularizers import Desingularizer


def path_length_bound(phi: Desingularizer, K: float, initial: float, floor: float,
                      step: float | None = None, smoothness: float | None = None,
                      last_step: float = 0.0) -> float:
    if not K > 0:
        return math.inf
    if initial <= floor:
        return 0.0
    rho = phi.path_integral(floor, initial) / math.sqrt(K)
    if step is not None:
        rho = rho / (1 - smoothness * step / 2) + last_step
    return rho


def find_radius(mu_of_radius, rho_of_mu, start: float, iterations: int = 10):
    """A radius r with rho(mu(r)) <= r, by the upward fixed-point iteration r <- rho(r): the first
    of its radii that passes (at most 1.25 times the smallest such r between the last two tries).

    mu(r) is non-increasing in r, so rho(r) is non-decreasing: every r below rho(r) fails and
    the iteration climbs to the first fixed point if one exists. Returns
    (radius, mu, rho, history, found) where history lists (r, mu(r), rho(r)).
    """
    history = []
    r = start
    for _ in range(iterations):
        mu = mu_of_radius(r)
        rho = rho_of_mu(mu)
        history.append((r, mu, rho))
        if rho <= r:
            return r, mu, rho, history, True
        if not math.isfinite(rho):
            break
        # climb to rho(r), but at most doubling: mu at a much larger radius needs its own search
        r = min(max(rho * 1.05, r * 1.25), 2 * r)
    r, mu, rho = history[-1]
    return r, mu, rho, history, False
