"""The witness: real gradient descent from theta0, checked against the bound at every step."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

import torch

from ..compile.batched import evaluator
from ..compile.problem import Problem
from ..result import Witness

# The witness steps by the two-layer fast path where it applies (2.5x faster on width 1024); to stay
# an independent computation, every CROSS_CHECK-th step and a violation are recomputed by
# Problem.point (the model as written, through autograd), and a disagreement beyond CROSS_TOL
# relative (or the rounding allowance below) reruns the whole descent by Problem.point.
CROSS_CHECK = 1000
CROSS_TOL = 1e-9
# The two paths round differently: their L and grad L differ by a few ulps of L(theta0) and
# |grad L(theta0)| (the residuals' rounding, carried along the descent), which relative to a
# small L or gradient is large. Measured on the two-layer grid (n 16..256, m 8448..540672, to
# L ~ 1e-16): at most 36 u L(theta0) and 121 u |grad L(theta0)|; allowed: 4 sqrt(m) u (from 368 u
# at m = 8448), growing with the sums' length as the measured differences do. At theta0 (the
# first check) it is about 1e-13 relative: an error of the fast path that shows there is caught.
CROSS_ULPS = 4.0


class _Disagree(Exception):
    pass


def _stepper(problem: Problem, fast: bool, region=None):
    """point(theta) -> L and grad L for the descent, and point.start: theta0 in the layout the
    descent runs in. On the two-layer fast path with W @ x and a region that is a ball around
    theta0 (or none), that is TwoLayer.transposed()'s (W's block holds W^T: its products are
    faster, docs/performance.md, "The witness in W's transposed layout"); distances, norms and so
    the whole descent are the same in it. Problem.point's cross-checks go through outer()."""
    if not fast:
        return _plain(problem)
    ev = evaluator(problem)
    if not ev.path.startswith("two-layer"):     # elsewhere ev.point is Problem.point itself
        return _plain(problem)
    inner = ev.transposed() if region is None or _ball_at(region, problem.theta0) else None
    step = inner.gradient if inner is not None else ev.gradient
    to_outer = inner.outer if inner is not None else (lambda t: t)
    to_inner = inner.inner if inner is not None else (lambda t: t)
    count, first = [0], []
    slack = CROSS_ULPS * math.sqrt(problem.m) * 2.0**-53

    def point(theta, check=False):
        p = step(theta)       # L and grad L: the descent needs no R
        count[0] += 1
        if check or count[0] % CROSS_CHECK == 1:
            q = problem.point(to_outer(theta))
            q = replace(q, grad=to_inner(q.grad))
            gs = float(q.grad.norm())
            if not first:
                first[:] = [abs(q.loss), gs]      # L and |grad L| at theta0
            if not (abs(p.loss - q.loss) <= max(CROSS_TOL * abs(q.loss), slack * first[0])
                    and float((p.grad - q.grad).norm()) <= max(1e-7 * gs, slack * first[1])):
                raise _Disagree
            return q
        return p
    point.cross_checked = True
    point.start = to_inner(problem.theta0)
    return point


def _plain(problem: Problem):
    def point(theta):
        return problem.point(theta)
    point.start = problem.theta0
    return point


def _ball_at(region, theta0) -> bool:
    return getattr(region, "kind", None) == "ball" and region.center is theta0


def _inside(region, theta, theta0, dist: float) -> bool:
    """region.contains(theta), from the distance to theta0 already taken when the region is a ball
    around theta0 (the usual `ball(center=init)`): one pass over theta fewer a step."""
    if _ball_at(region, theta0):
        return dist <= region.radius * (1 + 1e-12)
    return region.contains(theta)


def step_count(horizon: float, eta: float, cap: int) -> int:
    """min(cap, ceil(horizon / eta)), also when the ratio overflows to infinity (or is NaN)."""
    ratio = horizon / eta
    return int(math.ceil(ratio)) if ratio < cap else cap


def run_witness(problem: Problem, eta: float, horizon: float, bound: Callable[[float], float] | None,
                noise: float, region, max_steps: int, advance=lambda n=1: None,
                tolerance: float = 1e-9, floor: float = 0.0, restart: bool = True) -> Witness:
    """Gradient descent theta_{k+1} = theta_k - eta grad L(theta_k), compared at t = k eta with
    the flow bound while the bound is above the rounding-noise level `noise`. Restarts with half
    the step if the loss ever increases (the step was too long to follow the flow).

    It stops at the horizon, at the step budget, when the bound falls below the noise level,
    when the loss is at or below the floor (`settled_at`: the descent's loss never increases and
    the bound never falls below the floor, so nothing is left to check), or, when there is no
    bound, once the loss has stalled (no relative decrease above 1e-15 in 100 steps). Leaving the
    region counts only while the loss is above the floor.
    With restart=False (a step size given by the spec) the step is never changed."""
    try:
        return _run(problem, eta, horizon, bound, noise, region, max_steps, advance, tolerance, floor,
                    restart, fast=True)
    except _Disagree:
        return _run(problem, eta, horizon, bound, noise, region, max_steps, advance, tolerance, floor,
                    restart, fast=False)


def _run(problem, eta, horizon, bound, noise, region, max_steps, advance, tolerance, floor, restart, fast):
    point = _stepper(problem, fast, region)
    for _attempt in range(4 if restart else 0):
        w = _descend(problem, point, eta, horizon, bound, noise, region, max_steps, advance, tolerance, floor)
        if w is not None:
            return w
        eta *= 0.5
    return _descend(problem, point, eta, horizon, bound, noise, region, max_steps, advance, tolerance, floor,
                    strict=False)


def _descend(problem, point, eta, horizon, bound, noise, region, max_steps, advance, tolerance, floor,
             strict=True):
    theta0 = point.start          # theta0 in the layout the descent runs in (_stepper)
    theta = theta0.clone()
    steps = step_count(horizon, eta, max_steps)
    keep = set(int(round(v)) for v in torch.logspace(0, math.log10(max(steps, 1)), 200).tolist()) | {0, steps}
    curve, path, max_dist = [], 0.0, 0.0
    checked_until, violation, left_at, prev, settled_at = 0.0, None, None, math.inf, None
    stalled = 0
    k = 0
    for k in range(steps + 1):
        t = k * eta
        p = point(theta)
        advance(1)
        if strict and p.loss > prev * (1 + 1e-12):
            return None
        stalled = stalled + 1 if prev - p.loss <= 1e-15 * p.loss else 0
        prev = p.loss
        dist = float(torch.dist(theta, theta0))
        max_dist = max(max_dist, dist)
        if left_at is None and region is not None and p.loss > floor \
                and not _inside(region, theta, problem.theta0, dist):
            left_at = t
        if k in keep:
            curve.append([t, p.loss])
        if bound is not None:
            b = bound(t)
            if b >= noise and p.loss >= noise:
                checked_until = t
                if p.loss > b * (1 + tolerance) and getattr(point, "cross_checked", False):
                    p = point(theta, check=True)      # a violation is reported with Problem.point's value
                if p.loss > b * (1 + tolerance):
                    violation = {"t": t, "loss": p.loss, "bound": b}
                    if not curve or curve[-1][0] != t:
                        curve.append([t, p.loss])
                    break
            elif b < noise:
                if not curve or curve[-1][0] != t:
                    curve.append([t, p.loss])
                break
        # strict: the loss never increased, so once at the floor it stays below the bound (>= floor)
        settled = bound is not None and floor > 0 and p.loss <= floor and (strict or bound(t) <= floor)
        if settled:
            settled_at = t
        # a stall ends the run only when there is no bound left to compare with
        if p.loss < noise or settled or (stalled >= 100 and (bound is None or bound(t) < noise)):
            if not curve or curve[-1][0] != t:
                curve.append([t, p.loss])
            break
        # |eta g| from g . g, which the point already holds (one pass over theta fewer a step)
        path += eta * math.sqrt(p.grad_sqnorm)
        theta = torch.add(theta, p.grad, alpha=-eta)      # theta - eta g in one pass
    return Witness(method="gradient descent", step=eta, steps=k, time=k * eta, curve=curve,
                   max_distance=max_dist, path_length=path, checked_until=checked_until,
                   violation=violation, left_region_at=left_at, settled_at=settled_at, horizon=horizon)
