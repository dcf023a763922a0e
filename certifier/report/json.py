"""The machine-readable report: one JSON object per spec (docs/output.md documents every field).

`to_json(result)` serialises Result.to_dict() with keys in the dataclass order (with `estimate`
right after `sound`); `error_json(path, diagnostics)` gives the same keys for a spec that could
not be run (verdict "error"), so `certify --format json` always prints one parseable object.
Finite floats are JSON numbers; inf and nan become null (no NaN/Infinity tokens, ever).
Layout: indent 2, with lists of scalars (curve points [t, L]) kept on one line.
Every object starts with `schema_version`: the version of certifier/schemas/result.schema.json
that describes it (docs/output.md, "Schemas").
"""
from __future__ import annotations

import dataclasses
import json as _json
import math
from typing import Any, Iterable

from ..diagnostics import Diagnostic
from ..result import Result

# The version of the published JSON schemas (certifier/schemas/*.schema.json) the objects follow:
# the minor number grows when fields are added, the major one when a field changes or goes away,
# so a program can refuse a major version it does not know.
SCHEMA_VERSION = "1.0"


def field_order() -> list[str]:
    """Top-level keys, in order: `schema_version`, then the Result fields, with `estimate` inserted
    after `sound`."""
    names = [f.name for f in dataclasses.fields(Result) if not f.name.startswith("_")]
    names.insert(names.index("sound") + 1, "estimate")
    return ["schema_version"] + names


def clean(value: Any, finite: bool = True) -> Any:
    """A JSON-safe copy: non-finite floats -> None, numpy/torch scalars and arrays -> Python values,
    tuples -> lists, dataclasses -> dicts, dict keys -> str. With finite=False, inf and nan are
    kept (for the cache, which writes them as Infinity/NaN and reads them back)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if (math.isfinite(value) or not finite) else None
    if isinstance(value, dict):
        return {str(k): clean(v, finite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v, finite) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        return clean(to_dict() if callable(to_dict) else dataclasses.asdict(value), finite)
    if hasattr(value, "tolist"):        # numpy arrays and scalars, torch tensors
        try:
            return clean(value.detach().cpu().tolist() if hasattr(value, "detach") else value.tolist(),
                         finite)
        except Exception:
            pass
    if hasattr(value, "item"):
        try:
            return clean(value.item(), finite)
        except Exception:
            pass
    try:                                # other number-like objects (Fraction, Decimal, ...)
        return clean(float(value), finite)
    except (TypeError, ValueError):
        return str(value)


def _ordered(d: dict) -> dict:
    order = field_order()
    out = {k: d.get(k) for k in order}
    out.update({k: v for k, v in d.items() if k not in out})   # any field added later, at the end
    return out


def _scalar(v: Any) -> str:
    return _json.dumps(v, ensure_ascii=False, allow_nan=False)


def _encode(v: Any, level: int) -> str:
    """json.dumps(indent=2), except that a list of scalars (a curve point [t, L], a center, ...)
    stays on one line, so curves read as one point a line."""
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = [f"{inner}{_scalar(str(k))}: {_encode(x, level + 1)}" for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(v, list):
        if not v:
            return "[]"
        if all(not isinstance(x, (dict, list)) for x in v):
            return "[" + ", ".join(_scalar(x) for x in v) + "]"
        return "[\n" + ",\n".join(inner + _encode(x, level + 1) for x in v) + "\n" + pad + "]"
    return _scalar(v)


def _dumps(obj: dict) -> str:
    return _encode(clean(obj), 0)


def to_dict(result: Result) -> dict:
    """The JSON object of `result` as ordered, JSON-safe Python data."""
    return clean(_ordered({"schema_version": SCHEMA_VERSION, **result.to_dict()}))


def to_json(result: Result) -> str:
    return _dumps(to_dict(result))


def error_dict(path: str, diagnostics: Iterable[Diagnostic]) -> dict:
    out = {k: None for k in field_order()}
    out.update(schema_version=SCHEMA_VERSION, spec=str(path), verdict="error", sound=False, estimate=True,
               diagnostics=[d.to_dict() for d in diagnostics])
    return clean(out)


def error_json(path: str, diagnostics: Iterable[Diagnostic]) -> str:
    return _dumps(error_dict(path, diagnostics))


# --- several specs ----------------------------------------------------------------------------------

def outcome_dict(outcome) -> dict:
    """The object of one Outcome (report.outcome): the result's object, or the error object."""
    if outcome.result is not None:
        return to_dict(outcome.result)
    return error_dict(outcome.spec, outcome.error_diagnostics())


def outcomes_json(outcomes) -> str:
    """A JSON array of the objects of every spec, in the layout of to_json."""
    return _encode([outcome_dict(o) for o in outcomes], 0)


def outcomes_jsonl(outcomes) -> str:
    """JSON lines: one compact object per spec and line (no trailing newline after the last)."""
    return "\n".join(_json.dumps(outcome_dict(o), ensure_ascii=False, allow_nan=False,
                                 separators=(",", ":")) for o in outcomes)
