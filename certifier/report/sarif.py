"""SARIF 2.1.0 (the format GitHub code scanning reads): one log, one run, one result per
diagnostic and one per refuted or inconclusive spec. Certified specs are no results: GitHub code
scanning shows every result as an alert (a `note` too), so they are listed in the run's
`properties.certified` instead (spec, verdict, sound, mu and the rate), never as problems.

- tool.driver: name, version, informationUri and the rules: one per diagnostic code
  (diagnostics.CODES), one per failing-region kind, `certified` and `internal-error`, with
  shortDescription / fullDescription / help from certifier.explain (the one table of texts).
- results: ruleId = the code or the failing kind; level `error` for refuted results and spec
  errors, `warning` for inconclusive results and warning-severity diagnostics; located at the spec line the
  failure concerns (FailingRegion.span, the diagnostic's span, else the statement concerned),
  with URIs relative to %SRCROOT% (the working directory) whenever the file lies below it.
- partialFingerprints["certify/v1"]: sha256 of rule id, URI and the text of the statement
  concerned (never the numbers), so an alert keeps its identity from run to run.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from ..diagnostics import CODES, Diagnostic, Span
from ..explain import EXPLANATIONS, FAILING_KINDS, OTHER_KINDS
from ..version import __version__
from .outcome import Outcome, outcome_span, span_text
from .text import num

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
VERSION = "2.1.0"
INFORMATION_URI = "https://pypi.org/project/certify/"
FINGERPRINT = "certify/v1"

_LEVEL = {"refuted": "error", "inconclusive": "warning", "certified": "note", "error": "error"}


def rule_ids() -> list[str]:
    return list(CODES) + list(FAILING_KINDS) + list(OTHER_KINDS)


def _default_level(rule: str) -> str:
    if rule in CODES or rule == "internal-error":
        return "error"
    if rule == "certified":
        return "note"
    if rule in ("critical-point", "confinement", "witness"):
        return "error"
    return "warning"


def rules() -> list[dict]:
    out = []
    for rid in rule_ids():
        e = EXPLANATIONS[rid]
        out.append({
            "id": rid,
            "name": "".join(w.capitalize() for w in e.title.replace("-", " ").split()),
            "shortDescription": {"text": e.title},
            "fullDescription": {"text": e.summary},
            "help": {"text": e.render(), "markdown": e.markdown()},
            "defaultConfiguration": {"level": _default_level(rid)},
            "properties": {"tags": ["certify", "diagnostic" if rid in CODES else "verdict"]},
        })
    return out


def artifact_uri(path: str, root: str | os.PathLike | None = None) -> tuple[str, bool]:
    """(uri, relative): a path below `root` (default: the working directory) as a relative URI
    with forward slashes; any other path as an absolute file: URI."""
    root_path = Path(root if root is not None else os.getcwd()).resolve()
    p = Path(path)
    absolute = (p if p.is_absolute() else root_path / p).resolve()
    try:
        rel = absolute.relative_to(root_path)
        return quote(PurePosixPath(*rel.parts).as_posix()), True
    except ValueError:
        return absolute.as_uri(), False


def _fingerprint(rule: str, uri: str, text: str) -> str:
    return hashlib.sha256(f"{rule}\0{uri}\0{text}".encode("utf-8")).hexdigest()


def _region(span: Span | None) -> dict:
    if span is None:
        return {"startLine": 1, "startColumn": 1}
    region = {"startLine": max(1, span.line), "startColumn": max(1, span.column)}
    if span.end_line and span.end_line >= span.line:
        region["endLine"] = span.end_line
        if span.end_column and (span.end_line > span.line or span.end_column > span.column):
            region["endColumn"] = span.end_column
    return region


def _location(path: str, span: Span | None, root) -> tuple[dict, str]:
    uri, relative = artifact_uri(path, root)
    artifact = {"uri": uri}
    if relative:
        artifact["uriBaseId"] = "%SRCROOT%"
    return {"physicalLocation": {"artifactLocation": artifact, "region": _region(span)}}, uri


def _same_file(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _diagnostic_result(o: Outcome, d: Diagnostic, index: dict[str, int], root) -> dict:
    rule = d.code if d.code in index else "internal-error"
    path = d.path if d.path and not d.path.startswith("<") else o.spec
    location, uri = _location(path, d.span, root)
    text = span_text(o.source, d.span) if _same_file(path, o.spec) else ""
    message = d.message + (f" (hint: {d.hint})" if d.hint else "")
    return {
        "ruleId": rule,
        "ruleIndex": index[rule],
        "level": "warning" if d.severity == "warning" else ("note" if d.severity == "note" else "error"),
        "message": {"text": message},
        "locations": [location],
        "partialFingerprints": {FINGERPRINT: _fingerprint(rule, uri, text)},
        "properties": {"spec": o.spec, "verdict": o.verdict},
    }


def _verdict_result(o: Outcome, index: dict[str, int], root) -> dict:
    r = o.result
    f = r.failing_region
    rule = f.kind if f is not None and f.kind in index else ("certified" if f is None else "internal-error")
    span = outcome_span(o, rule)
    location, uri = _location(o.spec, span, root)
    label = "" if r.sound else " (ESTIMATE, not a proof)"
    if f is None:
        formula = (r.rate or {}).get("formula")
        message = f"{r.verdict}{label}: mu = {num(r.mu)}" + (f", {formula}" if formula else "")
    else:
        message = f"{r.verdict}{label}: {f.message}" + (f". Suggestion: {f.suggestion}" if f.suggestion else "")
    mu = r.mu if isinstance(r.mu, (int, float)) and math.isfinite(r.mu) else None
    props = {"spec": o.spec, "verdict": r.verdict, "sound": bool(r.sound), "estimate": not r.sound, "mu": mu}
    return {
        "ruleId": rule,
        "ruleIndex": index[rule],
        "level": _LEVEL.get(r.verdict, "warning"),
        "message": {"text": message},
        "locations": [location],
        "partialFingerprints": {FINGERPRINT: _fingerprint(rule, uri, span_text(o.source, span))},
        "properties": props,
    }


def _certified(o: Outcome, root) -> dict:
    """A certified spec, for the run's properties (not a result: see the module's docstring)."""
    r = o.result
    rate = r.rate or {}
    mu = r.mu if isinstance(r.mu, (int, float)) and math.isfinite(r.mu) else None
    return {"spec": o.spec, "uri": artifact_uri(o.spec, root)[0], "verdict": r.verdict, "sound": bool(r.sound),
            "estimate": not r.sound, "mu": mu, "rate": rate.get("formula"), "asymptotic": rate.get("asymptotic")}


def to_sarif(outcomes: list[Outcome], root: str | os.PathLike | None = None) -> dict:
    index = {rid: i for i, rid in enumerate(rule_ids())}
    results, certified = [], []
    for o in outcomes:
        if o.result is None:
            results += [_diagnostic_result(o, d, index, root) for d in o.error_diagnostics()]
            continue
        if o.result.failing_region is None and o.result.verdict == "certified":
            certified.append(_certified(o, root))
        else:
            results.append(_verdict_result(o, index, root))
        results += [_diagnostic_result(o, d, index, root) for d in o.result.diagnostics]
    return {
        "$schema": SCHEMA,
        "version": VERSION,
        "runs": [{
            "tool": {"driver": {"name": "certify", "version": __version__, "semanticVersion": __version__,
                                "informationUri": INFORMATION_URI, "rules": rules()}},
            "columnKind": "unicodeCodePoints",
            "results": results,
            "properties": {"certified": certified},
        }],
    }


def render_sarif(outcomes: list[Outcome], root: str | os.PathLike | None = None) -> str:
    return json.dumps(to_sarif(outcomes, root), indent=2, ensure_ascii=False, allow_nan=False)
