"""Rebuilding a Result from its dictionary (Result.to_dict(), as the cache stores it), bound(t)
included, and describing the rate so that it can be rebuilt.

The rate's parameters are read from the bound itself: the engine's bound is the `bound` method
of a compose.rate.Rate (a frozen dataclass), so its fields (the desingularizer by name and
parameters, and numbers) are enough to rebuild it exactly; a bound that is the constant L0 (the
initial loss already at the floor) is described as such. docs/output.md ("The cache") lists
what is stored.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from ..compose.rate import Rate
from ..diagnostics import Diagnostic, Span
from ..language import desingularizers as D
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
    make = getattr(D, "make", None)
    if make is not None:
        return make(spec["name"], **spec.get("params", {}))
    return D.DESINGULARIZERS[spec["name"]]


def rate_from_parameters(params: dict | None):
    """The compose.rate.Rate described by rate_parameters() (None for other kinds)."""
    if not params or params.get("kind") != "rate":
        return None

    kwargs = {}
    for name, value in params["fields"].items():
        if isinstance(value, dict) and "desingularizer" in value:
            kwargs[name] = _make_phi(value["desingularizer"])
        else:
            kwargs[name] = value
    return Rate(**kwargs)


def bound_from_parameters(params: dict | None) -> Callable[[float], float] | None:
    if not params:
        return None
    if params.get("kind") == "constant":
        value = float(params["value"])
        return lambda t: value
    rate = rate_from_parameters(params)
    return rate.bound if rate is not None else None


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
