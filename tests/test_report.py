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
    # no rate: the witness table shows no bound
    assert "bound(t)" in text
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
    assert re.search(r"power\s+α = 0\.6667, φ′\(u\) = u\^-1\.333: predicts L ~ t\^-3\b", text)
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
    assert "L ~ exp(-0.0938 k)" in rate
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
