"""The sampled engine's searches one point at a time, as before batching: the reference that
certifier/analyse/units.py must reproduce step for step (tests/test_performance.py) and the
baseline bench/run.py times it against. docs/theory.md, section 6, says why each search exists."""
from __future__ import annotations

import math

import torch

from certifier.analyse.records import Records
from certifier.analyse.trajectory import SearchContext, trajectory
from certifier.compile.problem import Problem

__all__ = ["SearchContext", "adversarial", "random_points", "trajectory"]


def adversarial(problem: Problem, start: torch.Tensor, region, iterations: int, ctx: SearchContext,
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


def random_points(problem: Problem, region, count: int, ctx: SearchContext, records: Records) -> None:
    for theta in region.sample(ctx.gen, count):
        p = problem.point(theta)
        ctx.advance(1)
        records.add("random", region.distance(theta), p.loss, p.rayleigh, theta, p.sample_max)
