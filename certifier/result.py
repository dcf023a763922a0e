"""The one result model. Every renderer (text, json, ...) reads a Result and nothing else.

Field names mirror the JSON output documented in docs/output.md.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

from .diagnostics import Diagnostic

VERDICTS = ("certified", "refuted", "inconclusive", "error")
EXIT_CODES = {"certified": 0, "refuted": 1, "error": 2, "inconclusive": 3}


@dataclass
class MuSource:
    source: str          # 'trajectory' | 'adversarial' | 'random' | 'tangent-kernel' | ...
    description: str     # human text, e.g. "R along gradient flow from theta0 and 16 random starts"
    minimum: float | None
    points: int          # how many points the source evaluated


@dataclass
class FailingPoint:
    distance: float      # ||theta - center||
    loss: float          # L(theta)
    rayleigh: float      # R(theta)
    source: str


@dataclass
class FailingRegion:
    kind: str            # 'critical-point' | 'confinement' | 'region-too-large' | 'witness' | 'no-radius'
    message: str
    suggestion: str
    points: list[FailingPoint] = field(default_factory=list)
    span: dict | None = None   # source location of the statement concerned: {line, column, end_line, end_column}
    numbers: dict[str, float] = field(default_factory=dict)  # e.g. {'path_length_bound': .., 'radius': ..}


@dataclass
class Witness:
    method: str                      # "gradient descent"
    step: float                      # step size eta
    steps: int                       # steps taken
    time: float                      # gradient-flow time covered (steps * eta)
    curve: list[list[float]]         # [[t, L(theta_t)], ...]
    max_distance: float              # max ||theta_t - theta0||
    path_length: float               # sum of ||theta_{k+1} - theta_k||
    checked_until: float             # last time at which bound and witness were compared
    violation: dict | None = None    # {'t':, 'loss':, 'bound':} when the bound is violated
    left_region_at: float | None = None
    settled_at: float | None = None  # the loss reached the (effective) floor here: L is non-increasing
                                     # along the descent, so the bound holds at every later time
    horizon: float | None = None     # the time the witness was asked to cover (the claim's horizon)


@dataclass
class Result:
    spec: str                        # path as given
    title: str
    verdict: str                     # certified | refuted | inconclusive | error
    sound: bool                      # True only for verdicts that are theorems
    method: dict                     # {'name': 'sampled', 'samples':, 'seed':, ...}
    loss: dict                       # {'name', 'initial', 'constant', 'floor', 'minimum_seen'}
    desingularizer: dict             # {'name', 'params', 'phi', 'phi_inverse'}
    mu: float | None
    mu_source: str | None
    mu_sources: list[MuSource]
    region: dict                     # {'kind', 'center', 'radius', 'radius_auto', 'halfwidth', 'path_length_bound', 'dimension'}
    rate: dict                       # {'formula', 'curve', 'times_to_fraction', 'horizon', 'convention'}
    witness: Witness | None
    failing_region: FailingRegion | None
    diagnostics: list[Diagnostic]
    problem: dict = field(default_factory=dict)   # {'parameters': m, 'samples': n, 'outputs': k}
    timing: dict = field(default_factory=dict)    # seconds per phase
    notes: list[str] = field(default_factory=list)
    proof: dict | None = None        # method interval only: the proof tree and its facts (docs/output.md)
    _bound: Callable[[float], float] | None = field(default=None, repr=False, compare=False)
    # the engine's records of the search (analyse.records.Records), for `certify --emit`; not serialised
    _records: object | None = field(default=None, repr=False, compare=False)

    @property
    def exit_code(self) -> int:
        # a run stopped by Ctrl-C (130) or SIGTERM (143) exits with that code, and its partial
        # report says so (runs.partial_result records it)
        f = self.failing_region
        if f is not None and f.kind == "interrupted" and isinstance((f.numbers or {}).get("exit_code"), int):
            return f.numbers["exit_code"]
        return EXIT_CODES[self.verdict]

    @property
    def estimate(self) -> bool:
        return not self.sound

    def bound(self, t: float) -> float:
        """The certified (or estimated) bound on L(theta_t); nan when there is no rate."""
        if self._bound is None:
            return math.nan
        return float(self._bound(t))

    def to_dict(self) -> dict:
        d = asdict(replace(self, _bound=None, _records=None))   # never deep-copy the records
        d.pop("_bound", None)
        d.pop("_records", None)
        d["estimate"] = self.estimate
        d["diagnostics"] = [diag.to_dict() for diag in self.diagnostics]
        return d
