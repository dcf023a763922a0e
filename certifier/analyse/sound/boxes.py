"""Boxes of the branch and bound, evaluated on their own: here, or in workers (analyse/parallel.py).

    evaluate_boxes(problem, spec, boxes) -> list[BoxResult]

For each box (node id, lo, hi): dropped (outside the ball, or entirely below the floor), or the
best rule bound on R over the box and the split scores; then the float R at the box's center and
at one random corner (refutation candidates), each verified by interval evaluation when it is
below the bound to refute. The corner is drawn from a generator seeded by (seed, node id), so a
box's result depends on the box alone, never on which process evaluates it or what it evaluated
before. The caller (engine.bound_mu) takes the results in the order of the boxes: the smallest R
seen and the first refutation are then those of one process.

A worker builds the interval model and the rule context once per run (kept on its Problem).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ...compile.interval_model import IntervalModel
from ...compile.iv import mid_rad
from ...compile.rounding import elementary
from .region import SoundRegion, verify_point
from .rules import Bound, RuleContext, best_bound, subspace_facts


@dataclass(frozen=True)
class BoxSpec:
    """What a worker needs besides the problem: the region, the floor, the bound to refute."""

    kind: str                 # 'box' | 'ball'
    center: np.ndarray
    size: float               # radius or half-width
    floor: float
    refute: float             # a point refutes when R < refute is verified there
    seed: int
    functions: str            # elementary functions: 'margin' | 'arb' (compile/rounding.py)
    # an upper bound on L(theta0): a box with min L above it lies outside the sublevel set the flow
    # never leaves (docs/theory.md 10.5) and is dropped; inf: none
    ceiling: float = math.inf

    @property
    def key(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self.center, dtype=np.float64).tobytes())
        h.update(repr((self.kind, self.size, self.floor, self.refute, self.seed, self.functions,
                       self.ceiling)).encode())
        return h.hexdigest()


@dataclass
class BoxResult:
    status: str | None = None            # 'dropped', or None (the caller decides open/proven)
    note: str | None = None
    loss: tuple[float, float] | None = None
    sample_max: float | None = None      # max over the box of the per-sample losses (an upper bound)
    bound: Bound | None = None
    score: np.ndarray | None = None
    # candidates above the floor, in order: (source, theta, float R, inside the region, verified refutation)
    points: list = field(default_factory=list)
    evaluations: int = 1


class Session:
    """The interval model, rule context and region of one run, for one spec."""

    def __init__(self, problem, spec: BoxSpec, model: IntervalModel | None = None, ctx: RuleContext | None = None):
        from types import SimpleNamespace

        self.problem = problem
        self.spec = spec
        self.model = model if model is not None else IntervalModel(problem.checked)
        self.ctx = ctx if ctx is not None else RuleContext(self.model, spec.floor, subspace_facts(self.model),
                                                           dict(self.model.blocks))
        self.reg = SoundRegion(SimpleNamespace(kind=spec.kind, center=spec.center, radius=spec.size,
                                           halfwidth=spec.size))


def session(problem, spec: BoxSpec) -> Session:
    """The worker's session for this spec (built once per run and process)."""
    cache = getattr(problem, "_sound_sessions", None)
    if cache is None:
        cache = problem._sound_sessions = {}
    key = spec.key
    if key not in cache:
        cache.clear()
        cache[key] = Session(problem, spec)
    return cache[key]


def evaluate_boxes(problem, spec: BoxSpec, boxes: list, advance=None, ses: Session | None = None) -> list[BoxResult]:
    """boxes: [(node id, lo, hi)]. advance (local runs) is called with 0 after each box, where
    the run's deadline is checked."""
    ses = ses if ses is not None else session(problem, spec)
    out = []
    with elementary(spec.functions):
        for nid, lo, hi in boxes:
            out.append(_evaluate(ses, int(nid), np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)))
            if advance is not None:
                advance(0)
    return out


def _evaluate(ses: Session, nid: int, lo: np.ndarray, hi: np.ndarray) -> BoxResult:
    spec, reg, model = ses.spec, ses.reg, ses.model
    if reg.outside(lo, hi):
        return BoxResult("dropped", "outside the ball")
    enc = model.over_box(lo, hi)
    res = BoxResult(loss=(float(enc.L.lo), float(enc.L.hi)),
                    sample_max=float(np.max(enc.per_sample.hi)) if enc.per_sample is not None else None)
    if float(enc.L.hi) < spec.floor:
        res.status, res.note = "dropped", "entirely below the floor"
        return res
    if float(enc.L.lo) > spec.ceiling:
        res.status, res.note = "dropped", "entirely above the initial loss"
        return res
    res.bound, _ = best_bound(ses.ctx, enc)
    Jm, Jr = mid_rad(enc.J if enc.J is not None else enc.split_rows)   # population: |H|, |grad L| rows
    col = np.sum(np.abs(Jm), axis=0) + np.sum(Jr, axis=0)
    res.score = (hi - lo) * np.where(np.isfinite(col), col, 1e300)
    # exact-as-float R at the center and at one random corner (refutation candidates)
    rng = np.random.default_rng([spec.seed, nid])
    corner = np.where(rng.random(lo.size) < 0.5, lo, hi)
    for source, theta in (("box center", np.asarray(enc.center, dtype=np.float64)),
                          ("box corner", reg.project(corner))):
        p = ses.problem.point(torch.as_tensor(theta, dtype=torch.float64))
        if not p.loss >= spec.floor:
            continue
        verdict = None
        if p.rayleigh < spec.refute:
            verdict = verify_point(model, reg, theta, spec.floor, spec.refute, ses.ctx.subspace, spec.ceiling)
        res.points.append((source, np.array(theta, dtype=np.float64), float(p.rayleigh),
                           reg.contains(theta), verdict))
    return res
