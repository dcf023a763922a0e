"""The one-trajectory search of the sampled engine (gradient descent from a start, recording R
along it) and the context every search shares. The batched searches are analyse/units.py; the
one-point-at-a-time references they replace are bench/serial.py."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..compile.batched import evaluator
from ..compile.kernel import jacobian
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


# --- the descent from theta0 by the linearised flow, with step control ---------------------------
FLOW_TOL = 0.05        # accepted when the residual's change differs from the tangent model's by <= 5 %
FLOW_RATIO = 0.5       # a step lowers L at most twofold: >= 3 recorded points per decade of loss
FLOW_STEPS = 4000      # accepted and rejected steps in all
FLOW_JACOBIAN = 2**29  # bytes of J above which the descent stays plain gradient descent


def flow_applicable(problem: Problem) -> bool:
    """The linearised-flow integrator needs least squares on finite data (the flow of the residual
    is r' = -(2/n) J J^T r) and a Jacobian J [n k, m] that fits in FLOW_JACOBIAN bytes."""
    return (problem.population is None and problem.loss_def.name == "least_squares"
            and problem.n * problem.k * problem.m * 8 <= FLOW_JACOBIAN)


def flow_path(problem: Problem, start: torch.Tensor, ctx: SearchContext, records: Records,
              max_steps: int = FLOW_STEPS, source: str = "trajectory", times: list | None = None,
              end: list | None = None) -> int:
    """Gradient flow from `start` by exponential steps of its linearisation, recording R at each
    accepted point (docs/theory.md, section 6). Returns the steps taken (accepted and rejected).

    At theta with J J^T = U diag(lam) U^T and residual r, the tangent model's flow over a time h
    is exact: r(h) = r - U (1 - exp(-(2/n) lam h)) U^T r and
    theta(h) = theta - J^T U ((1 - exp(-(2/n) lam h)) / lam) U^T r.
    Unlike gradient descent it has no stability limit h < 2/beta, so the slow eigendirections,
    where the late flow lives, are crossed in a few steps. The step h is accepted when the true
    residual at theta(h) differs from r(h) by at most FLOW_TOL of the change r - r(h) (the model's
    curvature over the step is small) and L fell; then h doubles, else it halves (a step counts
    when the model is evaluated at its end). A step lowers L
    at most by FLOW_RATIO, so each decade of loss holds several recorded points. `times`, when
    given, receives the flow time of each recorded point; `end`, when given, the last accepted
    theta and its loss."""
    state = {}
    taken = _flow(problem, start, ctx, records, max_steps, source, times if times is not None else [], state)
    if end is not None:
        end[:] = [state["theta"], state["loss"]]
    return taken


def _flow(problem, start, ctx, records, max_steps, source, times, state):
    point = evaluator(problem).point
    fast = evaluator(problem).two_layer() if problem.k == 1 else None
    theta = start.detach().clone()
    c = 2.0 / problem.n
    h = ctx.eta
    p = point(theta)
    r = (problem.outputs(theta).detach() - problem.y).reshape(-1)
    taken, stalled, J, t = 0, 0, None, 0.0
    state.update(theta=theta, loss=p.loss)
    records.add(source, float((theta - start).norm()), p.loss, p.rayleigh, theta, p.sample_max)
    times.append(t)
    while taken < max_steps and stalled < 10:
        if p.loss < max(ctx.noise, ctx.floor) or p.grad_sqnorm == 0.0:
            return taken
        if J is None:
            # J J^T = U diag(lam) U^T (n k x n k: far cheaper than an SVD of J when m >> n k).
            # J is kept while the steps it predicts are accepted: the check below measures the
            # prediction of the J it used, so a J gone stale is caught and recomputed.
            if fast is not None:
                # J J^T and J^T v from the hidden activations: no n x m array (J and J^T U were
                # 2 x 277 MB at n = 256, m = 135 168, docs/performance.md)
                jt, _ = fast.kernel_products(theta, problem.x)
                lam, U = torch.linalg.eigh(fast.gram(theta, problem.x))
                J, JtU = True, None
            else:
                J = jacobian(problem, theta)
                lam, U = torch.linalg.eigh(J @ J.T)
                JtU = J.T @ U
            lam = lam.clamp(min=0.0)
            fresh = True
        ur = U.T @ r
        L_now = p.loss
        while taken < max_steps:
            decay = -torch.expm1(-c * lam * h)            # 1 - exp(-(2/n) lam h), in [0, 1]
            change = U @ (decay * ur)                     # r - r(h)
            predicted = r - change
            if float(predicted @ predicted) < FLOW_RATIO * float(r @ r) and h > ctx.eta:
                h *= 0.5                                  # L would fall more than FLOW_RATIO in one step
                continue
            taken += 1
            ctx.advance(1)
            # (1 - exp(-c lam h)) / lam, which tends to c h as lam -> 0
            tiny = lam <= 1e-300
            coef = torch.where(tiny, torch.full_like(lam, c * h), decay / torch.where(tiny, 1.0, lam))
            new = theta - (jt(U @ (coef * ur)) if JtU is None else JtU @ (coef * ur))
            r_new = (problem.outputs(new).detach() - problem.y).reshape(-1)
            err = float((r_new - predicted).norm())
            q = point(new)
            ok = q.loss <= L_now and err <= FLOW_TOL * float(change.norm())
            if not ok and not fresh:
                J = None          # the kept J predicted badly: retake the step with J at theta
                break
            if ok or h <= ctx.eta:      # at the gradient-descent step the model is trusted as descent is
                if not q.loss <= L_now:
                    return taken       # no step lowers L: a critical point, or rounding
                stalled = stalled + 1 if L_now - q.loss <= 1e-15 * L_now else 0
                theta, p, r, fresh, t = new, q, r_new, False, t + h
                state.update(theta=theta, loss=p.loss)
                records.add(source, float((theta - start).norm()), p.loss, p.rayleigh, theta, p.sample_max)
                times.append(t)
                if ok:
                    h *= 2.0
                break
            h *= 0.5
    return taken
