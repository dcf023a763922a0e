"""The one-trajectory search of the sampled engine (gradient descent from a start, recording R
along it) and the context every search shares. The batched searches are analyse/units.py; the
one-point-at-a-time references they replace are bench/serial.py."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..compile.batched import evaluator
from ..compile.problem import Problem
from .records import Records


@dataclass
class SearchContext:
    gen: torch.Generator
    eta: float          # gradient step for trajectories (about 0.5 / beta)
    noise: float        # losses below this are rounding noise; such points are not used
    advance: object     # progress callback
    floor: float = 0.0  # points below the floor do not count: adversarial descent stays above it
    executor: object = None  # where search_region's batched units run (analyse/parallel.py); None: here


def trajectory(problem: Problem, start: torch.Tensor, center: torch.Tensor, region, steps: int,
               ctx: SearchContext, records: Records, source: str = "trajectory", extend_to: int = 0) -> int:
    """Gradient descent from `start`, recording R at every iterate while it stays in the region
    (region None: unconstrained, recorded by distance from center). Returns steps taken. Each step
    is the batched evaluator's one-theta point (Problem.point's values; the two-layer fast path
    where it applies: this descent is sequential, so its per-call cost is the whole cost).

    extend_to > steps: after each block of `steps` steps in which the loss fell at least tenfold,
    another block, up to extend_to steps in all (a descent that still converges goes on; one that
    crawls stops at the block's end: a deterministic rule, not a clock)."""
    point = evaluator(problem).point
    theta, eta = start.clone(), ctx.eta
    prev, stalled = None, 0
    limit, block_start = steps, None
    k = -1
    while True:
        k += 1
        if k >= limit:
            if not (limit < extend_to and prev is not None and prev[0] <= 0.1 * block_start):
                return limit
            limit, block_start = min(limit + steps, extend_to), prev[0]
        p = point(theta)
        ctx.advance(1)
        stalled = stalled + 1 if prev is not None and prev[0] - p.loss <= 1e-15 * p.loss else 0
        if stalled >= 100:
            return k   # converged to a critical point: more steps add nothing
        if prev is not None and p.loss > prev[0] * (1 + 1e-12):
            eta *= 0.5          # the step was too long for the local curvature: retake it
            theta = prev[1] - eta * prev[2]
            continue
        if region is not None and not region.contains(theta):
            return k
        records.add(source, float((theta - center).norm()), p.loss, p.rayleigh, theta, p.sample_max)
        if p.loss < max(ctx.noise, ctx.floor) or p.grad_sqnorm == 0.0:
            return k   # below the floor nothing more is needed (L only falls along the flow)
        if block_start is None:
            block_start = p.loss
        prev = (p.loss, theta, p.grad)
        theta = theta - eta * p.grad
