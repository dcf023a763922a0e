"""Text and JSON renderers on hand-built Results (no engine needed).

Snapshots live in tests/snapshots/; rewrite them with CERTIFY_UPDATE_SNAPSHOTS=1 after checking
the new output by eye.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
from pathlib import Path

import pytest
from rich.console import Console

from certifier.diagnostics import Diagnostic, Span
from certifier.report.json import SCHEMA_VERSION, error_json, field_order, to_json
from certifier.report.text import ESTIMATE_LABEL, render_text
from certifier.result import FailingPoint, FailingRegion, MuSource, Result, Witness

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("CERTIFY_UPDATE_SNAPSHOTS") == "1"

CONVENTION = "R = ||grad L||^2 / ||g||_D^2 with the L2(D) inner product (mean over the data)"


# --- hand-built results (also used by tests/test_cli.py) --------------------------------------

def _exp_bound(L0: float, mu: float):
    return lambda t: L0 * math.exp(-4.0 * mu * t)


def _times(L0: float, mu: float, floor: float = 0.0) -> dict:
    out = {}
    for k in range(1, 7):
        frac = 10.0 ** -k
        out[f"1e-{k}"] = (math.log(1 / frac) / (4 * mu)) if frac * L0 > floor else None
    return out


def _curve(fn, t_end: float, n: int) -> list[list[float]]:
    return [[t_end * i / (n - 1), fn(t_end * i / (n - 1))] for i in range(n)]


def certified_result() -> Result:
    L0, mu = 2.5, 0.125
    bound = _exp_bound(L0, mu)
    witness_loss = lambda t: 2.5 * math.exp(-4.0 * 0.2 * t)  # noqa: E731  (decays faster than the bound)
    return Result(
        spec="specs/two_layer_tanh.rq",
        title="over-parameterized two-layer tanh network, least squares",
        verdict="certified",
        sound=False,
        method={"name": "sampled", "samples": 4096, "seed": 3, "evaluations": 5120},
        loss={"name": "least_squares", "initial": L0, "constant": 4.0, "floor": 0.0, "minimum_seen": 1.25e-7,
              "sample_bound": None},
        desingularizer={"name": "log", "requested": "auto", "params": {}, "phi": "φ(s) = log(s)",
                        "reason": "auto: the natural desingularizer of least_squares"},
        mu=mu,
        mu_source="adversarial",
        mu_sources=[
            MuSource("trajectory", "R along gradient descent from θ0", 0.31, 512),
            MuSource("adversarial", "R minimised from 32 starts [worst case]", mu, 2048),
            MuSource("random", "R at uniform random points of the ball", 0.27, 2048),
            MuSource("tangent-kernel", "λ_min of the tangent kernel (no proof)", None, 0),
        ],
        region={"kind": "ball", "center": "init", "radius": 1.5, "radius_auto": True, "halfwidth": None,
                "path_length_bound": 1.234, "dimension": 2048,
                "radius_search": [{"radius": 0.75, "mu": 0.16, "path_length_bound": 0.96},
                                  {"radius": 1.5, "mu": 0.125, "path_length_bound": 1.234}]},
        rate={"formula": "L(t) ≤ 2.5·exp(−4·0.125·t)",
              "asymptotic": "L ~ exp(-0.5 t) (linear rate)",
              "kl_constant": 4 * mu,
              "curve": [[0.0, L0], [10.0, bound(10.0)], [math.inf, 0.0]],
              "times_to_fraction": _times(L0, mu),
              "horizon": 10000.0,
              "unit": "gradient-flow time t", "step": None, "smoothness": None,
              "profile": {"exponent": 0.0123,
                          "bands": [{"low": 0.01, "high": 10 ** -1.5, "mu": 0.13, "points": 40},
                                    {"low": 10 ** -1.5, "high": 0.1, "mu": 0.125, "points": 85},
                                    {"low": 0.1, "high": 10 ** -0.5, "mu": 0.14, "points": 120}]},
              "convention": CONVENTION},
        witness=Witness(method="gradient descent", step=0.01, steps=2000, time=20.0,
                        curve=_curve(witness_loss, 20.0, 41), max_distance=0.42, path_length=0.61,
                        checked_until=20.0),
        failing_region=None,
        diagnostics=[],
        problem={"parameters": 2048, "samples": 16, "outputs": 1},
        timing={"initial_trajectory": 0.21, "search": 3.456, "witness": 0.5, "total": 4.2},
        notes=["sampled estimate: μ is the smallest R found at 5120 points; it is not a proof"],
        _bound=bound,
    )


def refuted_result() -> Result:
    L0, mu = 1.0, 0.5
    bound = _exp_bound(L0, mu)
    # gradient descent slows down: above the bound exp(-2t) from t = 0.6 on; the engine stops at
    # the first violation, so the curve ends there
    curve = [[0.0, 1.0], [0.05, 0.89], [0.1, 0.78], [0.2, 0.62], [0.4, 0.41], [0.6, 0.37]]
    return Result(
        spec="specs/stall.rq",
        title="a model that stalls",
        verdict="refuted",
        sound=False,
        method={"name": "sampled", "samples": 256, "seed": 0},
        loss={"name": "least_squares", "initial": L0, "constant": 4.0, "floor": 0.0, "minimum_seen": 0.3},
        desingularizer={"name": "log", "params": {}, "phi": "φ(s) = log(s)"},
        mu=mu,
        mu_source="random",
        mu_sources=[MuSource("trajectory", "R along gradient descent from θ0", 0.8, 100),
                    MuSource("random", "R at uniform random points of the ball", mu, 156)],
        region={"kind": "ball", "center": "init", "radius": 2.0, "radius_auto": False, "halfwidth": None,
                "path_length_bound": 1.8, "dimension": 3},
        rate={"formula": "L(t) ≤ 1·exp(−4·0.5·t)", "asymptotic": "L ~ exp(-2 t) (linear rate)",
              "kl_constant": 4 * mu, "curve": [[0.0, 1.0], [1.0, bound(1.0)]],
              "times_to_fraction": _times(L0, mu), "horizon": 100.0, "unit": "gradient-flow time t",
              "step": None, "smoothness": None, "profile": {"exponent": None, "bands": []},
              "convention": CONVENTION},
        witness=Witness(method="gradient descent", step=0.05, steps=12, time=0.6,
                        curve=curve, max_distance=1.1, path_length=1.3,
                        checked_until=0.6, violation={"t": 0.6, "loss": 0.37, "bound": 0.3012}),
        failing_region=FailingRegion(
            kind="witness",
            message="gradient descent from θ0 has L = 0.37 at t = 0.6, above the bound 0.3012",
            suggestion="raise samples=, shrink the region, or certify a floor",
            points=[FailingPoint(1.9, 0.31, 1e-12, "adversarial"), FailingPoint(0.75, 0.5, 0.02, "random")],
            span={"line": 17, "column": 1, "end_line": 17, "end_column": 30},
            numbers={"t": 0.6, "loss": 0.37, "bound": 0.3012, "radius": math.inf}),
        diagnostics=[Diagnostic("E109", "radius [2.0] is small", Span(4, 8, 4, 11), "try radius=auto",
                                "specs/stall.rq", severity="warning")],
        problem={"parameters": 3, "samples": 8, "outputs": 1},
        timing={"total": 0.75},
        notes=[],
        _bound=bound,
    )


def inconclusive_result() -> Result:
    return Result(
        spec="specs/linear_underparameterized.rq",
        title="under-parameterized linear model",
        verdict="inconclusive",
        sound=False,
        method={"name": "sampled", "samples": 1024, "seed": 1},
        loss={"name": "least_squares", "initial": 3.0, "constant": 4.0, "floor": 0.0, "minimum_seen": 1.1},
        desingularizer={"name": "log", "params": {}, "phi": "φ(s) = log(s)"},
        mu=0.01,
        mu_source="trajectory",
        mu_sources=[MuSource("trajectory", "R along gradient descent from θ0", 0.01, 300),
                    MuSource("random", "R at uniform random points of the ball", math.nan, 700)],
        region={"kind": "ball", "center": "init", "radius": 64.0, "radius_auto": True, "halfwidth": None,
                "path_length_bound": 812.5, "dimension": 4},
        rate={"formula": None, "asymptotic": None, "kl_constant": 0.04, "curve": [], "times_to_fraction": {},
              "horizon": 10000.0, "unit": "gradient-flow time t", "step": None, "smoothness": None,
              "profile": {"exponent": None,
                          "bands": [{"low": 1.0, "high": 10 ** 0.5, "mu": 0.01, "points": 300}]},
              "convention": CONVENTION},
        witness=Witness(method="gradient descent", step=0.1, steps=20000, time=2000.0,
                        curve=_curve(lambda t: 1.1 + 1.9 * math.exp(-t), 2000.0, 5), max_distance=3.2,
                        path_length=3.3, checked_until=2000.0),
        failing_region=FailingRegion(
            kind="no-radius",
            message="no radius found with rho(r) <= r after 7 tries (last: r = 64, mu(r) = 0.01, rho = 812.5)",
            suggestion="certify a floor > 0, start closer to a solution, or widen the model",
            points=[FailingPoint(3.1, 1.1, 0.0001, "trajectory")],
            numbers={"path_length_bound": 812.5, "radius": 64.0, "mu": 0.01}),
        diagnostics=[],
        problem={"parameters": 4, "samples": 32, "outputs": 1},
        timing={"search": 1.0, "total": 1.5},
        notes=["the loss seems to level off at 1.1"],
        _bound=None,
    )


def sound_result() -> Result:
    r = certified_result()
    r.sound = True
    return r


RESULTS = {"certified": certified_result, "refuted": refuted_result, "inconclusive": inconclusive_result}

# the sound mode, as specs/linear_underparameterized_sound.rq gives it: the exact doubles the proof
# computed with (L0 an upper bound of L(theta0), mu a proved lower bound, K = 4 mu rounded down)
SOUND_L0, SOUND_MU, SOUND_K, SOUND_FLOOR = 2.4052846015264793, 0.4778695035699382, 1.9114780142797525, 1e-12
SOUND_FORMULA = "L(t) <= max(2.4052846015264793 * exp(-4 * 0.4778695035699382 * t), 1e-12)"


def _leaf(rule: str, bound: float, status: str = "proven") -> dict:
    return {"box": {"lo": [0.0], "hi": [1.0]}, "status": status, "rule": rule, "bound": bound,
            "reason": f"the {rule} rule", "numbers": {}}


def sound_certified_result() -> Result:
    """A sound certificate: method interval, a proof tree of 3 leaves (2 spectrum, 1 direct)."""
    bound = lambda t: max(SOUND_L0 * math.exp(-SOUND_K * t), SOUND_FLOOR)  # noqa: E731
    times = {f"1e-{k}": math.log(10 ** k) / SOUND_K for k in range(1, 7)}
    witness_loss = lambda t: SOUND_L0 * math.exp(-2.5 * t)  # noqa: E731
    tree = {"region": {"kind": "box", "size": 2.5}, "floor": SOUND_FLOOR, "target": 0.38484573,
            "stop": "proven",
            "root": {"box": {"lo": [0.0], "hi": [1.0]}, "status": "split", "rule": "direct", "bound": 0.0,
                     "split": {"coordinate": 0, "at": 0.5},
                     "children": [_leaf("spectrum", 0.51),
                                  {"box": {"lo": [0.5], "hi": [1.0]}, "status": "split", "rule": "direct",
                                   "bound": 0.1, "split": {"coordinate": 0, "at": 0.75},
                                   "children": [_leaf("spectrum", SOUND_MU), _leaf("direct", 0.62)]}]}}
    return Result(
        spec="specs/linear_underparameterized_sound.rq",
        title="realizable under-parameterized linear least squares, certified soundly",
        verdict="certified",
        sound=True,
        method={"name": "interval", "boxes": 200, "seed": 0, "functions": "margin", "boxes_evaluated": 5,
                "boxes_per_second": 313.4,
                "elementary_functions": "numpy with a relative margin of 2^-40 (docs/theory.md section 10)",
                "status": "proven",
                "message": "every box is proven: R >= 0.47787 on the region above the floor"},
        loss={"name": "least_squares", "initial": 2.405284601523, "initial_upper": SOUND_L0, "constant": 4.0,
              "floor": SOUND_FLOOR, "minimum_seen": None, "sample_bound": None},
        desingularizer={"name": "log", "requested": "auto", "params": {}, "phi": "phi(u) = log(u)"},
        mu=SOUND_MU,
        mu_source="spectrum",
        mu_sources=[MuSource("direct", "min ||grad L||^2 / max ||g||_D^2 over interval enclosures", 0.62, 3),
                    MuSource("spectrum", "lambda_min of the tangent kernel by Weyl on an interval Jacobian",
                             SOUND_MU, 2)],
        region={"kind": "box", "center": "init", "radius": 2.5, "radius_auto": False, "halfwidth": 2.5,
                "path_length_bound": 2.2435187761235455, "dimension": 4},
        rate={"formula": SOUND_FORMULA, "asymptotic": "L ~ exp(-1.91 t) (linear rate)", "kl_constant": SOUND_K,
              "curve": [[0.0, SOUND_L0], [10.0, bound(10.0)]], "times_to_fraction": times, "horizon": 1000.0,
              "time": "gradient-flow time t", "convention": CONVENTION},
        witness=Witness(method="gradient descent", step=0.0902751, steps=146, time=13.18,
                        curve=_curve(witness_loss, 13.18, 11), max_distance=1.61304, path_length=1.71833,
                        checked_until=13.2),
        failing_region=None,
        diagnostics=[],
        problem={"parameters": 4, "samples": 32, "outputs": 1},
        timing={"search": 0.04, "witness": 0.06, "total": 0.12},
        notes=["sound mode: R >= mu is proved by interval arithmetic for the model and data as stored"],
        proof={"status": "proven", "mu": SOUND_MU, "boxes_evaluated": 5, "seconds": 0.02,
               "rules_used": {"direct": 3, "spectrum": 2}, "facts": {"affine": True},
               "min_rayleigh_seen": 0.47787, "message": "every box is proven: R >= 0.47787 on the region above "
                                                         "the floor", "tree": tree},
        _bound=bound,
    )


NEGATIVE_MU = -8.37e-19


def sound_inconclusive_result() -> Result:
    """The sound mode without a proof: the box budget ended, the weakest box's bound is a rounding
    error below 0 (a lower bound of R >= 0, so it says nothing)."""
    r = sound_certified_result()
    r.verdict, r.sound, r.mu, r.mu_source = "inconclusive", False, NEGATIVE_MU, None
    r.method.update(boxes=3, boxes_evaluated=3, status="unresolved",
                    message="the budget of 3 boxes ended with 2 unresolved box(es)")
    r.mu_sources = [MuSource("direct", "min ||grad L||^2 / max ||g||_D^2 over interval enclosures", NEGATIVE_MU, 3)]
    r.region["path_length_bound"] = None
    r.rate = {"formula": None, "asymptotic": None, "kl_constant": None, "curve": [], "times_to_fraction": {},
              "horizon": 1000.0, "time": "gradient-flow time t", "convention": CONVENTION}
    r._bound = None
    r.witness.checked_until = 0.0
    tree = r.proof["tree"]
    tree["root"] = {"box": {"lo": [0.0], "hi": [1.0]}, "status": "split", "rule": "direct", "bound": NEGATIVE_MU,
                    "split": {"coordinate": 0, "at": 0.5},
                    "children": [_leaf("direct", NEGATIVE_MU, "open"), _leaf("direct", 0.01, "open")]}
    r.proof.update(status="unresolved", mu=NEGATIVE_MU, boxes_evaluated=3, rules_used={"direct": 3},
                   message="the budget of 3 boxes ended with 2 unresolved box(es); the weakest has a sound "
                           "bound -8.37e-19 < 0.384846 needed")
    r.failing_region = FailingRegion(
        kind="budget", message="sound mode: the budget of 3 boxes ended with 2 unresolved box(es)",
        suggestion="raise boxes=, shrink the region, or certify a floor", points=[],
        span={"line": 24, "column": 8, "end_line": 24, "end_column": 30},
        numbers={"boxes_evaluated": 3, "mu_lower": NEGATIVE_MU, "needed_mu": 0.38484573})
    return r


def interrupted_result(code: int) -> Result:
    """The partial result of a run stopped by Ctrl-C (130) or SIGTERM (143), as runs.partial_result
    builds it: no method, no loss, nothing claimed."""
    return Result(
        spec="specs/two_layer_tanh.rq", title="over-parameterized two-layer tanh network", verdict="inconclusive",
        sound=False, method={}, loss={}, desingularizer={}, mu=None, mu_source=None, mu_sources=[], region={},
        rate={}, witness=None,
        failing_region=FailingRegion(
            kind="interrupted", message="interrupted during 'witness descent' after 3.2 s",
            suggestion="run certify again and let it finish (or give it a --budget)", points=[],
            span={"line": 20, "column": 1, "end_line": 20, "end_column": 30},
            numbers={"seconds": 3.2, "exit_code": code}),
        diagnostics=[], problem={}, timing={"total": 3.2},
        notes=["partial result: the analysis stopped before any verdict; nothing is certified"])


SOUND_RESULTS = {"sound_certified": sound_certified_result, "sound_inconclusive": sound_inconclusive_result,
                 "interrupted": lambda: interrupted_result(143)}


# --- helpers -------------------------------------------------------------------------------------

def render(result: Result) -> str:
    console = Console(width=100, color_system=None, force_terminal=False, record=True, file=io.StringIO())
    render_text(result, console)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"


def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"snapshot {path} is missing; write it with CERTIFY_UPDATE_SNAPSHOTS=1 "
                    f"(and check it by eye)")
    expected = path.read_text(encoding="utf-8")
    assert text == expected, (f"{name} differs from its snapshot; if the change is intended, rerun with "
                              f"CERTIFY_UPDATE_SNAPSHOTS=1 and review the diff")


VERDICT_WORD = re.compile(r"\b(certified|refuted|inconclusive)\b")


# --- text ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(RESULTS))
def test_text_snapshot(name):
    check_snapshot(f"{name}.txt", render(RESULTS[name]()))


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_text_sampled_verdict_lines_say_estimate(name):
    text = render(RESULTS[name]())
    verdict_lines = [line for line in text.splitlines() if VERDICT_WORD.search(line)]
    assert verdict_lines, "no verdict line"
    for line in verdict_lines:
        assert ESTIMATE_LABEL in line, line
        assert "ESTIMATE" in line and "not a proof" in line
    assert any(line.startswith("Verdict") for line in verdict_lines)
    # "certified" is never printed alone for an estimate
    assert not re.search(r"certified(?! ·)", text)


def test_text_sound_result_has_no_estimate_label():
    text = render(sound_result())
    line = next(line for line in text.splitlines() if line.startswith("Verdict"))
    assert "certified · sound · exit 0" in line
    assert "ESTIMATE" not in text


def test_text_certified_facts():
    text = render(certified_result())
    assert "specs/two_layer_tanh.rq" in text
    assert "over-parameterized two-layer tanh network" in text
    assert "Verdict  certified · ESTIMATE (not a proof) · exit 0\n" in text
    assert "exit 0: the rate held at every sampled point and along the witness" in text
    assert "φ(s) = log(s)" in text
    assert "constant c = 4" in text
    assert "ρ = 1.234 ≤ r = 1.5 ✓" in text
    assert "radius r = 1.5" in text and "auto" in text
    assert "2 radii tried" in text
    assert "L(t) ≤ 2.5·exp(−4·0.125·t)" in text
    assert CONVENTION in text
    # the source that gave mu is marked; brackets in descriptions survive (no markup)
    marked = [line for line in text.splitlines() if re.match(r"\s*→\s+adversarial\b", line)]
    assert len(marked) == 1 and "[worst case]" in marked[0]
    # times to 1e-1 .. 1e-6 of L0
    for k in range(1, 7):
        assert f"1e-{k} · L0" in text
    assert num_in(text, math.log(10) / 0.5)
    # witness table: 6 rows, all below the bound
    assert text.count("✓") >= 6 + 1 + 2  # 6 rows, rho, distance, path length
    assert "✗" not in text
    assert "0.42 ≤ r = 1.5 ✓" in text and "0.61 ≤ ρ = 1.234 ✓" in text
    assert "violation" in text and "none" in text
    assert "timing:" in text and "search 3.46 s" in text
    assert "note: sampled estimate" in text


def num_in(text: str, value: float) -> bool:
    return f"{value:.4g}" in text


def test_text_refuted_facts():
    text = render(refuted_result())
    assert "Verdict  refuted · ESTIMATE (not a proof) · exit 1\n" in text
    assert "ρ = 1.8 ≤ r = 2 ✓" in text
    assert "Failure: witness" in text
    assert "above the bound 0.3012" in text
    assert "(line 17, column 1)" in text
    assert "1.9" in text and "1e-12" in text and "adversarial" in text
    assert re.search(r"radius\s+∞", text)
    assert "suggestion: raise samples=" in text
    assert "at t = 0.6: L = 0.37 > bound = 0.3012" in text
    # the violation is a row of the witness table, the rows before it hold
    witness = text.split("Witness")[1].split("Failure")[0]
    rows = [line.split() for line in witness.splitlines() if re.match(r"\s+0\.\d+\s+0\.\d+\s+0\.\d+\s", line)]
    assert rows[-1][:4] == ["0.6", "0.37", "0.3012", "✗"]
    assert all(r[3] == "✓" for r in rows[:-1])
    assert "left region" not in text
    # a warning diagnostic with brackets prints as is
    assert "warning[E109]: radius [2.0] is small" in text


def test_text_violation_missing_from_curve_is_added():
    r = refuted_result()
    r.witness.curve = r.witness.curve[:-2]
    r.witness.left_region_at = 0.55
    text = render(r)
    assert re.search(r"0\.6\s+0\.37\s+0\.3012\s+✗", text)
    assert "left region      at t = 0.55" in text


def test_text_critical_point_without_rate():
    r = refuted_result()
    r.mu, r.rate["formula"], r.rate["times_to_fraction"], r._bound = 1e-13, None, {}, None
    r.witness.violation = None
    r.failing_region.kind = "critical-point"
    text = render(r)
    assert "Verdict  refuted · ESTIMATE (not a proof) · exit 1" in text
    assert "Failure: critical-point" in text
    assert "none claimed" in text
    assert "1e-13" in text
    assert "✗" not in text.split("Witness")[1].split("Failure")[0]


def test_text_inconclusive_facts():
    text = render(inconclusive_result())
    assert "Verdict  inconclusive · ESTIMATE (not a proof) · exit 3" in text
    assert "Failure: no-radius" in text
    assert "ρ = 812.5 > r = 64 ✗" in text
    assert "nan" in text  # a nan minimum is shown, not hidden
    # no rate: the witness table shows the descent only, and says why nothing was compared (not
    # "checked until t = 0" and "violation none", which read as a check that passed)
    witness = text.split("Witness")[1].split("Failure")[0]
    assert "bound(t)" not in witness and "checked until" not in witness and "violation" not in witness
    assert "compared         no: no rate is claimed, so there is no bound to check the descent against" in witness
    assert "note: the loss seems to level off at 1.1" in text


def test_text_markup_in_fields_is_printed_verbatim():
    r = certified_result()
    r.title = "[bold]not markup[/bold]"
    r.notes = ["[red]x[/red]"]
    text = render(r)
    assert "[bold]not markup[/bold]" in text
    assert "[red]x[/red]" in text


def test_text_handles_missing_parts():
    r = inconclusive_result()
    r.witness = None
    r.failing_region = None
    r.mu_sources = []
    r.mu = None
    r.mu_source = None
    r.rate = {}
    r.region = {"kind": "ball", "center": "init", "radius": None, "radius_auto": True,
                "halfwidth": None, "path_length_bound": None, "dimension": 4}
    r.timing = {}
    r.notes = []
    text = render(r)
    assert "Verdict  inconclusive · ESTIMATE (not a proof) · exit 3" in text
    assert "ρ = —" in text


def test_text_box_region_uses_halfwidth():
    r = certified_result()
    r.region = {"kind": "box", "center": "init", "radius": 0.5, "radius_auto": False, "halfwidth": 0.5,
                "path_length_bound": 0.25, "dimension": 2048}
    text = render(r)
    assert "halfwidth h = 0.5" in text
    assert "ρ = 0.25 ≤ h = 0.5 ✓" in text


def test_text_desingularizer_reason_kl_constant_and_asymptotic():
    text = render(certified_result())
    assert re.search(r"chosen\s+auto: the natural desingularizer of least_squares", text)
    assert re.search(r"KL constant K\s+0\.5 = c·μ = 4 · 0\.125  estimate", text)
    assert re.search(r"asymptotic\s+L ~ exp\(-0\.5 t\) \(linear rate\)", text)
    assert "0.0123: along the descent from θ0, min R on loss bands falls like L^0.0123" in text
    assert re.search(r"\[0\.0316, 0\.1\)\s+85\s+0\.125", text)
    assert "steps" not in text.split("Rate")[1].split("Witness")[0]


def test_text_loss_without_a_constant_shows_its_sample_bound():
    r = certified_result()
    r.loss.update(name="cross_entropy", constant=None, sample_bound=17.16)
    r.desingularizer.update(name="lambert", phi="phi(u) = log(e^u - 1) - 1/(e^u - 1)",
                            reason="auto: the natural desingularizer of cross_entropy")
    r.rate["kl_constant"] = 0.0719
    text = render(r)
    assert "constant c" not in text
    assert re.search(r"largest per-sample loss M\s+\(largest\s+seen 17\.16\)", text)
    assert re.search(r"KL constant K\s+0\.0719  min of R·φ′\(L\)·G\(L, M\) over the points  estimate", text)


def test_text_power_desingularizer_predicts_the_asymptotic_rate():
    r = certified_result()
    r.desingularizer.update(name="power", params={"alpha": 2 / 3}, requested="auto",
                            phi="phi(u) = -u^(1-2a)/(2a-1), a = 0.6667",
                            reason="auto: min R on loss bands falls like L^0.331 (no constant mu): "
                                   "power with 2 alpha = 1 + 0.3333")
    r.loss["constant"] = None
    r.rate["profile"]["exponent"] = 0.331
    text = render(r)
    assert re.search(r"power\s+α = 0\.666667, φ′\(u\) = u\^-1\.33333: predicts L ~ t\^-3\b", text)
    assert "falls like L^0.331" in text
    assert "c·μ" not in text


def step_result(step: float = 0.25, beta: float = 2.0) -> Result:
    """The certified result as a gradient-descent claim: the bound takes steps k, the witness
    records flow time t = k eta."""
    r = certified_result()
    L0, K = 2.5, 0.5
    speed = step * (1 - beta * step / 2) * K
    r.rate.update(formula=f"L_k <= 2.5 * exp(-{speed:g} * k)", asymptotic=f"L ~ exp(-{speed:.3g} k) (linear rate)",
                  unit="steps k", step=step, smoothness=beta, horizon=200.0,
                  times_to_fraction={f"1e-{j}": float(math.ceil(math.log(10 ** j) / speed)) for j in range(1, 7)})
    r._bound = lambda k: L0 * math.exp(-speed * k)
    r.witness = Witness(method="gradient descent", step=step, steps=40, time=40 * step,
                        curve=[[k * step, L0 * math.exp(-1.5 * speed * k)] for k in range(41)],
                        max_distance=0.42, path_length=0.61, checked_until=40 * step)
    return r


def test_text_step_mode_counts_steps():
    r = step_result()
    text = render(r)
    rate = text.split("Rate")[1].split("Witness")[0]
    assert "gradient descent, steps k" in rate
    assert re.search(r"horizon\s+k ≤ 200 steps", rate)
    assert "η = 0.25, smoothness β = 2" in rate
    assert "η = 0.25 ≤ 1/β = 0.5 ✓" in rate
    assert re.search(r"φ-decrease\s+0\.09375 per step = η\(1 − βη/2\)·K", rate)
    assert "after k steps" in rate and "at time t" not in rate
    assert "L ~ exp(-0.09375 k)" in rate        # the speed eta (1 - beta eta / 2) K to 6 digits
    # the witness is compared at step k = t / eta, with the bound in steps
    witness = text.split("Witness")[1]
    assert "witness L_k" in witness and "bound_k" in witness
    rows = [line.split() for line in witness.splitlines() if re.match(r"\s+\d+\s+[\d.e-]+\s+[\d.e-]+\s+✓", line)]
    assert rows and rows[-1][0] == "40"
    for k, loss, b, _ in rows:
        assert float(b) == pytest.approx(2.5 * math.exp(-0.09375 * int(k)), rel=1e-3)
    assert "checked until    k = 40 (t = 10)" in witness


def test_text_step_above_one_over_beta_is_marked():
    r = step_result()
    r.rate.update(step=1.0, formula=None, asymptotic=None, times_to_fraction={})
    r._bound = None
    text = render(r)
    assert "η = 1 > 1/β = 0.5 ✗" in text
    assert "φ-decrease" not in text


# --- one style for both modes: the sound mode, negative bounds, stopped runs, θ0 -------------------

@pytest.mark.parametrize("name", sorted(SOUND_RESULTS))
def test_text_snapshot_sound_and_stopped(name):
    check_snapshot(f"{name}.txt", render(SOUND_RESULTS[name]()))


@pytest.mark.parametrize("name", sorted(set(RESULTS) | set(SOUND_RESULTS)))
def test_text_fits_100_columns(name):
    make = RESULTS.get(name) or SOUND_RESULTS[name]
    text = render(make())
    assert max(len(line) for line in text.splitlines()) <= 100


def _evaluate(formula: str, t: float) -> float:
    """A bound formula as the report prints it, evaluated on its own (Python's math and scipy's
    Lambert W), so that the printed text is checked, not the code that printed it."""
    from scipy.special import lambertw
    expr = formula.split("<=", 1)[1].replace("^", "**")
    return float(eval(expr, {"exp": math.exp, "log": math.log, "max": max,   # noqa: S307
                             "W0": lambda x: float(lambertw(x).real), "t": t, "k": t}))


def _digits(number: str) -> int:
    """Significant digits of a number as printed."""
    return len(number.split("e")[0].replace(".", "").strip("0"))


def _rate_rows(text: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^ (1e-\d) · L0\s+(\S+)$", text, re.M)}


def test_text_sound_numbers_have_6_digits_rounded_the_safe_way():
    text = render(sound_certified_result())
    # the formula with 6 significant digits, L0 and the floor rounded up, mu down (was 17 digits)
    shown = "L(t) <= max(2.40529 * exp(-4 * 0.477869 * t), 1e-12)"
    assert re.search(r"bound\s+" + re.escape(shown), text)
    for t in (0.0, 0.5, 1.0, 3.0, 7.0, 12.0, 20.0, 1000.0):      # still a bound, and a tight one
        exact, printed = _evaluate(SOUND_FORMULA, t), _evaluate(shown, t)
        assert exact <= printed <= exact * (1 + 1e-4), t
    assert re.search(r"L0 = L\(θ0\)\s+2\.40529\n", text)
    assert re.search(r"^μ\s+0\.477869  \(from spectrum\)$", text, re.M)          # 0.47786950... down
    assert re.search(r"KL constant K\s+1\.91147 = c·μ = 4 · 0\.477869$", text, re.M)  # 1.91147801... down
    assert "ρ = 2.24352 ≤ h = 2.5 ✓" in text                                         # 2.24351877... up
    assert "asymptotic    L ~ exp(-1.91147 t) (linear rate)" in text                  # K down, not 1.91
    # the times to 1e-k L0 are upper bounds of the exact times log(10^k)/K: rounded up
    rows = _rate_rows(text)
    assert len(rows) == 6
    for k in range(1, 7):
        exact = math.log(10 ** k) / SOUND_K
        assert exact <= rows[f"1e-{k}"] <= exact * (1 + 1e-5)
    # the witness's bound column: bound(t) rounded up; no number anywhere with more than 6 digits
    witness = text.split("Witness")[1]
    for t_text, b_text in re.findall(r"^\s+([\d.e-]+)\s+[\d.e-]+\s+([\d.e-]+)\s+✓$", witness, re.M):
        exact = max(SOUND_L0 * math.exp(-SOUND_K * float(t_text)), SOUND_FLOOR)
        assert float(b_text) >= exact * (1 - 1e-5)        # t itself is shown rounded
    assert max(_digits(n) for n in re.findall(r"\d[\d.]*(?:e-?\d+)?", text)) <= 6
    assert "ESTIMATE" not in text and "estimate" not in text.split("Rate")[0]


@pytest.mark.parametrize("formula", [
    "L(t) <= max((1.000000000000911^(-1) + 1 * 0.5089005822708109 * t)^(-1), 0.05)",
    "L(t) <= max(log(1 + 1/W0(exp(0.8223223507029116 * 0.3528730473172138 * t + 0.9999999999956546))), 0.515)",
    "L(t) <= max(log(1 + 1/W0(exp(0.6556136549145231 * 0.1403758853538939 * t - 0.19314718056356317))), 0.1)",
    "L(t) <= 0.00034086596947874873 * exp(-4 * 0.0115841194075053 * t)",
])
def test_text_sound_formulas_of_every_loss_stay_bounds(formula):
    """The formulas the sound mode writes for exponential (power, alpha = 1), logistic and
    cross-entropy (Lambert) and least squares, shortened: every printed bound is >= the exact one."""
    from certifier.report.text import bound_formula
    shown = bound_formula(formula)
    assert shown != formula and max(_digits(n) for n in re.findall(r"\d[\d.]*(?:e-?\d+)?", shown)) <= 6
    for t in (0.0, 0.1, 1.0, 5.0, 30.0, 200.0):
        exact, printed = _evaluate(formula, t), _evaluate(shown, t)
        assert exact <= printed <= exact * (1 + 1e-4), (t, shown)


def test_text_formula_of_an_unknown_shape_is_printed_exactly():
    from certifier.report.text import bound_formula
    odd = "L(t) <= 2.4052846015264793 * cosh(0.4778695035699382 * t)"
    assert bound_formula(odd) == odd


def test_text_sound_spectrum_source_shows_its_minimum_and_the_proof():
    text = render(sound_certified_result())
    # the source that gave mu shows it (rounded down), the other its own smallest leaf bound
    assert re.search(r"→\s+spectrum\s+lambda_min of the tangent kernel by Weyl on an interval Jacobian\s+"
                     r"0\.477869\s+2$", text, re.M)
    assert re.search(r"^\s+direct\s+min .*\s0\.62\s+3$", text, re.M)
    assert "minimum   boxes" in text                       # the sound mode counts boxes, not points
    # the method in words, on one line, not a dict dump
    assert "\nmethod     interval (boxes=200, functions=margin, rules: direct on 3 boxes, spectrum on 2 " \
           "boxes)\n" in text
    assert "elementary_functions=" not in text and "status=" not in text and "message=" not in text
    proof = text.split("Proof (interval arithmetic, branch and bound over boxes)")[1].split("Rate")[0]
    # the engine's "R >= 0.47787" (mu to nearest, above mu = 0.47786950...) is written with mu rounded down
    assert "status        proven: every box is proven: R >= 0.477869 on the region above the floor" in proof
    assert "boxes         5 of at most 200 evaluated, 313 per second" in proof
    assert "needed        μ ≥ 0.384846 for the path length bound ρ ≤ h = 2.5" in proof
    assert "tree          3 leaf boxes, depth 2" in proof
    assert re.search(r"^ proven\s+direct\s+1\s+0\.62$", proof, re.M)
    assert re.search(r"^ proven\s+spectrum\s+2\s+0\.477869$", proof, re.M)


def test_text_sound_inconclusive_is_never_an_estimate_and_mu_never_negative():
    text = render(sound_inconclusive_result())
    assert "Verdict  inconclusive · sound mode: nothing proved · exit 3\n" in text
    assert "exit 3: the rate was neither proved nor contradicted" in text
    assert "ESTIMATE" not in text and "estimate" not in text
    assert "status     sound mode: nothing proved: the interval proof did not close" in text
    # mu = -8.37e-19 (a rounding error below 0 of a lower bound of R >= 0): 0, no positive bound
    assert "-8.37" not in text and "−8.37" not in text
    assert "the weakest has a\n              sound bound 0 (no positive lower bound) < 0.384846 needed" in text
    assert re.search(r"^μ\s+0 \(no positive lower bound\)$", text, re.M)
    assert re.search(r"^mu_lower\s+0 \(no positive lower bound\)$", text, re.M)
    assert re.search(r"^\s+direct\s+min .*\s0\s+3$", text, re.M)
    assert "0: no positive lower bound" in text
    assert re.search(r"^ open\s+direct\s+2\s+0$", text, re.M)
    assert "ρ = —  (no positive μ)" in text
    # no rate: nothing was compared, and the report says so
    witness = text.split("Witness")[1].split("Failure")[0]
    assert "checked until" not in witness and "violation" not in witness and "bound(t)" not in witness
    assert "compared         no: no rate is claimed" in witness


def test_text_sound_refuted_is_labelled_sound():
    r = sound_inconclusive_result()
    r.verdict, r.sound = "refuted", True
    r.failing_region.kind = "critical-point"
    text = render(r)
    assert "Verdict  refuted · sound · exit 1\n" in text
    assert "exit 1: a counterexample violates the claimed rate" in text
    # no "μ is a proved lower bound" on a result that has no μ
    assert "status     sound: the counterexample is verified by interval arithmetic\n" in text
    assert "ESTIMATE" not in text


@pytest.mark.parametrize("code, why", [(143, "the run was stopped by SIGTERM before a verdict; no rate is claimed"),
                                       (130, "the run was interrupted (Ctrl-C) before a verdict; no rate is "
                                             "claimed")])
def test_text_interrupted_run_says_so(code, why):
    text = render(interrupted_result(code))
    assert f"Verdict  inconclusive · ESTIMATE (not a proof) · exit {code}\n" in text
    assert f"         exit {code}: {why}\n" in text
    assert "neither confirmed nor contradicted" not in text
    assert "Composition" not in text and "constant c = —" not in text and "method" not in text.split("Verdict")[0]
    assert "Failure: interrupted" in text and "exit_code" not in text


def test_text_partial_result_of_the_sound_mode_is_not_an_estimate():
    r = interrupted_result(130)
    r.method = {"name": "interval"}
    text = render(r)
    assert "Verdict  inconclusive · sound mode: nothing proved · exit 130\n" in text
    assert "exit 130: the run was interrupted (Ctrl-C) before a verdict; no rate is claimed" in text
    assert re.search(r"^method\s+interval$", text, re.M) and "ESTIMATE" not in text


def test_text_budget_partial_result_says_the_budget_ran_out():
    r = interrupted_result(3)
    r.failing_region.kind = "budget"
    r.failing_region.numbers = {"seconds": 1.0}
    text = render(r)
    assert "exit 3: the --budget ran out before a verdict; no rate is claimed" in text


def test_text_names_theta0_one_way():
    r = refuted_result()
    r.failing_region.message = "R = 1.1e-29 at a point 1.61 from theta0 that the descent from theta0 reached"
    r.failing_region.points[0].source = "descent from theta0"
    r.mu_sources[0].description = "R along gradient descent from theta0 and from random points of U"
    r.notes = ["the descent from theta0 stalls"]
    r.method["smoothness_at_theta0"] = 2.769
    text = render(r)
    assert "theta0" not in text
    assert "1.61 from θ0 that the descent from θ0 reached" in text and "descent from θ0" in text
    assert "smoothness at θ0 2.769" in text
    assert "θ0" in to_json(r) or "theta0" in to_json(r)     # JSON keys and values stay as they are
    assert '"smoothness_at_theta0"' in to_json(r)


def test_text_band_by_band_column_is_explained():
    r = certified_result()
    r.rate["profile"]["times_to_fraction"] = {"1e-1": 2.1, "1e-2": 4.5, "1e-3": None}
    text = render(r)
    assert re.search(r"L\(t\) ≤\s+at time t\s+band by band", text)
    assert re.search(r"1e-1 · L0\s+4\.60517\s+2\.1$", text, re.M)
    assert "  band by band: the times with each loss band's own K in place of one K (rate.profile; an " \
           "estimate)\n" in text
    assert "band by band" not in render(certified_result())       # no column, no explanation


def test_text_sampled_numbers_have_6_digits():
    text = render(certified_result())
    assert re.search(r"1e-1 · L0\s+4\.60517$", text, re.M)      # log(10)/0.5, to nearest
    assert re.search(r"^\s+4\s+0\.101906\s+0\.338338\s+✓$", text, re.M)


def test_summary_line_of_the_sound_mode():
    from certifier.report.outcome import Outcome
    from certifier.report.summary import row
    cells = row(Outcome("s.rq", sound_certified_result(), seconds=1.0))
    assert cells[1:4] == ["certified", "sound", "μ 0.477869 · L ~ exp(-1.91147 t) to floor 1e-12"]
    cells = row(Outcome("s.rq", sound_inconclusive_result(), seconds=1.0))
    assert cells[1:4] == ["inconclusive", "sound mode", "budget"]
    assert row(Outcome("s.rq", inconclusive_result(), seconds=1.0))[2] == "estimate"


def test_sound_run_reports_each_rule_minimum():
    """A real sound run (specs/one_neuron_sound.rq: two rules, spectrum and direct): each rule's row
    shows its smallest leaf bound, the one that gave mu shows mu, and mu is below R at random points
    of the box, computed here in closed form (f = a tanh(w x), R = ||grad L||^2 / (4 L))."""
    import numpy as np

    from certifier.pipeline import run_file
    from certifier.report.text import render_plain
    result = run_file(str(Path(__file__).resolve().parent.parent / "specs" / "one_neuron_sound.rq"))
    assert result.verdict == "certified" and result.sound
    minima = {s.source: s.minimum for s in result.mu_sources}
    assert set(minima) == {"direct", "spectrum"} and all(v is not None for v in minima.values())
    assert minima[result.mu_source] == result.mu == min(minima.values())
    x, y = np.array([-1.0, 2.0]), 1.03 * np.tanh(0.97 * np.array([-1.0, 2.0]))
    rng = np.random.default_rng(0)
    for a, w in 1.0 + rng.uniform(-0.3, 0.3, size=(500, 2)):
        r = a * np.tanh(w * x) - y
        grad = np.array([np.mean(2 * r * np.tanh(w * x)), np.mean(2 * r * a * x * (1 - np.tanh(w * x) ** 2))])
        assert result.mu <= grad @ grad / (4 * np.mean(r ** 2))
    text = render_plain(result)
    shown = re.search(rf"→\s+{result.mu_source}\s.*\s(\S+)\s+\d+$", text, re.M).group(1)
    assert float(shown) <= result.mu and _digits(shown) <= 6 and float(shown) >= result.mu * (1 - 1e-5)
    assert "rules: direct on" in text and "theta0" not in text and "ESTIMATE" not in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_readme_shows_the_report_certify_prints():
    """README.md's "What a report looks like" is a real capture: the sound spec's report as the
    renderer prints it now (the timing and the closing summary line, which vary, left out)."""
    from certifier.pipeline import run_file
    from certifier.report.text import render_plain
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    block = readme.split("## What a report looks like")[1].split("```\n")[1]
    result = run_file(str(root / "specs" / "linear_underparameterized_sound.rq"))
    result.spec = "specs/linear_underparameterized_sound.rq"

    def lines(text: str) -> list[str]:
        kept = [line for line in text.splitlines() if not line.startswith(("timing:", "specs/"))]
        while kept and not kept[-1]:
            kept.pop()
        return kept
    assert lines(block) == lines(render_plain(result))


# --- locating statements: one line rule with lark ------------------------------------------------

LINE_BREAKS = 'spec "x"\n# a\x0c form feed\u2028 and a line separator\u0085 in a comment\n' + """data {
  x = normal(shape=[4, 2], seed=0)
  y = x[:, 0]
}
params {
  w : [2] = zeros()
}
model f(x) = w @ x
loss least_squares
region ball(center=init, radius=1)
method sampled(samples=64, seed=0)
certify rate(floor=0.1, horizon=10)
"""


def test_statement_span_counts_lines_as_lark_does():
    from certifier.parse import parse
    from certifier.report.outcome import span_text, statement_span
    spec = parse(LINE_BREAKS, "t.rq")
    span = statement_span(LINE_BREAKS, "method")
    assert span.line == spec.method.span.line == 13          # str.splitlines would say 16
    assert span_text(LINE_BREAKS, span) == "method sampled(samples=64, seed=0)"
    assert statement_span(LINE_BREAKS, "region").line == 12
    assert span_text(LINE_BREAKS, statement_span(LINE_BREAKS, "certify")) == "certify rate(floor=0.1, horizon=10)"


# --- json ----------------------------------------------------------------------------------------

REQUIRED = ["verdict", "sound", "method", "loss.name", "loss.initial", "desingularizer", "mu", "mu_source",
            "region.kind", "region.radius", "region.path_length_bound", "rate.formula", "rate.curve",
            "witness.curve", "failing_region", "diagnostics"]


def _has(obj: dict, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return False
        obj = obj[part]
    return True


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_json_snapshot(name):
    check_snapshot(f"{name}.json", to_json(RESULTS[name]()) + "\n")


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_json_fields_and_finite_numbers(name):
    text = to_json(RESULTS[name]())
    assert not re.search(r"\b(NaN|Infinity)\b", text)
    data = json.loads(text)
    for key in REQUIRED:
        assert _has(data, key), key
    assert data["sound"] is False and data["estimate"] is True
    assert data["verdict"] == name
    assert list(data) == field_order()


def test_json_non_finite_become_null():
    data = json.loads(to_json(refuted_result()))
    assert data["failing_region"]["numbers"]["radius"] is None
    assert data["failing_region"]["span"] == {"line": 17, "column": 1, "end_line": 17, "end_column": 30}
    assert data["diagnostics"][0]["severity"] == "warning"
    data = json.loads(to_json(certified_result()))
    assert data["rate"]["curve"][-1] == [None, 0.0]
    assert data["mu_sources"][3]["minimum"] is None
    assert data["rate"]["times_to_fraction"]["1e-1"] == pytest.approx(math.log(10) / 0.5)
    data = json.loads(to_json(inconclusive_result()))
    assert data["mu_sources"][1]["minimum"] is None


def test_json_key_order_follows_the_dataclass():
    order = field_order()
    assert order[:6] == ["schema_version", "spec", "title", "verdict", "sound", "estimate"]
    assert order.index("diagnostics") > order.index("failing_region")
    assert "_bound" not in order


def test_json_numpy_values():
    np = pytest.importorskip("numpy")
    r = certified_result()
    r.mu = np.float32(0.125)
    r.problem = {"parameters": np.int64(2048), "shape": np.array([1.0, np.nan])}
    data = json.loads(to_json(r))
    assert data["mu"] == pytest.approx(0.125)
    assert data["problem"] == {"parameters": 2048, "shape": [1.0, None]}


def test_error_json():
    diag = Diagnostic("E001", "unexpected '}'", Span(2, 17, 2, 18), None, "bad.rq")
    text = error_json("bad.rq", [diag])
    data = json.loads(text)
    assert list(data) == field_order()
    assert data["verdict"] == "error" and data["sound"] is False and data["estimate"] is True
    assert data["spec"] == "bad.rq" and data["schema_version"] == SCHEMA_VERSION
    assert data["diagnostics"] == [diag.to_dict()]
    for key in field_order():
        if key not in ("schema_version", "spec", "verdict", "sound", "estimate", "diagnostics"):
            assert data[key] is None, key
    check_snapshot("error.json", text + "\n")


# --- docs/output.md stays in sync with the model ---------------------------------------------------

def test_output_doc_names_every_field():
    import dataclasses

    from certifier.result import EXIT_CODES

    doc = (Path(__file__).resolve().parent.parent / "docs" / "output.md").read_text(encoding="utf-8")
    names = set(field_order())
    for cls in (MuSource, FailingPoint, FailingRegion, Witness):
        names |= {f.name for f in dataclasses.fields(cls)}
    names |= set(Diagnostic("E001", "x").to_dict())
    missing = sorted(n for n in names if f"`{n}`" not in doc and f"{{{n}," not in doc
                     and f", {n}," not in doc and f", {n}}}" not in doc)
    assert not missing, f"docs/output.md does not describe: {missing}"
    for verdict, code in EXIT_CODES.items():
        assert f"| {code} |" in doc
