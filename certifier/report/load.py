"""Rebuilding a Result from its dictionary (Result.to_dict(), as the cache stores it), bound(t)
included, and describing the rate so that it can be rebuilt.

The rate's parameters are read from the bound itself: the engine's bound is the `bound` method
of a compose.rate.Rate (a frozen dataclass), so its fields (the desingularizer by name and
parameters, and numbers) are enough to rebuild it exactly; a bound that is the constant L0 (the
initial loss already at the floor) is described as such. docs/output.md ("The cache") lists
what is stored.

Loading is light: the Rate (compose/rate.py, which imports numpy and scipy) is rebuilt on the
first call of the loaded bound, not when the Result is read, so that a cache hit whose report
never evaluates the bound (-q, json) imports neither (docs/performance.md).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from ..diagnostics import Diagnostic, Span
from ..result import FailingPoint, FailingRegion, MuSource, Result, Witness


def _phi_to_dict(phi) -> dict:
    return {"name": phi.name, "params": dict(getattr(phi, "params", {}) or {})}


def _is_phi(value) -> bool:
    return type(value).__name__ == "Desingularizer"


def rate_parameters(result: Result) -> dict | None:
    """{"kind": "rate", "fields": {...}} for a Rate's bound, {"kind": "constant", "value": L0} for a
    constant bound, None when there is no bound; raises ValueError for a bound it cannot describe."""
    bound = result._bound
    if bound is None:
        return None
    if isinstance(bound, LoadedBound):       # a Result read back: its own description
        return bound.params
    owner = getattr(bound, "__self__", None)
    if owner is not None and dataclasses.is_dataclass(owner) and type(owner).__name__ == "Rate":
        fields = {}
        for f in dataclasses.fields(owner):
            value = getattr(owner, f.name)
            if f.name in ("outward", "K_text") and value == f.default:
                continue   # the sampled rate's parameters as they were before the sound mode shared Rate
            fields[f.name] = {"desingularizer": _phi_to_dict(value)} if _is_phi(value) else value
        return {"kind": "rate", "fields": fields}
    initial = (result.loss or {}).get("initial")
    if initial is not None:
        try:
            if all(float(bound(t)) == float(initial) for t in (0.0, 1.0, 1e6)):
                return {"kind": "constant", "value": float(initial)}
        except Exception:
            pass
    raise ValueError("the bound is neither a Rate nor a constant")


def _make_phi(spec: dict):
    from ..language import desingularizers as D

    make = getattr(D, "make", None)
    if make is not None:
        return make(spec["name"], **spec.get("params", {}))
    return D.DESINGULARIZERS[spec["name"]]


def rate_from_parameters(params: dict | None):
    """The compose.rate.Rate described by rate_parameters() (None for other kinds)."""
    if not params or params.get("kind") != "rate":
        return None
    from ..compose.rate import Rate

    kwargs = {}
    for name, value in params["fields"].items():
        if isinstance(value, dict) and "desingularizer" in value:
            kwargs[name] = _make_phi(value["desingularizer"])
        else:
            kwargs[name] = value
    return Rate(**kwargs)


# compose.rate.Rate's fields (tests/test_startup.py checks them against the dataclass): a stored
# rate is checked against them when it is read, without importing compose.rate
RATE_FIELDS = ("phi", "K", "initial", "floor", "step", "smoothness", "outward", "K_text")
RATE_REQUIRED = ("phi", "K", "initial", "floor")


class LoadedBound:
    """bound(t) of a Result read back: the Rate described by `params`, built on the first call."""

    def __init__(self, params: dict):
        fields = params.get("fields")
        if not isinstance(fields, dict) or set(fields) - set(RATE_FIELDS) or set(RATE_REQUIRED) - set(fields):
            raise ValueError(f"not the parameters of a rate: {sorted(fields or ())}")
        phi = fields["phi"]
        if not (isinstance(phi, dict) and isinstance(phi.get("desingularizer"), dict)
                and isinstance(phi["desingularizer"].get("name"), str)):
            raise ValueError("the rate's desingularizer is not described")
        self.params = params
        self._bound = None

    def __call__(self, t: float) -> float:
        if self._bound is None:
            self._bound = rate_from_parameters(self.params).bound
        return self._bound(t)


def bound_from_parameters(params: dict | None) -> Callable[[float], float] | None:
    if not params:
        return None
    if params.get("kind") == "constant":
        value = float(params["value"])
        return lambda t: value
    return LoadedBound(params) if params.get("kind") == "rate" else None


def _build(cls, data: Any):
    if data is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def diagnostic_from_dict(d: dict) -> Diagnostic:
    span = None
    if d.get("line") is not None:
        span = Span(d["line"], d.get("column") or 1, d.get("end_line") or d["line"],
                    d.get("end_column") or (d.get("column") or 1) + 1)
    return Diagnostic(d["code"], d["message"], span, d.get("hint"), d.get("path", "<spec>"),
                      d.get("severity", "error"))


def result_from_dict(d: dict, rate_params: dict | None = None) -> Result:
    """The inverse of Result.to_dict() (the `estimate` key is derived, so it is dropped)."""
    names = [f.name for f in dataclasses.fields(Result) if not f.name.startswith("_")]
    kw = {k: d.get(k) for k in names if k in d}
    kw["mu_sources"] = [_build(MuSource, s) for s in d.get("mu_sources") or []]
    kw["witness"] = _build(Witness, d.get("witness"))
    f = d.get("failing_region")
    if f is not None:
        f = dict(f)
        f["points"] = [_build(FailingPoint, p) for p in f.get("points") or []]
        kw["failing_region"] = _build(FailingRegion, f)
    kw["diagnostics"] = [diagnostic_from_dict(x) for x in d.get("diagnostics") or []]
    for key in ("problem", "timing"):
        kw.setdefault(key, {})
    kw.setdefault("notes", [])
    return Result(**kw, _bound=bound_from_parameters(rate_params))


def finite_or_none(x):
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None
