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

Thetas of a block. Records keeps the theta of a record only while it is among the 128 lowest
values or among the records added since its last pruning (it prunes to the 128 lowest once it
holds more than 256, so at most 128 records are added after the last pruning). After every
pruning it therefore holds the 128 lowest records ever added, and a record kept at any later time
is either one of those (then fewer than 128 lower values came before the last pruning and at most
128 after it: fewer than 256 strictly lower values in all) or was added after the last pruning
(then it is among the last 256 records). Both hold within the record's own block too, so a block
keeps the theta of a row only while the row has fewer than KEEP_LOWEST = 256 strictly lower values
in the block or is among its last KEEP_RECENT = 256 rows, and drops the others as it goes (bounded
memory, small transfers from workers); flush adds such rows with an empty placeholder theta and
checks that no placeholder is among the kept thetas (tests/test_performance.py checks the rule
against Records on random sequences).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import torch

from ..compile.batched import evaluator
from .records import Records

KEEP_LOWEST = 256     # Records keeps the 128 lowest thetas when it prunes, and at most 128 are added after
KEEP_RECENT = 256     # its last pruning (it prunes once it holds more than 256)
_PLACEHOLDER = torch.empty(0)


def _noop(n: float = 1) -> None:
    pass


@dataclass
class Block:
    """The records of one search, in order: (source, distance, loss, value, theta or None,
    sample_max). Same add() as Records."""

    rows: list = field(default_factory=list)
    evaluations: int = 0
    _sorted: list = field(default_factory=list)    # values of the counted rows, sorted
    _counted: list = field(default_factory=list)   # row indices that Records will count, in order

    def add(self, source: str, distance: float, loss: float, value: float, theta: torch.Tensor | None = None,
            sample_max: float = math.nan) -> None:
        keep = theta.detach().clone() if theta is not None else None
        self.rows.append((source, distance, loss, value, keep, sample_max))
        if math.isfinite(value) and math.isfinite(loss):     # the rows Records.add keeps
            self._counted.append(len(self.rows) - 1)
            bisect.insort(self._sorted, value)
            if len(self._counted) % KEEP_RECENT == 0:
                self._slim()

    def _slim(self) -> None:
        """Drop the thetas that Records can never keep (module docstring)."""
        recent = set(self._counted[-KEEP_RECENT:])
        for i in self._counted:
            row = self.rows[i]
            if row[4] is None or i in recent:
                continue
            if bisect.bisect_left(self._sorted, row[3]) >= KEEP_LOWEST:   # >= 256 strictly lower values
                self.rows[i] = row[:4] + (None,) + row[5:]

    def finish(self) -> "Block":
        self._slim()
        self._sorted, self._counted = [], []
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

def trajectories(problem, starts: torch.Tensor, center: torch.Tensor, region, steps: int, eta0: float,
                 noise: float, floor: float, advance=_noop, source: str = "trajectory") -> list[Block]:
    """serial.trajectory from every start, advanced together (one batched evaluation per step)."""
    ev = evaluator(problem)
    count = len(starts)
    blocks = [Block() for _ in range(count)]
    theta = [s.clone() for s in starts]
    eta = [eta0] * count
    prev: list = [None] * count
    stalled = [0] * count
    running = list(range(count))
    for _k in range(steps):
        if not running:
            break
        points = ev.points(torch.stack([theta[j] for j in running]))
        advance(len(running))
        still = []
        for j, p in zip(running, points):
            blocks[j].evaluations += 1
            stalled[j] = stalled[j] + 1 if prev[j] is not None and prev[j][0] - p.loss <= 1e-15 * p.loss else 0
            if stalled[j] >= 100:
                continue       # converged to a critical point
            if prev[j] is not None and p.loss > prev[j][0] * (1 + 1e-12):
                eta[j] *= 0.5  # the step was too long: retake it
                theta[j] = prev[j][1] - eta[j] * prev[j][2]
                still.append(j)
                continue
            if region is not None and not region.contains(theta[j]):
                continue
            blocks[j].add(source, float((theta[j] - center).norm()), p.loss, p.rayleigh, theta[j], p.sample_max)
            if p.loss < max(noise, floor) or p.grad_sqnorm == 0.0:
                continue
            prev[j] = (p.loss, theta[j], p.grad)
            theta[j] = theta[j] - eta[j] * p.grad
            still.append(j)
        running = still
    return [b.finish() for b in blocks]


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
    started: bool = False
    done: bool = False


def adversarial(problem, starts: torch.Tensor, region, iterations: int, noise: float, floor: float,
                advance=_noop) -> list[Block]:
    """serial.adversarial from every start, advanced together: each round evaluates, for every
    descent still running, its current candidate (or its start) in one batch."""
    ev = evaluator(problem)
    scale = region.inner_radius
    lowest = max(floor, noise)
    runs = [_Descent(region.project(s.clone())) for s in starts]
    blocks = [Block() for _ in runs]

    def begin(r: _Descent, block: Block) -> None:
        """The top of iteration r.i of serial.adversarial: record, stop, or propose a step."""
        if r.i >= iterations:
            r.done = True
            return
        advance(1)
        block.evaluations += 1
        block.add("adversarial", region.distance(r.theta), r.L, math.exp(r.log_r), r.theta, r.smax)
        norm = float(r.d.norm())
        if not math.isfinite(norm) or norm == 0.0 or r.L < lowest:
            r.done = True
            return
        r.norm, r.tries = norm, 0
        r.step = 0.05 * scale * (0.01 ** (r.i / max(1, iterations - 1)))
        r.candidate = region.project(r.theta - r.step * r.d / norm)

    while True:
        active = [j for j, r in enumerate(runs) if not r.done]
        if not active:
            break
        pending = [runs[j].candidate if runs[j].started else runs[j].theta for j in active]
        values = ev.log_rayleigh_and_grad(torch.stack(pending))
        for j, (cL, c_log_r, c_d, c_smax) in zip(active, values):
            r = runs[j]
            if not r.started:
                r.started = True
                r.L, r.log_r, r.d, r.smax = cL, c_log_r, c_d, c_smax
                begin(r, blocks[j])
            elif cL >= lowest:
                r.theta, r.L, r.log_r, r.d, r.smax = r.candidate, cL, c_log_r, c_d, c_smax
                r.i += 1
                begin(r, blocks[j])
            else:
                r.step *= 0.5
                r.tries += 1
                if r.tries >= 8:
                    r.done = True
                else:
                    r.candidate = region.project(r.theta - r.step * r.d / r.norm)
    return [b.finish() for b in blocks]


def random_points(problem, thetas: torch.Tensor, region, advance=_noop) -> list[Block]:
    block = Block()
    if len(thetas):
        for theta, p in zip(thetas, evaluator(problem).points(thetas)):
            block.evaluations += 1
            block.add("random", region.distance(theta), p.loss, p.rayleigh, theta, p.sample_max)
        advance(len(thetas))
    return [block.finish()]
