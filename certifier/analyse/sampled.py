"""The sampled engine: an ESTIMATE of mu = inf_U R, searched where the minimum lives.

Sources (docs/theory.md, section 6): (a) the descent from theta0 (the linearised flow with step
control for least squares, else gradient descent) and gradient-descent trajectories from random
points of U; (b) adversarial descent on R inside U; (c) random points of U. mu(r) is the minimum
of R over every record within distance r of theta0 whose loss is between the floor and L(theta0).
Where the data are finite and m >= n k, lambda_min of the tangent kernel at theta0 and at the
lowest points of the descent is recorded too: a lower bound on R in every direction, reported
beside mu, never used for it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..compile.kernel import lambda_min as kernel_lambda_min
from ..compile.problem import Problem
from . import parallel, units
from .parallel import LocalExecutor, rows_per_unit, split
from .records import Records, theta_keep
from .regions import chunk_rows
from .trajectory import FLOW_STEPS, SearchContext, flow_applicable, flow_path, trajectory
from .units import flush

SOURCE_TEXT = {
    "trajectory": "R along gradient descent from theta0 and from random points of U",
    "adversarial": "R along projected descent on R inside U",
    "random": "R at random points of U",
    "tangent-kernel": "lambda_min of the tangent kernel (a lower bound on R in every direction)",
}


# bytes of random points of a region held at once (their temporaries while drawn take about as
# much again, twice): the random points are drawn, evaluated and recorded chunk by chunk
POINTS_BYTES = 16 * 2**20


@dataclass
class Budget:
    samples: int

    @property
    def starts(self) -> int:
        return max(2, min(8, self.samples // 512))

    @property
    def trajectory_steps(self) -> int:
        return max(20, self.samples // (4 * self.starts))

    @property
    def adversarial_steps(self) -> int:
        return max(20, self.samples // (4 * self.starts))

    @property
    def random_points(self) -> int:
        return max(8, self.samples // 8)


def search_region(problem: Problem, region, records: Records, budget: Budget, ctx: SearchContext,
                  floor: float) -> None:
    """Add the records of one search of `region` (a Ball or Box around theta0).

    The searches of each source run as batches (analyse/units.py: trajectories advance together,
    points are evaluated in batches) in units of rows_per_unit searches, which ctx.executor runs
    here or in workers; the records are added in the order of bench/serial.py's one-at-a-time loops,
    whatever ran where."""
    center = region.center
    # the units drop thetas that a Records of this keep never holds (analyse/units.py)
    records.keep = min(records.keep, theta_keep(problem.m))
    ex = ctx.executor or LocalExecutor()
    per_unit = rows_per_unit(problem)

    def run(unit, thetas: torch.Tensor, *args) -> None:
        arglist = [(thetas[r.start:r.stop],) + args for r in split(len(thetas), per_unit)]
        flush((b for blocks in ex.map(problem, unit, arglist, ctx.advance) for b in blocks), records)

    starts = region.sample(ctx.gen, budget.starts)
    top = records.ceiling
    run(units.trajectories, starts, center, region, budget.trajectory_steps, ctx.eta, ctx.noise, ctx.floor, top)
    # adversarial descent from theta0, from the lowest points found so far, and from random points
    lowest = [records.thetas[i] for i in records.lowest(region.inner_radius, floor, budget.starts)
              if i in records.thetas]
    adv_starts = [center] + lowest[: budget.starts // 2]
    adv_starts += list(region.sample(ctx.gen, max(0, budget.starts - len(adv_starts))))
    run(units.adversarial, torch.stack(adv_starts), region, budget.adversarial_steps, ctx.noise, ctx.floor, top)
    # random points in chunks of whole units (the same units, points and records as one draw)
    rows = chunk_rows(problem.m, POINTS_BYTES // (8 * problem.m), per_unit)
    for chunk in region.sample_chunks(ctx.gen, budget.random_points, rows):
        run(units.random_points, chunk, region, top)


def parallel_work(budget: Budget, per_unit: int) -> list[tuple[int, int, int]]:
    """One search's sources as (units, batches per unit, rows per batch): the trajectories and
    the adversarial descents advance their starts together (one batch a step), the random points
    are one batch a unit."""
    starts = budget.starts
    rows = min(per_unit, starts)
    return [(math.ceil(starts / per_unit), budget.trajectory_steps, rows),
            (math.ceil(starts / per_unit), budget.adversarial_steps, rows),
            (math.ceil(budget.random_points / per_unit), 1, min(per_unit, budget.random_points))]


def search_executor(checked, problem: Problem, workers: int | None, scheduler: str | None, device: str,
                    threads: int):
    """Where search_region's units run for this run: a dask scheduler when one is given; N local
    processes when --workers N is asked for and the measured estimate says they pay for their
    start (parallel.plan); else this process. executor.note() says which, for the report."""
    if scheduler or not workers or workers <= 1:
        return parallel.make_executor(checked, workers, scheduler, device, threads)
    budget = Budget(int(checked.method.options.get("samples", 4096)))
    per_unit = rows_per_unit(problem)
    use, note = parallel.plan(problem, workers, threads, parallel_work(budget, per_unit), per_unit)
    if not use:
        return LocalExecutor(note)
    return parallel.PoolExecutor(checked, workers, device, threads, note=note)


def initial_trajectory(problem: Problem, records: Records, steps: int, ctx: SearchContext, extend_to: int = 0) -> None:
    """The unconstrained descent from theta0: the path the real flow takes (records [0, path));
    extend_to: see trajectory.trajectory."""
    if flow_applicable(problem):
        end: list = []
        taken = flow_path(problem, problem.theta0, ctx, records, end=end)
        if end[1] >= max(ctx.noise, ctx.floor) and taken >= FLOW_STEPS:
            # the linearised steps stayed short (a model with kinks, such as relu, whose J jumps):
            # go on by gradient descent from where they stopped
            trajectory(problem, end[0], problem.theta0, None, steps, ctx, records, extend_to=extend_to)
    else:
        trajectory(problem, problem.theta0, problem.theta0, None, steps, ctx, records, extend_to=extend_to)
    records.path = records.count()
    if problem.kernel_applicable():
        low = [records.thetas[i] for i in records.lowest(float("inf"), 0.0, 4) if i in records.thetas]
        for theta in [problem.theta0] + low:
            lam = kernel_lambda_min(problem, theta)
            p = problem.point(theta)
            records.add("tangent-kernel", float((theta - problem.theta0).norm()), p.loss, lam, theta,
                        p.sample_max)


def total_evaluations(problem: Problem, budget: Budget) -> int:
    return (budget.starts * (budget.trajectory_steps + budget.adversarial_steps) + budget.random_points
            + budget.starts)
