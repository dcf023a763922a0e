"""One Result from either engine's evidence: what both report (the spec, the problem's size, the
loss, the desingularizer, the region) is assembled here, in one order, so that a field added to
the Result is added once and the two engines' JSON stays one schema (docs/output.md)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..result import FailingRegion, MuSource, Result, Witness

# the loss object's keys in the order the JSON shows them; an engine gives the ones it knows
LOSS_KEYS = ("name", "initial", "initial_upper", "constant", "floor", "effective_floor", "inequality",
             "minimum_seen", "sample_bound")


@dataclass
class Evidence:
    """What an engine found for one checked spec (compose/sampled.py, compose/sound.py)."""
    verdict: str
    sound: bool
    method: dict                     # the engine's own parameters and counters
    loss: dict                       # numbers of the loss, keys from LOSS_KEYS ("name" is added)
    phi: object                      # the Desingularizer used
    mu: float | None
    mu_source: str | None
    mu_sources: list[MuSource]
    radius: float | None
    rho: float | None                # the path-length bound (inf or None: none)
    radius_search: list[dict]
    rate: dict
    witness: Witness | None
    failing: FailingRegion | None
    phi_reason: str | None = None    # why `auto` chose phi (the sampled mode chooses)
    timing: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    proof: dict | None = None
    bound: Callable[[float], float] | None = None
    records: object | None = None    # for `certify --emit`


def build_result(checked, problem, ev: Evidence) -> Result:
    region = checked.region
    loss = {"name": problem.loss_def.name, **ev.loss}
    desingularizer = {"name": ev.phi.name, "requested": checked.desingularizer.name, "params": ev.phi.params,
                      "phi": ev.phi.phi_text}
    if ev.phi_reason is not None:
        desingularizer["reason"] = ev.phi_reason
    return Result(
        spec=checked.spec.path, title=checked.spec.title or Path(checked.spec.path).stem,
        verdict=ev.verdict, sound=ev.sound, method=ev.method,
        loss={k: loss[k] for k in LOSS_KEYS if k in loss},
        desingularizer=desingularizer,
        mu=finite(ev.mu), mu_source=ev.mu_source, mu_sources=ev.mu_sources,
        region={"kind": region.name, "center": "init", "radius": ev.radius,
                "radius_auto": region.name == "ball" and region.options.get("radius") == "auto",
                "halfwidth": ev.radius if region.name == "box" else None,
                "path_length_bound": finite(ev.rho), "dimension": problem.m, "radius_search": ev.radius_search},
        rate=ev.rate, witness=ev.witness, failing_region=ev.failing, diagnostics=[],
        problem=problem_size(problem), timing=ev.timing, notes=ev.notes, proof=ev.proof,
        _bound=ev.bound, _records=ev.records)


def problem_size(problem) -> dict:
    """m, n, k; a population (data gaussian) has no sample count: `population` names it instead."""
    if getattr(problem, "population", None) is not None:
        return {"parameters": problem.m, "samples": None, "outputs": problem.k,
                "population": problem.population.population.text}
    return {"parameters": problem.m, "samples": problem.n, "outputs": problem.k}


def finite(x):
    return x if x is not None and math.isfinite(x) else None
