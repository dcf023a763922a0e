"""Search sources of the sampled engine. Each evaluates R (or lambda_min of K) at points of
the region and adds them to the records. docs/theory.md, section 6, says why each exists:
uniform points alone were 1000x too optimistic on a real network."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..compile.batched import evaluator
from ..compile.problem import Problem
from .records import Records


@dataclass
class Context:
    gen: torch.Generator
    eta: float          # gradient step for trajectories (about 0.5 / beta)
    noise: float        # losses below this are rounding noise; such points are not used
    advance: object     # progress callback
    floor: float = 0.0  # points below the floor do not count: adversarial descent stays above it
    executor: object = None  # where search_region's batched units run (analyse/parallel.py); None: here


def trajectory(problem: Problem, start: torch.Tensor, center: torch.Tensor, region, steps: int,
               ctx: Context, records: Records, source: str = "trajectory", extend_to: int = 0) -> int:
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


def adversarial(problem: Problem, start: torch.Tensor, region, iterations: int, ctx: Context,
                records: Records) -> None:
    """Projected normalised descent on log R inside the region and above the floor: a step that
    lands below the floor is halved until it does not (R is only needed where L >= floor)."""
    theta = region.project(start.clone())
    scale = region.inner_radius
    lowest = max(ctx.floor, ctx.noise)
    L, log_r, d, smax = problem.log_rayleigh_and_grad(theta)
    for i in range(iterations):
        ctx.advance(1)
        records.add("adversarial", region.distance(theta), L, math.exp(log_r), theta, smax)
        norm = float(d.norm())
        if not math.isfinite(norm) or norm == 0.0 or L < lowest:
            return
        step = 0.05 * scale * (0.01 ** (i / max(1, iterations - 1)))
        for _ in range(8):
            candidate = region.project(theta - step * d / norm)
            cL, c_log_r, c_d, c_smax = problem.log_rayleigh_and_grad(candidate)
            if cL >= lowest:
                break
            step *= 0.5
        else:
            return
        theta, L, log_r, d, smax = candidate, cL, c_log_r, c_d, c_smax


def random_points(problem: Problem, region, count: int, ctx: Context, records: Records) -> None:
    for theta in region.sample(ctx.gen, count):
        p = problem.point(theta)
        ctx.advance(1)
        records.add("random", region.distance(theta), p.loss, p.rayleigh, theta, p.sample_max)


def kernel_points(problem: Problem, thetas: list[torch.Tensor], region, ctx: Context, records: Records) -> None:
    """lambda_min(K_theta) at the given points: a lower bound on R there, whatever the residual."""
    for theta in thetas:
        lam = problem.kernel_lambda_min(theta)
        ctx.advance(1)
        p = problem.point(theta)
        records.add("tangent-kernel", region.distance(theta), p.loss, lam, theta, p.sample_max)
