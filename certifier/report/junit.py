"""JUnit XML: one <testsuite name="certify"> with one <testcase> per spec.

- certified: a passing testcase (its system-out holds μ and the rate);
- refuted: <failure type="refuted/KIND">;
- spec errors: <error type="E001 ...">, internal errors <error type="internal-error">;
- inconclusive: <failure type="inconclusive/KIND"> by default (it fails the run, exit 3), and
  <skipped> with --fail-on refuted (it does not), so the XML agrees with the exit code.
Times are the seconds each spec took in this run (3 decimals).

The XML is valid against the Jenkins xUnit plugin's JUnit schema (junit-10.xsd, the one pytest's
own XML follows; tests/fixtures/junit-10.xsd): `<testsuites>` carries name, tests, failures, errors
and time only (the skipped count is on `<testsuite>`), and `<testcase>` has no `file` attribute
(its name is the spec's path). Characters XML 1.0 cannot hold are replaced by U+FFFD.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from ..diagnostics import render_text as render_diagnostic
from .outcome import Outcome, effective_code
from .text import num

# what XML 1.0 cannot hold (control characters other than tab, LF, CR; surrogates; U+FFFE/U+FFFF)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# <testsuites> in the schema has no `skipped` attribute
_SUITES_ATTRIBUTES = ("tests", "failures", "errors")


def _xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _details(o: Outcome) -> str:
    r = o.result
    lines = [f"spec: {o.spec}", f"verdict: {r.verdict}" + ("" if r.sound else " (ESTIMATE, not a proof)"),
             f"mu: {num(r.mu)}"]
    formula = (r.rate or {}).get("formula")
    if formula:
        lines.append(f"rate: {formula}")
    f = r.failing_region
    if f is not None:
        lines.append(f"failure: {f.kind}: {f.message}")
        if f.span:
            lines.append(f"at line {f.span.get('line')}, column {f.span.get('column')}")
        if f.suggestion:
            lines.append(f"suggestion: {f.suggestion}")
    if o.cached:
        lines.append("read from the cache")
    return "\n".join(lines)


def to_junit(outcomes: list[Outcome], fail_on: str = "inconclusive") -> ET.Element:
    suites = ET.Element("testsuites", name="certify")
    suite = ET.SubElement(suites, "testsuite", name="certify")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total = 0.0
    for o in outcomes:
        counts["tests"] += 1
        total += o.seconds
        case = ET.SubElement(suite, "testcase", classname="certify", name=_xml(o.spec), time=f"{o.seconds:.3f}")
        if o.result is None:
            counts["errors"] += 1
            diags = o.error_diagnostics()
            codes = " ".join(sorted({d.code for d in diags}))
            first = diags[0].message if diags else "the spec could not be run"
            err = ET.SubElement(case, "error", type=codes or "error", message=_xml(first))
            err.text = _xml("\n\n".join(render_diagnostic(d, o.source if d.path == o.spec else None) for d in diags))
            continue
        r = o.result
        kind = o.failing_kind
        message = r.failing_region.message if r.failing_region is not None else r.verdict
        if r.verdict == "refuted":
            counts["failures"] += 1
            el = ET.SubElement(case, "failure", type=f"refuted/{kind}" if kind else "refuted", message=_xml(message))
            el.text = _xml(_details(o))
        elif r.verdict == "inconclusive":
            if effective_code(o, fail_on) == 0:
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=_xml(f"inconclusive: {message}"))
            else:
                counts["failures"] += 1
                el = ET.SubElement(case, "failure", type=f"inconclusive/{kind}" if kind else "inconclusive",
                                   message=_xml(message))
                el.text = _xml(_details(o))
        out = ET.SubElement(case, "system-out")
        out.text = _xml(_details(o))
    for el, keys in ((suites, _SUITES_ATTRIBUTES), (suite, tuple(counts))):
        for key in keys:
            el.set(key, str(counts[key]))
        el.set("time", f"{total:.3f}")
    return suites


def render_junit(outcomes: list[Outcome], fail_on: str = "inconclusive") -> str:
    root = to_junit(outcomes, fail_on)
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")
