"""The sampled engine's sources, batched: units of work that evaluate many points at once.

Each unit is a function unit(problem, ..., advance) -> list[Block] that runs one or more of the
searches of bench/serial.py *together*: the trajectories of a group of starts advance as one batch
(one batched evaluation per step for all that are still running), so do the adversarial
descents, and random and tangent-kernel points are evaluated in batches
(compile/batched.py). The logic of each search is that of bench/serial.py (and analyse/trajectory.py), step for step.

A unit does not touch the shared Records: it returns one Block per search, the records in the
order bench/serial.py would have added them, and the caller adds the blocks in order (flush). So a
unit can run in this process or in a worker (analyse/parallel.py) with the same result. (Which
searches share a unit is decided by the problem alone, parallel.rows_per_unit: the values of a
row can differ in the last bits with the size of the batch it is evaluated in.)

Thetas of a unit. Records keeps the theta of a record only while it is among the K lowest values
or among the records added since its last pruning (K = records.theta_keep(m); it prunes to the K
lowest once it holds more than 2K, so at most K records are added after the last pruning). Only
records at or below its ceiling L(theta0), with finite values, are kept and counted; the units
count the same rows (they are given the ceiling). After
every pruning it therefore holds the K lowest records ever added, and a record kept at any later
time is either one of those (then fewer than K lower values came before the last pruning and at
most K after it: fewer than 2K strictly lower values in all) or was added after the last pruning
(then it is among the last 2K records). The blocks of one unit are added one after the other, so
both hold within the unit's rows taken as one sequence: a unit keeps the theta of a row only while
the row has fewer than 2K strictly lower values among the unit's rows or is among its last 2K rows,
and drops the others as it goes (every K rows; at most about 5K thetas held, bounded in bytes by
theta_keep, small transfers from workers); flush adds such rows with an empty placeholder theta
and checks that no placeholder is among the kept thetas (tests/test_performance.py checks the rule
against Records on random sequences).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field, replace

import torch

from ..compile.batched import evaluator
from .records import MAX_KEEP, Records, theta_keep

_PLACEHOLDER = torch.empty(0)


def _noop(n: float = 1) -> None:
    pass


class _Group:
    """The blocks of one unit, whose rows Records adds as one sequence (module docstring)."""

    def __init__(self, keep: int, ceiling: float = math.inf):
        self.keep = keep
        self.top = ceiling * (1 + 1e-12)   # Records keeps no theta above its ceiling, L(theta0)
        self.blocks: list[Block] = []
        self.values: list[float] = []   # values of the counted rows of every block, sorted
        self.counted = 0

    def note(self, value: float) -> None:
        bisect.insort(self.values, value)
        self.counted += 1
        if self.counted % self.keep == 0:
            self.slim()

    def slim(self) -> None:
        """Drop the thetas that Records can never keep."""
        bound = 2 * self.keep
        after = 0                        # counted rows of the later blocks
        for block in reversed(self.blocks):
            total = block.counted
            held = []
            for position, i in block.held:
                row = block.rows[i]
                if (total - 1 - position + after >= bound
                        and bisect.bisect_left(self.values, row[3]) >= bound):
                    block.rows[i] = row[:4] + (None,) + row[5:]
                else:
                    held.append((position, i))
            block.held = held
            after += total


def group(count: int, keep: int = MAX_KEEP, ceiling: float = math.inf) -> list["Block"]:
    """`count` blocks of one unit, added to Records in this order (keep: records.theta_keep;
    ceiling: Records' ceiling, above which it keeps no theta and counts none)."""
    g = _Group(keep, ceiling)
    g.blocks = [Block(_group=g) for _ in range(count)]
    return g.blocks


@dataclass
class Block:
    """The records of one search, in order: (source, distance, loss, value, theta or None,
    sample_max). Same add() as Records. A Block made alone is a unit of its own with Records'
    default keep; group() makes the blocks of one unit."""

    rows: list = field(default_factory=list)
    evaluations: int = 0
    counted: int = 0                                   # rows Records will count (finite values)
    held: list = field(default_factory=list)           # (counted position, row index) holding a theta
    _group: _Group | None = None

    def __post_init__(self):
        if self._group is None:
            self._group = _Group(MAX_KEEP)
            self._group.blocks = [self]

    def add(self, source: str, distance: float, loss: float, value: float, theta: torch.Tensor | None = None,
            sample_max: float = math.nan, owned: bool = False) -> None:
        """owned: theta is a tensor of its own that the caller never writes again (a search's
        iterate), kept as it is; else a copy is kept (a row of a batch would keep the batch)."""
        # the rows whose theta Records.add keeps (and counts towards its pruning)
        counted = math.isfinite(value) and math.isfinite(loss) and loss <= self._group.top
        keep = None
        if theta is not None and counted:
            keep = theta.detach() if owned else theta.detach().clone()
        self.rows.append((source, distance, loss, value, keep, sample_max))
        if counted:
            if keep is not None:
                self.held.append((self.counted, len(self.rows) - 1))
            self.counted += 1
            self._group.note(value)

    def finish(self, outer=None) -> "Block":
        """outer: the kept thetas are in a descent's own layout (_layout): taken back by it."""
        if self._group is not None:
            self._group.slim()
        if outer is not None:
            self.rows = [row if row[4] is None else row[:4] + (outer(row[4]),) + row[5:] for row in self.rows]
        self._group, self.held = None, []     # nothing but the rows travels back from a worker
        return self


def flush(blocks: list[Block], records: Records) -> None:
    """Add the blocks' rows to records, in order."""
    for block in blocks:
        for source, distance, loss, value, theta, sample_max in block.rows:
            records.add(source, distance, loss, value, _PLACEHOLDER if theta is None else theta, sample_max)
    for i, theta in records.thetas.items():
        if theta.numel() == 0:
            raise RuntimeError("internal: a theta dropped by a block is kept by Records "
                               "(analyse/units.py assumes Records' pruning policy)")


# --- units -------------------------------------------------------------------------------------

def _layout(problem, region, center=None):
    """(evaluator, region, center, inner, outer) for a descent of many steps: on the two-layer fast
    path with W @ x, the evaluator, region and center in W's transposed layout (W's block holds
    W^T: its products are faster, docs/performance.md, "The witness in W's transposed layout"),
    with inner(theta) taking a start there and outer(theta) a kept iterate back; elsewhere the
    problem's own layout (inner, outer None). A region is a ball or a box around its center, the
    same set in either layout (a distance, a norm and a coordinate's bound do not depend on the
    order of the coordinates)."""
    ev = evaluator(problem)
    t = ev.transposed()
    if t is None:
        return ev, region, center, None, None
    moved = replace(region, center=t.inner(region.center)) if region is not None else None
    if center is not None:
        center = moved.center if region is not None and center is region.center else t.inner(center)
    return t, moved, center, t.inner, t.outer


def _stack(rows: list[torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
    """The rows stacked into the first len(rows) rows of `batch`, a buffer the unit reuses every
    step: the evaluator only reads it (what it returns never views it), and a fresh [B, m] tensor a
    step was fresh pages a step."""
    return torch.stack(rows, out=batch[:len(rows)])


def trajectories(problem, starts: torch.Tensor, center: torch.Tensor, region, steps: int, eta0: float,
                 noise: float, floor: float, ceiling: float = math.inf, advance=_noop,
                 source: str = "trajectory") -> list[Block]:
    """serial.trajectory from every start, advanced together (one batched evaluation per step).
    Each iterate is a new tensor, never written again: its record keeps it without a copy, and
    one pass over it gives both its distance and whether it is in the region (distances are from
    the region's center, which is `center` for every caller; from `center` where region is None)."""
    ev, region, center, inner, outer = _layout(problem, region, center)
    count = len(starts)
    blocks = group(count, theta_keep(problem.m), ceiling)
    theta = [inner(s) if inner is not None else s.clone() for s in starts]
    batch = torch.empty_like(starts)     # each step's rows, stacked into one buffer (_stack)
    eta = [eta0] * count
    prev: list = [None] * count
    stalled = [0] * count
    running = list(range(count))
    for _k in range(steps):
        if not running:
            break
        points = ev.points(_stack([theta[j] for j in running], batch))
        advance(len(running))
        still = []
        for j, p in zip(running, points):
            blocks[j].evaluations += 1
            stalled[j] = stalled[j] + 1 if prev[j] is not None and prev[j][0] - p.loss <= 1e-15 * p.loss else 0
            if stalled[j] >= 100:
                continue       # converged to a critical point
            if prev[j] is not None and p.loss > prev[j][0] * (1 + 1e-12):
                eta[j] *= 0.5  # the step was too long: retake it
                theta[j] = torch.add(prev[j][1], prev[j][2], alpha=-eta[j])
                still.append(j)
                continue
            if region is not None:
                distance, inside = region.measure(theta[j])
                if not inside:
                    continue
            else:
                distance = float((theta[j] - center).norm())
            blocks[j].add(source, distance, p.loss, p.rayleigh, theta[j], p.sample_max, owned=True)
            if p.loss < max(noise, floor) or p.grad_sqnorm == 0.0:
                continue
            prev[j] = (p.loss, theta[j], p.grad)
            theta[j] = torch.add(theta[j], p.grad, alpha=-eta[j])    # theta - eta g, one pass
            still.append(j)
        running = still
    return [b.finish(outer) for b in blocks]


@dataclass
class _Descent:
    theta: torch.Tensor
    L: float = 0.0
    log_r: float = 0.0
    d: torch.Tensor | None = None
    smax: float = math.nan
    i: int = 0
    step: float = 0.0
    tries: int = 0
    norm: float = 0.0
    candidate: torch.Tensor | None = None
    distance: float = 0.0          # of theta from the region's center
    candidate_distance: float = 0.0
    started: bool = False
    done: bool = False


def adversarial(problem, starts: torch.Tensor, region, iterations: int, noise: float, floor: float,
                ceiling: float = math.inf, advance=_noop) -> list[Block]:
    """serial.adversarial from every start, advanced together: each round evaluates, for every
    descent still running, its current candidate (or its start) in one batch. A candidate is a
    new tensor, measured as it is projected, and kept by its record without a copy."""
    ev, region, _, inner, outer = _layout(problem, region)
    scale = region.inner_radius
    lowest = max(floor, noise)
    batch = torch.empty_like(starts)     # each round's rows, stacked into one buffer (_stack)
    runs = []
    for s in starts:
        theta, distance = region.project_measured(inner(s) if inner is not None else s.clone())
        runs.append(_Descent(theta, distance=distance))
    blocks = group(len(runs), theta_keep(problem.m), ceiling)

    def begin(r: _Descent, block: Block) -> None:
        """The top of iteration r.i of serial.adversarial: record, stop, or propose a step."""
        if r.i >= iterations:
            r.done = True
            return
        advance(1)
        block.evaluations += 1
        block.add("adversarial", r.distance, r.L, math.exp(r.log_r), r.theta, r.smax, owned=True)
        norm = float(r.d.norm())
        if not math.isfinite(norm) or norm == 0.0 or r.L < lowest:
            r.done = True
            return
        r.norm, r.tries = norm, 0
        r.step = 0.05 * scale * (0.01 ** (r.i / max(1, iterations - 1)))
        r.candidate, r.candidate_distance = region.project_measured(torch.add(r.theta, r.d, alpha=-r.step / norm))

    while True:
        active = [j for j, r in enumerate(runs) if not r.done]
        if not active:
            break
        pending = [runs[j].candidate if runs[j].started else runs[j].theta for j in active]
        values = ev.log_rayleigh_and_grad(_stack(pending, batch))
        for j, (cL, c_log_r, c_d, c_smax) in zip(active, values):
            r = runs[j]
            if not r.started:
                r.started = True
                r.L, r.log_r, r.d, r.smax = cL, c_log_r, c_d, c_smax
                begin(r, blocks[j])
            elif cL >= lowest:
                r.theta, r.L, r.log_r, r.d, r.smax = r.candidate, cL, c_log_r, c_d, c_smax
                r.distance = r.candidate_distance
                r.i += 1
                begin(r, blocks[j])
            else:
                r.step *= 0.5
                r.tries += 1
                if r.tries >= 8:
                    r.done = True
                else:
                    r.candidate, r.candidate_distance = region.project_measured(
                        torch.add(r.theta, r.d, alpha=-r.step / r.norm))
    return [b.finish(outer) for b in blocks]


def random_points(problem, thetas: torch.Tensor, region, ceiling: float = math.inf, advance=_noop) -> list[Block]:
    (block,) = group(1, theta_keep(problem.m), ceiling)
    if len(thetas):
        for theta, p in zip(thetas, evaluator(problem).points(thetas)):
            block.evaluations += 1
            block.add("random", region.distance(theta), p.loss, p.rayleigh, theta, p.sample_max)
        advance(len(thetas))
    return [block.finish()]
